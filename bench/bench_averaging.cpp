// Model soups and task arithmetic over K models of N elements.
#include "bench_common.hpp"

namespace
{
    using xmerge::dtype;

    void BM_linear(benchmark::State& state, dtype type)
    {
        const auto k = static_cast<std::size_t>(state.range(0));
        const auto n = static_cast<std::size_t>(state.range(1));
        xmerge_bench::merge_inputs in(type, k, n);
        const auto merged = xmerge::linear(in.models(), std::vector<double>(k, 1.0));
        const auto options = xmerge_bench::all_cores();
        for (auto _ : state)
        {
            xmerge::evaluate(merged, in.out.ref(), options);
            benchmark::ClobberMemory();
        }
        xmerge_bench::set_bytes(state, (k + 1) * in.out.bytes());
    }

    void BM_task_arithmetic(benchmark::State& state, dtype type)
    {
        const auto k = static_cast<std::size_t>(state.range(0));
        const auto n = static_cast<std::size_t>(state.range(1));
        xmerge_bench::merge_inputs in(type, k, n);
        const auto merged = xmerge::task_arithmetic(in.models(), in.base_leaf(), std::vector<double>(k, 0.5), {0.8});
        const auto options = xmerge_bench::all_cores();
        for (auto _ : state)
        {
            xmerge::evaluate(merged, in.out.ref(), options);
            benchmark::ClobberMemory();
        }
        xmerge_bench::set_bytes(state, (k + 2) * in.out.bytes());
    }

    void merge_sizes(benchmark::internal::Benchmark* b)
    {
        for (int k : {2, 4, 8})
        {
            b->Args({k, static_cast<std::int64_t>(xmerge_bench::default_size)});
        }
        b->ArgNames({"K", "N"})->Unit(benchmark::kMillisecond)->UseRealTime();
    }
}

BENCHMARK_CAPTURE(BM_linear, f32, dtype::float32)->Apply(merge_sizes);
BENCHMARK_CAPTURE(BM_linear, bf16, dtype::bfloat16)->Apply(merge_sizes);
BENCHMARK_CAPTURE(BM_task_arithmetic, f32, dtype::float32)->Apply(merge_sizes);
BENCHMARK_CAPTURE(BM_task_arithmetic, bf16, dtype::bfloat16)->Apply(merge_sizes);
// the base and one model: the inputs of SLERP
BENCHMARK_CAPTURE(BM_task_arithmetic, f32, dtype::float32)->Args({1, xmerge_bench::default_size})->ArgNames({"K", "N"})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_task_arithmetic, bf16, dtype::bfloat16)->Args({1, xmerge_bench::default_size})->ArgNames({"K", "N"})->Unit(benchmark::kMillisecond)->UseRealTime();
