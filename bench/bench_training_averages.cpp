// Training-loop averages over one 64 MiB float32 tensor: a power-function EMA
// update (two profiles), a LAWA snapshot and window mean, a post-hoc EMA
// reconstruction, and CoTTA's stochastic restore. Compare their bytes/s with BM_triad_baseline of the same run.
#include "bench_common.hpp"

#include <xmerge/online/lawa.hpp>
#include <xmerge/online/posthoc_ema.hpp>
#include <xmerge/online/stochastic_restore.hpp>

namespace
{
    using xmerge::dtype;

    void BM_power_ema_update(benchmark::State& state)
    {
        const auto n = static_cast<std::size_t>(state.range(0));
        xmerge_bench::tensor x(dtype::float32, n, 1), a(dtype::float32, n, 2), b(dtype::float32, n, 3);
        xmerge::power_ema tracker({{a.ref()}, {b.ref()}}, {0.05, 0.10}, xmerge_bench::all_cores());
        for (auto _ : state)
        {
            tracker.update({x.cref()});
            benchmark::ClobberMemory();
        }
        // Per profile: read x and the average, write the average.
        xmerge_bench::set_bytes(state, 2 * 3 * x.bytes());
    }

    void BM_lawa_snapshot(benchmark::State& state, dtype storage)
    {
        const auto n = static_cast<std::size_t>(state.range(0));
        xmerge_bench::tensor x(dtype::float32, n, 1);
        xmerge::lawa window({x.cref()}, 4, 1, storage, xmerge_bench::all_cores());
        for (auto _ : state)
        {
            window.update({x.cref()});
            benchmark::ClobberMemory();
        }
        xmerge_bench::set_bytes(state, x.bytes() + n * xmerge::size_of(storage));
    }

    void BM_lawa_average(benchmark::State& state, dtype storage)
    {
        const auto k = static_cast<std::size_t>(state.range(0));
        const auto n = static_cast<std::size_t>(state.range(1));
        xmerge_bench::tensor x(dtype::float32, n, 1), out(dtype::float32, n, 2);
        xmerge::lawa window({x.cref()}, k, 1, storage, xmerge_bench::all_cores());
        for (std::size_t i = 0; i < k; ++i)
        {
            window.snapshot({x.cref()});
        }
        for (auto _ : state)
        {
            window.average({out.ref()});
            benchmark::ClobberMemory();
        }
        xmerge_bench::set_bytes(state, k * n * xmerge::size_of(storage) + out.bytes());
    }

    void BM_stochastic_restore(benchmark::State& state, dtype type)
    {
        const auto n = static_cast<std::size_t>(state.range(0));
        xmerge_bench::tensor w(type, n, 1), source(type, n, 2);
        xmerge::stochastic_restore restore({w.ref()}, {source.cref()}, 0.01, 0, xmerge_bench::all_cores());
        for (auto _ : state)
        {
            restore.apply();
            benchmark::ClobberMemory();
        }
        // Read the weights and the source, write the weights.
        xmerge_bench::set_bytes(state, 3 * w.bytes());
    }

    void BM_posthoc_ema_reconstruct(benchmark::State& state)
    {
        const auto snapshots = static_cast<std::size_t>(state.range(0));
        const auto n = static_cast<std::size_t>(state.range(1));
        xmerge_bench::tensor x(dtype::float32, n, 1), out(dtype::float32, n, 2);
        xmerge::posthoc_ema store(dtype::float32, xmerge_bench::all_cores());
        for (std::size_t i = 0; i < snapshots; ++i)
        {
            store.add({i % 2 ? 0.10 : 0.05, double(1 + i / 2)}, {x.cref()});
        }
        for (auto _ : state)
        {
            store.reconstruct(0.08, {out.ref()});
            benchmark::ClobberMemory();
        }
        xmerge_bench::set_bytes(state, (snapshots + 1) * out.bytes());
    }
}

BENCHMARK(BM_power_ema_update)->Arg(xmerge_bench::default_size)->ArgName("N")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_lawa_snapshot, f32, dtype::float32)->Arg(xmerge_bench::default_size)->ArgName("N")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_lawa_snapshot, bf16, dtype::bfloat16)->Arg(xmerge_bench::default_size)->ArgName("N")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_lawa_average, f32, dtype::float32)->Args({4, xmerge_bench::default_size})->ArgNames({"K", "N"})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_lawa_average, bf16, dtype::bfloat16)->Args({4, xmerge_bench::default_size})->ArgNames({"K", "N"})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_posthoc_ema_reconstruct)->Args({8, xmerge_bench::default_size})->ArgNames({"S", "N"})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_stochastic_restore, f32, dtype::float32)->Arg(xmerge_bench::default_size)->ArgName("N")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_stochastic_restore, bf16, dtype::bfloat16)->Arg(xmerge_bench::default_size)->ArgName("N")->Unit(benchmark::kMillisecond)->UseRealTime();
