// RAM, RAM+, Arcee Fusion and PCB over K models of N elements; compare each
// with BM_task_arithmetic on the same inputs (K:4, or K:1 for Arcee Fusion)
// and BM_triad_baseline in the same run.
#include "bench_common.hpp"

namespace
{
    using xmerge::dtype;

    template <class Build>
    void run_merge(benchmark::State& state, dtype type, Build&& build)
    {
        xmerge_bench::run_merge(state, type, static_cast<std::size_t>(state.range(0)), std::forward<Build>(build));
    }

    void BM_ram(benchmark::State& state, dtype type)
    {
        run_merge(state, type, [](const xmerge_bench::merge_inputs& in) { return xmerge::ram(in.models(), in.base_leaf(), 0.1); });
    }

    void BM_ramplus_tl(benchmark::State& state, dtype type)
    {
        run_merge(state, type, [](const xmerge_bench::merge_inputs& in) { return xmerge::ramplus_tl(in.models(), in.base_leaf(), 0.1, 0.2, 0.1); });
    }

    void BM_arcee_fusion(benchmark::State& state, dtype type)
    {
        run_merge(state, type, [](const xmerge_bench::merge_inputs& in) { return xmerge::arcee_fusion(in.models()[0], in.base_leaf()); });
    }

    void BM_pcb(benchmark::State& state, dtype type)
    {
        run_merge(state, type, [](const xmerge_bench::merge_inputs& in) { return xmerge::pcb(in.models(), in.base_leaf()); });
    }

    void models(benchmark::internal::Benchmark* b, std::int64_t k)
    {
        b->Args({k, static_cast<std::int64_t>(xmerge_bench::default_size)})->ArgNames({"K", "N"})->Unit(benchmark::kMillisecond)->UseRealTime();
    }
    void four_models(benchmark::internal::Benchmark* b) { models(b, 4); }
    void one_model(benchmark::internal::Benchmark* b) { models(b, 1); }
}

BENCHMARK_CAPTURE(BM_ram, f32, dtype::float32)->Apply(four_models);
BENCHMARK_CAPTURE(BM_ram, bf16, dtype::bfloat16)->Apply(four_models);
BENCHMARK_CAPTURE(BM_ramplus_tl, f32, dtype::float32)->Apply(four_models);
BENCHMARK_CAPTURE(BM_ramplus_tl, bf16, dtype::bfloat16)->Apply(four_models);
BENCHMARK_CAPTURE(BM_arcee_fusion, f32, dtype::float32)->Apply(one_model);
BENCHMARK_CAPTURE(BM_arcee_fusion, bf16, dtype::bfloat16)->Apply(one_model);
BENCHMARK_CAPTURE(BM_pcb, f32, dtype::float32)->Apply(four_models);
BENCHMARK_CAPTURE(BM_pcb, bf16, dtype::bfloat16)->Apply(four_models);
