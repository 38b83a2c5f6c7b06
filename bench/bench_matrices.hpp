// Random dense matrices for the LAPACK-bound benchmarks.
#ifndef XMERGE_BENCH_MATRICES_HPP
#define XMERGE_BENCH_MATRICES_HPP

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace xmerge_bench
{
    /// rows x cols values drawn from N(0, scale^2), row-major.
    inline std::vector<float> normal_matrix(std::size_t rows, std::size_t cols, std::uint32_t seed, float scale)
    {
        std::mt19937 gen(seed);
        std::normal_distribution<float> dist(0.0f, scale);
        std::vector<float> v(rows * cols);
        for (auto& x : v)
        {
            x = dist(gen);
        }
        return v;
    }
}

#endif
