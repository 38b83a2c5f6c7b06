// Low-rank adapters on a 4096 x 4096 weight.
//
// Fold-in W + s B A at rank 16 is one pass over W (read it, write the
// result) plus 16 fused multiply-adds per element from cache-resident
// factors: its bytes/s (W read + result written) is read against
// BM_triad_baseline. DoRA adds a statistics pass (the row norms of W + s B A);
// task arithmetic over three adapters still makes one pass over W.
//
// Extraction of a rank-16 LoRA from a 4096 x 4096 task vector by the full
// SVD sits next to BM_lapack_sgesdd/N:4096 (the SVD alone) and the
// randomized range finder at rank 16 and 64 (q = 2 power iterations,
// p = 10). These run for seconds: one iteration per repetition.
#include <vector>

#include <xmerge/linalg/low_rank.hpp>
#include <xmerge/lora/extract.hpp>
#include <xmerge/lora/fold.hpp>
#include <xmerge/lora/merge.hpp>
#include <xmerge/methods/task_arithmetic.hpp>

#include "bench_common.hpp"

namespace
{
    constexpr std::size_t side = 4096;
    constexpr std::size_t rank = 16;

    struct lora_inputs
    {
        xmerge::dtype type;
        xmerge_bench::tensor weight, out;
        std::vector<std::vector<float>> a, b;
        std::vector<float> magnitude;

        explicit lora_inputs(xmerge::dtype t) : type(t), weight(t, side * side, 1), out(t, side * side, 2), magnitude(side, 1.0f)
        {
            std::mt19937 gen(3);
            std::normal_distribution<float> d(0.0f, 0.02f);
            for (int k = 0; k < 3; ++k)
            {
                a.emplace_back(rank * side);
                b.emplace_back(side * rank);
                for (auto& x : a.back())
                {
                    x = d(gen);
                }
                for (auto& x : b.back())
                {
                    x = d(gen);
                }
            }
        }

        xmerge::const_tensor_ref w() const { return weight.cref().reshaped({side, side}); }
        xmerge::tensor_ref result() { return out.ref().reshaped({side, side}); }

        xmerge::lora::layer layer(int k, bool dora = false) const
        {
            xmerge::lora::layer l;
            l.target = "w";
            l.a = xmerge::as_tensor(a[k].data(), {rank, side}, "a");
            l.b = xmerge::as_tensor(b[k].data(), {side, rank}, "b");
            l.scale = 2.0;
            if (dora)
            {
                l.magnitude = xmerge::as_tensor(magnitude.data(), {side}, "m");
            }
            return l;
        }

        // W read and the result written.
        std::size_t bytes() const { return 2 * side * side * xmerge::size_of(type); }
    };

    lora_inputs& inputs(xmerge::dtype t)
    {
        static lora_inputs f32(xmerge::dtype::float32);
        static lora_inputs bf16(xmerge::dtype::bfloat16);
        return t == xmerge::dtype::float32 ? f32 : bf16;
    }

    template <class Make>
    void run_fold(benchmark::State& state, xmerge::dtype type, Make&& make)
    {
        auto& in = inputs(type);
        const auto expr = make(in);
        const auto options = xmerge_bench::all_cores();
        for (auto _ : state)
        {
            xmerge::evaluate(expr, in.result(), options);
            benchmark::ClobberMemory();
        }
        xmerge_bench::set_bytes(state, in.bytes());
    }

    void BM_lora_fold(benchmark::State& state, xmerge::dtype type)
    {
        run_fold(state, type, [](const lora_inputs& in) { return xmerge::lora::fold(in.w(), in.layer(0)); });
    }

    void BM_lora_fold_dora(benchmark::State& state, xmerge::dtype type)
    {
        run_fold(state, type, [](const lora_inputs& in) { return xmerge::lora::fold(in.w(), in.layer(0, true)); });
    }

    void BM_lora_task_arithmetic_3(benchmark::State& state, xmerge::dtype type)
    {
        run_fold(state, type,
                 [](const lora_inputs& in)
                 {
                     return xmerge::task_arithmetic(xmerge::lora::folds(in.w(), {in.layer(0), in.layer(1), in.layer(2)}), xmerge::input(in.w()),
                                                    {0.5, 0.3, 0.2});
                 });
    }

    // A task vector of rank 16 plus small full-rank noise, as a fine-tune gives.
    struct extraction_inputs
    {
        std::vector<float> base, finetuned;

        extraction_inputs() : base(side * side), finetuned(side * side)
        {
            std::mt19937 gen(5);
            std::normal_distribution<float> d(0.0f, 1.0f);
            for (auto& x : base)
            {
                x = 0.02f * d(gen);
            }
            std::vector<float> left(side * rank), right(rank * side);
            for (auto& x : left)
            {
                x = 0.01f * d(gen);
            }
            for (auto& x : right)
            {
                x = 0.01f * d(gen);
            }
            std::vector<float> delta(side * side, 0.0f);
            xmerge::detail::gemm<float>(false, false, side, side, rank, 1.0f, left.data(), rank, right.data(), side, 0.0f, delta.data(), side);
            for (std::size_t i = 0; i < delta.size(); ++i)
            {
                finetuned[i] = base[i] + delta[i] + 1e-5f * d(gen);
            }
        }

        static const extraction_inputs& get()
        {
            static const extraction_inputs in;
            return in;
        }
    };

    void BM_lora_extract(benchmark::State& state, xmerge::lora::svd_method method, std::size_t r)
    {
        const auto& in = extraction_inputs::get();
        xmerge::lora::factor_options o;
        o.rule = xmerge::truncation::rank(r);
        o.method = method;
        double kept = 0.0;
        for (auto _ : state)
        {
            const auto f = xmerge::lora::extract_factors(xmerge::as_tensor(in.finetuned.data(), {side, side}, "w"),
                                                         xmerge::as_tensor(in.base.data(), {side, side}, "w"), o);
            kept = f.kept_fraction();
            benchmark::DoNotOptimize(f.right.data());
        }
        state.counters["kept_energy"] = kept;
    }

    // A linear soup of three rank-16 adapters as one adapter: the exact factorization of the stacked factors.
    void BM_lora_refactorize_sum_3(benchmark::State& state)
    {
        const auto& in = inputs(xmerge::dtype::float32);
        const std::vector<xmerge::lora::layer> layers{in.layer(0), in.layer(1), in.layer(2)};
        for (auto _ : state)
        {
            const auto f = xmerge::lora::refactorize_sum(layers, {0.5, 0.3, 0.2}, xmerge::truncation::rank(16));
            benchmark::DoNotOptimize(f.right.data());
        }
    }
}

BENCHMARK_CAPTURE(BM_lora_fold, f32, xmerge::dtype::float32)->Name("BM_lora_fold/f32/rank:16/N:4096")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_lora_fold, bf16, xmerge::dtype::bfloat16)->Name("BM_lora_fold/bf16/rank:16/N:4096")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_lora_fold_dora, f32, xmerge::dtype::float32)->Name("BM_lora_fold_dora/f32/rank:16/N:4096")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_lora_task_arithmetic_3, f32, xmerge::dtype::float32)
    ->Name("BM_lora_task_arithmetic/f32/K:3/rank:16/N:4096")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_lora_refactorize_sum_3)->Name("BM_lora_refactorize_sum/K:3/rank:16/N:4096")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_lora_extract, full, xmerge::lora::svd_method::full, 16)
    ->Name("BM_lora_extract/full/rank:16/N:4096")
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_lora_extract, randomized16, xmerge::lora::svd_method::randomized, 16)
    ->Name("BM_lora_extract/randomized/rank:16/N:4096")
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_lora_extract, randomized64, xmerge::lora::svd_method::randomized, 64)
    ->Name("BM_lora_extract/randomized/rank:64/N:4096")
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
