// The memory-bandwidth yardstick: a plain multi-threaded triad a = b + s * c
// over arrays as large as one merge input, on the same thread pool as the
// merges. Merge kernels are judged by their bytes/s against this.
#include "bench_common.hpp"

namespace
{
    void BM_triad_baseline(benchmark::State& state)
    {
        const auto n = static_cast<std::size_t>(state.range(0));
        xmerge_bench::tensor a(xmerge::dtype::float32, n, 1), b(xmerge::dtype::float32, n, 2), c(xmerge::dtype::float32, n, 3);
        float* pa = static_cast<float*>(a.ref().data());
        const float* pb = static_cast<const float*>(b.cref().data());
        const float* pc = static_cast<const float*>(c.cref().data());
        const std::size_t block = 32768;
        const float s = 0.5f;
        for (auto _ : state)
        {
            xmerge::detail::run_tasks((n + block - 1) / block, 0, &xmerge_bench::pool(), [] { return 0; },
                                      [&](int&, std::size_t t)
                                      {
                                          const std::size_t begin = t * block;
                                          const std::size_t end = std::min(n, begin + block);
                                          for (std::size_t i = begin; i < end; ++i)
                                          {
                                              pa[i] = pb[i] + s * pc[i];
                                          }
                                      });
            benchmark::ClobberMemory();
        }
        xmerge_bench::set_bytes(state, 3 * n * sizeof(float));
    }
}

BENCHMARK(BM_triad_baseline)->Arg(xmerge_bench::default_size)->Unit(benchmark::kMillisecond)->UseRealTime();
