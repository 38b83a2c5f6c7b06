// TALL-mask models, consensus merging and EMR models over K = 4 models of N
// elements; compare each with BM_task_arithmetic (bench_averaging.cpp) on the
// same inputs in the same run, and with BM_triad_baseline for bandwidth.
#include "bench_common.hpp"

namespace
{
    using xmerge::dtype;

    template <class Build>
    void run_merge(benchmark::State& state, dtype type, Build&& build)
    {
        const auto k = static_cast<std::size_t>(state.range(0));
        const auto n = static_cast<std::size_t>(state.range(1));
        xmerge_bench::merge_inputs in(type, k, n);
        const xmerge::any_expression merged = build(in, k);
        const auto options = xmerge_bench::all_cores();
        for (auto _ : state)
        {
            xmerge::evaluate(merged, in.out.ref(), options);
            benchmark::ClobberMemory();
        }
        xmerge_bench::set_bytes(state, (k + 2) * in.out.bytes());
    }

    // one task's reconstructed model base + m_t * tau_MTL
    void BM_tall_mask_model(benchmark::State& state, dtype type)
    {
        run_merge(state, type, [](const xmerge_bench::merge_inputs& in, std::size_t k)
                  { return xmerge::tall_mask_model(in.models(), in.base_leaf(), 0, std::vector<double>(k, 0.4)); });
    }

    void BM_consensus_merge(benchmark::State& state, dtype type)
    {
        run_merge(state, type, [](const xmerge_bench::merge_inputs& in, std::size_t k)
                  { return xmerge::consensus_merge(in.models(), in.base_leaf(), std::vector<double>(k, 0.4), 2, 0.5); });
    }

    // one task's model with a given rescaler (the rescalers are a separate statistics pass)
    void BM_emr_model(benchmark::State& state, dtype type)
    {
        run_merge(state, type, [](const xmerge_bench::merge_inputs& in, std::size_t) { return xmerge::emr_model(in.models(), in.base_leaf(), 0, 1.1); });
    }

    void four_models(benchmark::internal::Benchmark* b)
    {
        b->Args({4, static_cast<std::int64_t>(xmerge_bench::default_size)})->ArgNames({"K", "N"})->Unit(benchmark::kMillisecond)->UseRealTime();
    }
}

BENCHMARK_CAPTURE(BM_tall_mask_model, f32, dtype::float32)->Apply(four_models);
BENCHMARK_CAPTURE(BM_tall_mask_model, bf16, dtype::bfloat16)->Apply(four_models);
BENCHMARK_CAPTURE(BM_consensus_merge, f32, dtype::float32)->Apply(four_models);
BENCHMARK_CAPTURE(BM_consensus_merge, bf16, dtype::bfloat16)->Apply(four_models);
BENCHMARK_CAPTURE(BM_emr_model, f32, dtype::float32)->Apply(four_models);
BENCHMARK_CAPTURE(BM_emr_model, bf16, dtype::bfloat16)->Apply(four_models);
