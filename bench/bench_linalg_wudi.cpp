// WUDI's closed form over K = 4 task vectors of N x N, next to its LAPACK
// floor timed alone on matrices of the same size: per task one Gram product
// (ssyrk, n^2 m) and one product for R (sgemm, m n^2), then one Cholesky
// factorization of G (spotrf) and one solve for m right-hand sides (spotrs).
// Floor = K (ssyrk + sgemm) + spotrf + spotrs. Also one step of the
// reference's Adam loop (one sgemm and an element-wise update).
//
// These run for seconds: one iteration per repetition.
#include <cstring>

#include <xmerge/linalg.hpp>

#include "bench_common.hpp"
#include "bench_matrices.hpp"

namespace
{
    constexpr std::size_t wudi_size = 2048;
    constexpr std::size_t wudi_tasks = 4;

    struct wudi_inputs
    {
        std::size_t n = wudi_size;
        std::vector<float> base;
        std::vector<std::vector<float>> models;

        wudi_inputs() : base(xmerge_bench::normal_matrix(wudi_size, wudi_size, 1, 0.02f))
        {
            for (std::size_t i = 0; i < wudi_tasks; ++i)
            {
                auto x = xmerge_bench::normal_matrix(n, n, static_cast<std::uint32_t>(10 + i), 0.001f);
                for (std::size_t j = 0; j < x.size(); ++j)
                {
                    x[j] += base[j];
                }
                models.push_back(std::move(x));
            }
        }

        static const wudi_inputs& get()
        {
            static const wudi_inputs in;
            return in;
        }

        xmerge::expression_list<xmerge::input_node> leaves() const
        {
            xmerge::expression_list<xmerge::input_node> l;
            for (const auto& m : models)
            {
                l.push_back(xmerge::input(xmerge::as_tensor(m, xmerge::shape_type{n, n}, "w")));
            }
            return l;
        }
    };

    void BM_wudi_closed_form(benchmark::State& state)
    {
        const auto& in = wudi_inputs::get();
        xmerge::wudi_options o;
        o.solver = xmerge::wudi_solver::closed_form;
        const auto merged = xmerge::wudi(in.leaves(), xmerge::input(xmerge::as_tensor(in.base, xmerge::shape_type{in.n, in.n}, "w")), o);
        std::vector<float> out(in.n * in.n);
        for (auto _ : state)
        {
            xmerge::evaluate(merged, xmerge::as_tensor(out, xmerge::shape_type{in.n, in.n}));
            benchmark::ClobberMemory();
        }
    }

    // The system alone: G (spd for these full-rank inputs) and R.
    const xmerge::detail::wudi_system<float>& system()
    {
        static const auto s = [] {
            const auto& in = wudi_inputs::get();
            return xmerge::detail::wudi_build_system<float>(in.leaves(), xmerge::input(xmerge::as_tensor(in.base, xmerge::shape_type{in.n, in.n}, "w")));
        }();
        return s;
    }

    void BM_wudi_adam_step(benchmark::State& state)
    {
        const auto& s = system();
        for (auto _ : state)
        {
            benchmark::DoNotOptimize(xmerge::detail::wudi_adam(s, 1, 1e-5));
            benchmark::ClobberMemory();
        }
    }

    void BM_floor_ssyrk(benchmark::State& state)
    {
        const std::size_t n = wudi_size;
        const auto x = xmerge_bench::normal_matrix(n, n, 7, 1.0f);
        std::vector<float> c(n * n, 0.0f);
        for (auto _ : state)
        {
            xmerge::detail::syrk_upper<float>(n, n, 1.0f, x.data(), n, 0.0f, c.data());
            benchmark::ClobberMemory();
        }
    }

    void BM_floor_sgemm(benchmark::State& state)
    {
        const std::size_t n = wudi_size;
        const auto a = xmerge_bench::normal_matrix(n, n, 7, 1.0f), b = xmerge_bench::normal_matrix(n, n, 8, 1.0f);
        std::vector<float> c(n * n, 0.0f);
        for (auto _ : state)
        {
            xmerge::detail::gemm<float>(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 1.0f, c.data(), n);
            benchmark::ClobberMemory();
        }
    }

    void BM_floor_spotrf(benchmark::State& state)
    {
        const auto& s = system();
        std::vector<float> work(s.g.size());
        for (auto _ : state)
        {
            state.PauseTiming();
            std::memcpy(work.data(), s.g.data(), work.size() * sizeof(float));
            state.ResumeTiming();
            benchmark::DoNotOptimize(xmerge::detail::cholesky<float>(wudi_size, work.data()));
            benchmark::ClobberMemory();
        }
    }

    void BM_floor_spotrs(benchmark::State& state)
    {
        const auto& s = system();
        std::vector<float> factor(s.g.begin(), s.g.end());
        xmerge::detail::cholesky<float>(wudi_size, factor.data());
        std::vector<float> rhs(s.r.size());
        for (auto _ : state)
        {
            state.PauseTiming();
            std::memcpy(rhs.data(), s.r.data(), rhs.size() * sizeof(float));
            state.ResumeTiming();
            xmerge::detail::cholesky_solve<float>(wudi_size, wudi_size, factor.data(), rhs.data(), "bench");
            benchmark::ClobberMemory();
        }
    }
}

BENCHMARK(BM_wudi_closed_form)->Name("BM_wudi_closed_form/K:4/N:2048")->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_wudi_adam_step)->Name("BM_wudi_adam_step/N:2048")->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_floor_ssyrk)->Name("BM_wudi_floor_ssyrk/N:2048")->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_floor_sgemm)->Name("BM_wudi_floor_sgemm/N:2048")->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_floor_spotrf)->Name("BM_wudi_floor_spotrf/N:2048")->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_floor_spotrs)->Name("BM_wudi_floor_spotrs/N:2048/rhs:2048")->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
