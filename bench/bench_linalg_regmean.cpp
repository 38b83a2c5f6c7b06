// RegMean over K = 4 Linear weights of 4096 x 4096 with their Gram
// matrices, next to the BLAS/LAPACK calls it is made of, each timed alone on
// the same matrices: K products W_i G_i^T (sgemm), one Cholesky
// factorization of the Gram sum (spotrf) and one solve for 4096 right-hand
// sides (spotrs). Also the Gram accumulator (one ssyrk per batch).
//
// These run for seconds: one iteration per repetition.
#include <cstring>

#include <xmerge/linalg.hpp>

#include "bench_common.hpp"
#include "bench_matrices.hpp"

namespace
{
    constexpr std::size_t linalg_size = 4096;

    // K weights and K Gram matrices of activations [2 n, n], built once per process.
    struct regmean_inputs
    {
        std::size_t n;
        std::vector<std::vector<float>> weights, grams;

        regmean_inputs(std::size_t k, std::size_t size) : n(size)
        {
            for (std::size_t i = 0; i < k; ++i)
            {
                weights.push_back(xmerge_bench::normal_matrix(n, n, static_cast<std::uint32_t>(10 + i), 0.02f));
                const auto x = xmerge_bench::normal_matrix(2 * n, n, static_cast<std::uint32_t>(20 + i), 1.0f);
                xmerge::gram_accumulator acc(n);
                acc.add(x.data(), 2 * n);
                const auto g = acc.gram();
                grams.emplace_back(g.begin(), g.end());
            }
        }

        static const regmean_inputs& get()
        {
            static const regmean_inputs in(4, linalg_size);
            return in;
        }

        std::vector<float> gram_sum() const
        {
            std::vector<float> s(n * n, 0.0f);
            for (const auto& g : grams)
            {
                for (std::size_t e = 0; e < s.size(); ++e)
                {
                    s[e] += g[e];
                }
            }
            return s;
        }
    };

    void BM_regmean(benchmark::State& state)
    {
        const auto& in = regmean_inputs::get();
        const std::size_t n = in.n;
        xmerge::expression_list<xmerge::input_node> models, grams;
        for (std::size_t i = 0; i < in.weights.size(); ++i)
        {
            models.push_back(xmerge::input(xmerge::as_tensor(in.weights[i], xmerge::shape_type{n, n}, "weight")));
            grams.push_back(xmerge::input(xmerge::as_tensor(in.grams[i], xmerge::shape_type{n, n}, "gram")));
        }
        const auto merged = xmerge::regmean(models, grams, {0.9});
        std::vector<float> out(n * n);
        for (auto _ : state)
        {
            xmerge::evaluate(merged, xmerge::as_tensor(out, xmerge::shape_type{n, n}));
            benchmark::ClobberMemory();
        }
    }

    void BM_lapack_spotrf(benchmark::State& state)
    {
        const auto& in = regmean_inputs::get();
        const std::vector<float> sum = in.gram_sum();
        std::vector<float> work(sum.size());
        for (auto _ : state)
        {
            state.PauseTiming();
            std::memcpy(work.data(), sum.data(), sum.size() * sizeof(float));
            state.ResumeTiming();
            benchmark::DoNotOptimize(xmerge::detail::cholesky<float>(in.n, work.data()));
            benchmark::ClobberMemory();
        }
    }

    void BM_lapack_spotrs(benchmark::State& state)
    {
        const auto& in = regmean_inputs::get();
        std::vector<float> factor = in.gram_sum();
        xmerge::detail::cholesky<float>(in.n, factor.data());
        std::vector<float> rhs(in.n * in.n);
        for (auto _ : state)
        {
            state.PauseTiming();
            std::memcpy(rhs.data(), in.weights[0].data(), rhs.size() * sizeof(float));
            state.ResumeTiming();
            xmerge::detail::cholesky_solve<float>(in.n, in.n, factor.data(), rhs.data(), "bench");
            benchmark::ClobberMemory();
        }
    }

    void BM_blas_sgemm(benchmark::State& state)
    {
        const auto& in = regmean_inputs::get();
        const std::size_t n = in.n;
        std::vector<float> c(n * n);
        for (auto _ : state)
        {
            xmerge::detail::gemm<float>(false, true, n, n, n, 1.0f, in.weights[0].data(), n, in.grams[0].data(), n, 0.0f, c.data(), n);
            benchmark::ClobberMemory();
        }
    }

    void BM_gram_accumulator(benchmark::State& state, xmerge::dtype type)
    {
        const std::size_t n = linalg_size, rows = linalg_size;
        xmerge_bench::tensor x(type, rows * n, 7);
        const auto activations = x.cref().reshaped({rows, n});
        xmerge::gram_accumulator acc(n);
        for (auto _ : state)
        {
            acc.add(activations);
            benchmark::ClobberMemory();
        }
    }

    void BM_blas_ssyrk(benchmark::State& state)
    {
        const std::size_t n = linalg_size, rows = linalg_size;
        const auto x = xmerge_bench::normal_matrix(rows, n, 7, 1.0f);
        std::vector<float> c(n * n, 0.0f);
        for (auto _ : state)
        {
            xmerge::detail::syrk_upper<float>(n, rows, 1.0f, x.data(), n, 1.0f, c.data());
            benchmark::ClobberMemory();
        }
    }
}

BENCHMARK(BM_regmean)->Name("BM_regmean/K:4/N:4096")->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_lapack_spotrf)->Name("BM_lapack_spotrf/N:4096")->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_lapack_spotrs)->Name("BM_lapack_spotrs/N:4096/rhs:4096")->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_blas_sgemm)->Name("BM_blas_sgemm/N:4096")->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_gram_accumulator, f32, xmerge::dtype::float32)->Name("BM_gram_accumulator/f32/rows:4096/N:4096")->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_gram_accumulator, bf16, xmerge::dtype::bfloat16)->Name("BM_gram_accumulator/bf16/rows:4096/N:4096")->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_blas_ssyrk)->Name("BM_blas_ssyrk/rows:4096/N:4096")->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
