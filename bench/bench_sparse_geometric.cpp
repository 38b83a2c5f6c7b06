// Sparse and geometric merges over K models of N elements; compare each with
// BM_task_arithmetic on the same inputs (K:4, or K:1 for SLERP) in the same run.
#include "bench_common.hpp"

namespace
{
    using xmerge::dtype;

    using xmerge_bench::run_merge;

    std::vector<double> same(std::size_t k, double v) { return std::vector<double>(k, v); }

    void BM_ties(benchmark::State& state, dtype type)
    {
        const auto k = static_cast<std::size_t>(state.range(0));
        run_merge(state, type, k, [&](const xmerge_bench::merge_inputs& in)
                  { return xmerge::ties(in.models(), in.base_leaf(), same(k, 1.0), {0.2}); });
    }

    void BM_dare_ties(benchmark::State& state, dtype type)
    {
        const auto k = static_cast<std::size_t>(state.range(0));
        run_merge(state, type, k, [&](const xmerge_bench::merge_inputs& in)
                  {
                      return xmerge::generalized_task_arithmetic(in.models(), in.base_leaf(),
                                                                 xmerge::dare_options(same(k, 1.0), {0.2}, true, 1, "w", xmerge::rescale_kind::density));
                  });
    }

    void BM_dare_ties_l1(benchmark::State& state, dtype type)
    {
        const auto k = static_cast<std::size_t>(state.range(0));
        run_merge(state, type, k, [&](const xmerge_bench::merge_inputs& in)
                  {
                      return xmerge::generalized_task_arithmetic(in.models(), in.base_leaf(),
                                                                 xmerge::dare_options(same(k, 1.0), {0.2}, true, 1, "w", xmerge::rescale_kind::l1));
                  });
    }

    void BM_breadcrumbs(benchmark::State& state, dtype type)
    {
        const auto k = static_cast<std::size_t>(state.range(0));
        run_merge(state, type, k, [&](const xmerge_bench::merge_inputs& in)
                  { return xmerge::generalized_task_arithmetic(in.models(), in.base_leaf(), xmerge::breadcrumbs_options(same(k, 1.0), {0.9}, {0.01}, false)); });
    }

    void BM_model_stock(benchmark::State& state, dtype type)
    {
        const auto k = static_cast<std::size_t>(state.range(0));
        run_merge(state, type, k, [](const xmerge_bench::merge_inputs& in) { return xmerge::model_stock(in.models(), in.base_leaf()); });
    }

    void BM_slerp(benchmark::State& state, dtype type)
    {
        run_merge(state, type, 1, [](const xmerge_bench::merge_inputs& in) { return xmerge::slerp(in.base_leaf(), in.models()[0], 0.3); });
    }

    void four_models(benchmark::internal::Benchmark* b)
    {
        b->Args({4, static_cast<std::int64_t>(xmerge_bench::default_size)})->ArgNames({"K", "N"})->Unit(benchmark::kMillisecond)->UseRealTime();
    }

    void one_model(benchmark::internal::Benchmark* b)
    {
        b->Args({1, static_cast<std::int64_t>(xmerge_bench::default_size)})->ArgNames({"K", "N"})->Unit(benchmark::kMillisecond)->UseRealTime();
    }
}

BENCHMARK_CAPTURE(BM_ties, f32, dtype::float32)->Apply(four_models);
BENCHMARK_CAPTURE(BM_ties, bf16, dtype::bfloat16)->Apply(four_models);
BENCHMARK_CAPTURE(BM_dare_ties, f32, dtype::float32)->Apply(four_models);
BENCHMARK_CAPTURE(BM_dare_ties, bf16, dtype::bfloat16)->Apply(four_models);
BENCHMARK_CAPTURE(BM_dare_ties_l1, f32, dtype::float32)->Apply(four_models);
BENCHMARK_CAPTURE(BM_dare_ties_l1, bf16, dtype::bfloat16)->Apply(four_models);
BENCHMARK_CAPTURE(BM_breadcrumbs, f32, dtype::float32)->Apply(four_models);
BENCHMARK_CAPTURE(BM_breadcrumbs, bf16, dtype::bfloat16)->Apply(four_models);
BENCHMARK_CAPTURE(BM_model_stock, f32, dtype::float32)->Apply(four_models);
BENCHMARK_CAPTURE(BM_model_stock, bf16, dtype::bfloat16)->Apply(four_models);
BENCHMARK_CAPTURE(BM_slerp, f32, dtype::float32)->Apply(one_model);
BENCHMARK_CAPTURE(BM_slerp, bf16, dtype::bfloat16)->Apply(one_model);
