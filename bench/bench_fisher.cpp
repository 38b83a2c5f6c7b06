// Fisher-weighted averaging of K models (K Fishers) and the in-place
// squared-gradient accumulation, both element-wise: judged in bytes/s
// against BM_triad_baseline.
#include "bench_common.hpp"

namespace
{
    using xmerge::dtype;

    void BM_fisher(benchmark::State& state, dtype type)
    {
        const auto k = static_cast<std::size_t>(state.range(0));
        const auto n = static_cast<std::size_t>(state.range(1));
        xmerge_bench::merge_inputs in(type, k, n);
        std::vector<xmerge_bench::tensor> fishers;
        xmerge::expression_list<xmerge::input_node> fisher_leaves;
        for (std::size_t i = 0; i < k; ++i)
        {
            fishers.emplace_back(type, n, static_cast<std::uint32_t>(100 + i));
        }
        for (const auto& f : fishers)
        {
            fisher_leaves.push_back(xmerge::input(f.cref()));
        }
        xmerge::fisher_options o;
        o.fisher_norms.assign(k, 1.0);  // whole-model norms, computed once per model elsewhere
        const auto merged = xmerge::fisher_merging(in.models(), fisher_leaves, o);
        const auto options = xmerge_bench::all_cores();
        for (auto _ : state)
        {
            xmerge::evaluate(merged, in.out.ref(), options);
            benchmark::ClobberMemory();
        }
        xmerge_bench::set_bytes(state, (2 * k + 1) * in.out.bytes());
    }

    void BM_diagonal_fisher_add(benchmark::State& state, dtype gradient_type)
    {
        const auto n = static_cast<std::size_t>(state.range(0));
        xmerge_bench::tensor fisher(dtype::float32, n, 1), gradient(gradient_type, n, 2);
        xmerge::diagonal_fisher acc({fisher.ref()}, xmerge_bench::all_cores());
        for (auto _ : state)
        {
            acc.add({gradient.cref()});
            benchmark::ClobberMemory();
        }
        xmerge_bench::set_bytes(state, 2 * fisher.bytes() + gradient.bytes());
    }

    void fisher_sizes(benchmark::internal::Benchmark* b)
    {
        for (int k : {2, 4})
        {
            b->Args({k, static_cast<std::int64_t>(xmerge_bench::default_size)});
        }
        b->ArgNames({"K", "N"})->Unit(benchmark::kMillisecond)->UseRealTime();
    }
}

BENCHMARK_CAPTURE(BM_fisher, f32, dtype::float32)->Apply(fisher_sizes);
BENCHMARK_CAPTURE(BM_fisher, bf16, dtype::bfloat16)->Apply(fisher_sizes);
BENCHMARK_CAPTURE(BM_diagonal_fisher_add, f32, dtype::float32)->Arg(xmerge_bench::default_size)->ArgName("N")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_diagonal_fisher_add, bf16, dtype::bfloat16)->Arg(xmerge_bench::default_size)->ArgName("N")->Unit(benchmark::kMillisecond)->UseRealTime();
