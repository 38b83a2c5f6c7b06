// The SVD merges on K = 4 task vectors of 4096 x 4096, next to one LAPACK
// thin SVD (sgesdd) of a 4096 x 4096 matrix: Iso-C makes one such SVD,
// TSV-M six (the four task vectors, then the two concatenated 4096-wide
// factors), Iso-CTS seven, one OPCM step one. The ratio to the SVD floor is
// what each method adds to the decompositions it cannot avoid.
//
// These run for seconds to a minute: one iteration per repetition.
#include <cstring>

#include <xmerge/linalg.hpp>

#include "bench_common.hpp"

namespace
{
    constexpr std::size_t linalg_size = 4096;

    // A base and K fine-tuned models whose task vectors are small and dense.
    struct svd_inputs
    {
        std::size_t n;
        std::vector<float> base;
        std::vector<std::vector<float>> models;

        svd_inputs(std::size_t k, std::size_t size) : n(size)
        {
            std::mt19937 gen(1);
            std::normal_distribution<float> dist(0.0f, 1.0f);
            base.resize(n * n);
            for (auto& x : base)
            {
                x = 0.02f * dist(gen);
            }
            for (std::size_t i = 0; i < k; ++i)
            {
                std::vector<float> m(base);
                for (auto& x : m)
                {
                    x += 1e-3f * dist(gen);
                }
                models.push_back(std::move(m));
            }
        }

        static const svd_inputs& get()
        {
            static const svd_inputs in(4, linalg_size);
            return in;
        }

        xmerge::input_node base_leaf() const { return xmerge::input(xmerge::as_tensor(base, xmerge::shape_type{n, n}, "base")); }
        xmerge::expression_list<xmerge::input_node> model_leaves(std::size_t k) const
        {
            xmerge::expression_list<xmerge::input_node> l;
            for (std::size_t i = 0; i < k; ++i)
            {
                l.push_back(xmerge::input(xmerge::as_tensor(models[i], xmerge::shape_type{n, n}, "model")));
            }
            return l;
        }
    };

    template <class Merge>
    void run_merge(benchmark::State& state, Merge&& merge)
    {
        const auto& in = svd_inputs::get();
        const auto merged = merge(in);
        std::vector<float> out(in.n * in.n);
        for (auto _ : state)
        {
            xmerge::evaluate(merged, xmerge::as_tensor(out, xmerge::shape_type{in.n, in.n}));
            benchmark::ClobberMemory();
        }
    }

    void BM_iso_c(benchmark::State& state)
    {
        run_merge(state, [](const svd_inputs& in) { return xmerge::iso_c(in.model_leaves(4), in.base_leaf()); });
    }

    void BM_tsv_m(benchmark::State& state)
    {
        run_merge(state, [](const svd_inputs& in) { return xmerge::tsv_m(in.model_leaves(4), in.base_leaf()); });
    }

    void BM_iso_cts(benchmark::State& state)
    {
        run_merge(state, [](const svd_inputs& in) { return xmerge::iso_cts(in.model_leaves(4), in.base_leaf()); });
    }

    // One continual step: the second model projected against the first.
    void BM_opcm_step(benchmark::State& state)
    {
        run_merge(state, [](const svd_inputs& in) { return xmerge::opcm(in.model_leaves(2), in.base_leaf()); });
    }

    void BM_lapack_sgesdd(benchmark::State& state)
    {
        const auto& in = svd_inputs::get();
        const std::size_t n = in.n;
        std::vector<float> a(n * n), s(n), u(n * n), vt(n * n);
        for (auto _ : state)
        {
            state.PauseTiming();
            for (std::size_t e = 0; e < a.size(); ++e)
            {
                a[e] = in.models[0][e] - in.base[e];
            }
            state.ResumeTiming();
            xmerge::detail::thin_svd<float>(n, n, a.data(), s.data(), u.data(), vt.data(), "bench");
            benchmark::ClobberMemory();
        }
    }
}

BENCHMARK(BM_lapack_sgesdd)->Name("BM_lapack_sgesdd/N:4096")->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_iso_c)->Name("BM_iso_c/K:4/N:4096")->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_tsv_m)->Name("BM_tsv_m/K:4/N:4096")->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_iso_cts)->Name("BM_iso_cts/K:4/N:4096")->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_opcm_step)->Name("BM_opcm_step/K:2/N:4096")->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
