#ifndef XMERGE_BENCH_COMMON_HPP
#define XMERGE_BENCH_COMMON_HPP

#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include <xmerge/xmerge.hpp>

namespace xmerge_bench
{
    /// Elements per tensor in the merge benchmarks (64 MiB of float32).
    constexpr std::size_t default_size = std::size_t{1} << 24;

    /// One pool for the whole run, with every hardware thread.
    inline xmerge::thread_pool& pool()
    {
        static xmerge::thread_pool p(0);
        return p;
    }

    inline xmerge::eval_options all_cores()
    {
        xmerge::eval_options o;
        o.threads = 0;
        o.exec = &pool();
        return o;
    }

    /// A tensor of random values in memory of one dtype, first touched by the
    /// pool's threads the way the merge will read it.
    class tensor
    {
    public:
        tensor(xmerge::dtype type, std::size_t n, std::uint32_t seed);

        xmerge::tensor_ref ref() { return xmerge::tensor_ref(m_bytes.get(), m_type, {m_size}); }
        xmerge::const_tensor_ref cref() const { return xmerge::const_tensor_ref(m_bytes.get(), m_type, {m_size}); }
        std::size_t bytes() const { return m_size * xmerge::size_of(m_type); }

    private:
        xmerge::dtype m_type;
        std::size_t m_size;
        std::unique_ptr<std::uint8_t[]> m_bytes;
    };

    /// K models, a base and an output of one dtype.
    struct merge_inputs
    {
        merge_inputs(xmerge::dtype type, std::size_t k, std::size_t n);

        xmerge::expression_list<xmerge::input_node> models() const;
        xmerge::input_node base_leaf() const { return xmerge::input(base.cref()); }

        std::vector<tensor> model_tensors;
        tensor base;
        tensor out;
    };

    /// Reports bytes/s with bytes = everything read plus the output written.
    inline void set_bytes(benchmark::State& state, std::size_t bytes_per_iteration)
    {
        state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(bytes_per_iteration));
    }

    /// Times evaluating build(inputs) for k models of state.range(1) elements into the output, on all cores.
    template <class Build>
    void run_merge(benchmark::State& state, xmerge::dtype type, std::size_t k, Build&& build)
    {
        const auto n = static_cast<std::size_t>(state.range(1));
        merge_inputs in(type, k, n);
        const xmerge::any_expression merged = build(in);
        const auto options = all_cores();
        for (auto _ : state)
        {
            xmerge::evaluate(merged, in.out.ref(), options);
            benchmark::ClobberMemory();
        }
        set_bytes(state, (k + 2) * in.out.bytes());
    }

    inline tensor::tensor(xmerge::dtype type, std::size_t n, std::uint32_t seed)
        : m_type(type), m_size(n), m_bytes(new std::uint8_t[n * xmerge::size_of(type)])
    {
        std::vector<float> values(std::min<std::size_t>(n, 1 << 16));
        std::mt19937 gen(seed);
        std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
        for (auto& v : values)
        {
            v = dist(gen);
        }
        // Fill in parallel so pages are spread over the threads that read them.
        const std::size_t block = values.size();
        xmerge::detail::run_tasks((n + block - 1) / block, 0, &pool(), [] { return 0; },
                                  [&](int&, std::size_t t)
                                  {
                                      const std::size_t begin = t * block;
                                      const std::size_t count = std::min(block, n - begin);
                                      xmerge::simd::store_from_float(m_type, values.data(), m_bytes.get(), begin, count);
                                  });
    }

    inline merge_inputs::merge_inputs(xmerge::dtype type, std::size_t k, std::size_t n)
        : base(type, n, 1000), out(type, n, 2000)
    {
        for (std::size_t i = 0; i < k; ++i)
        {
            model_tensors.emplace_back(type, n, static_cast<std::uint32_t>(i + 1));
        }
    }

    inline xmerge::expression_list<xmerge::input_node> merge_inputs::models() const
    {
        xmerge::expression_list<xmerge::input_node> list;
        for (const auto& m : model_tensors)
        {
            list.push_back(xmerge::input(m.cref()));
        }
        return list;
    }
}

#endif
