/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LORA_KERNELS_HPP
#define XMERGE_LORA_KERNELS_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "../config.hpp"
#include "../core/bound.hpp"
#include "../core/dtype.hpp"
#include "../core/parallel.hpp"
#include "../simd/batch.hpp"
#include "../simd/convert.hpp"

XMERGE_INTRINSICS_BEGIN

/**
 * @file
 * The raw-pointer kernels of low-rank updates, over a rows x cols weight
 * updated by L R (L [rows, rank], R [rank, cols], both float32 row-major).
 * Each takes the batch type B (simd::batch, or float for the scalar twin).
 */

namespace xmerge::lora::detail
{
    /**
     * dst[j] = src[j] + sum_k left[k] * right[k * ld + j] for j < n: one row
     * segment of W + L R, with W (`src`, float, bfloat16 or float16; it may
     * be dst itself) widened in registers. The sum over k is formed first,
     * then added to W, so a large weight does not swallow the low-order bits
     * of the update.
     */
    template <class B = simd::batch, class Src>
    void low_rank_row(float* dst, const Src* src, const float* left, const float* right, std::size_t ld, std::size_t rank, std::size_t n) noexcept;

    /// Elements [begin, begin + n) of the rows x cols matrix W + L R into dst[0, n); src points at W's element `begin`.
    template <class B = simd::batch, class Src>
    void low_rank_chunk(float* dst, const Src* src, std::size_t begin, std::size_t n, std::size_t cols, const float* left, const float* right,
                        std::size_t rank) noexcept;

    /**
     * DoRA's norms of V = W + L R per output feature: per row (`per_row`) or
     * per column, for W of `type` at `w` (rows x cols). Rows (or column
     * blocks) are independent tasks, so the result does not depend on threads.
     */
    template <class B = simd::batch>
    std::vector<double> feature_norms(const void* w, dtype type, std::size_t rows, std::size_t cols, const float* left, const float* right,
                                      std::size_t rank, bool per_row, std::size_t threads, executor* exec);

    /********************
     * Implementation   *
     ********************/

    template <class B, class Src>
    inline void low_rank_row(float* dst, const Src* src, const float* left, const float* right, std::size_t ld, std::size_t rank, std::size_t n) noexcept
    {
        using traits = simd::batch_traits<B>;
        using xmerge::detail::load_as_float;
        constexpr std::size_t w = traits::size;
        const B zero = traits::broadcast(0.0f);
        std::size_t j = 0;
        // Four independent sums hide the latency of the chain over k.
        for (; j + 4 * w <= n; j += 4 * w)
        {
            B s0 = zero, s1 = zero, s2 = zero, s3 = zero;
            for (std::size_t k = 0; k < rank; ++k)
            {
                const B l = traits::broadcast(left[k]);
                const float* r = right + k * ld + j;
                s0 = simd::fma(l, traits::load(r), s0);
                s1 = simd::fma(l, traits::load(r + w), s1);
                s2 = simd::fma(l, traits::load(r + 2 * w), s2);
                s3 = simd::fma(l, traits::load(r + 3 * w), s3);
            }
            traits::store(dst + j, load_as_float<B>(src + j) + s0);
            traits::store(dst + j + w, load_as_float<B>(src + j + w) + s1);
            traits::store(dst + j + 2 * w, load_as_float<B>(src + j + 2 * w) + s2);
            traits::store(dst + j + 3 * w, load_as_float<B>(src + j + 3 * w) + s3);
        }
        for (; j + w <= n; j += w)
        {
            B s = zero;
            for (std::size_t k = 0; k < rank; ++k)
            {
                s = simd::fma(traits::broadcast(left[k]), traits::load(right + k * ld + j), s);
            }
            traits::store(dst + j, load_as_float<B>(src + j) + s);
        }
        if constexpr (w > 1)
        {
            if (j < n)
            {
                low_rank_row<float>(dst + j, src + j, left, right + j, ld, rank, n - j);
            }
        }
    }

    template <class B, class Src>
    inline void low_rank_chunk(float* dst, const Src* src, std::size_t begin, std::size_t n, std::size_t cols, const float* left, const float* right,
                               std::size_t rank) noexcept
    {
        std::size_t done = 0;
        while (done < n)
        {
            const std::size_t row = (begin + done) / cols;
            const std::size_t col = (begin + done) % cols;
            const std::size_t len = std::min(cols - col, n - done);
            low_rank_row<B>(dst + done, src + done, left + row * rank, right + col, cols, rank, len);
            done += len;
        }
    }

    template <class B>
    inline std::vector<double> feature_norms(const void* w, dtype type, std::size_t rows, std::size_t cols, const float* left, const float* right,
                                             std::size_t rank, bool per_row, std::size_t threads, executor* exec)
    {
        // A task is a block of whole rows, or a block of columns over all rows.
        constexpr std::size_t rows_per_task = 16;
        constexpr std::size_t cols_per_task = 256;
        const std::size_t tasks = per_row ? (rows + rows_per_task - 1) / rows_per_task : (cols + cols_per_task - 1) / cols_per_task;
        std::vector<double> norms(per_row ? rows : cols, 0.0);
        xmerge::detail::run_tasks(tasks, threads, exec, [&] { return std::vector<float>(per_row ? cols : cols_per_task); },
                                  [&](std::vector<float>& v, std::size_t t)
                                  {
                                      if (per_row)
                                      {
                                          for (std::size_t i = t * rows_per_task, end = std::min(rows, i + rows_per_task); i < end; ++i)
                                          {
                                              xmerge::detail::with_element_type(type, [&](auto tag)
                                                                                { low_rank_row<B>(v.data(), static_cast<decltype(tag)>(w) + i * cols, left + i * rank, right, cols, rank, cols); });
                                              double s = 0.0;
                                              for (float x : v)
                                              {
                                                  s += static_cast<double>(x) * x;
                                              }
                                              norms[i] = std::sqrt(s);
                                          }
                                          return;
                                      }
                                      const std::size_t c0 = t * cols_per_task;
                                      const std::size_t width = std::min(cols_per_task, cols - c0);
                                      for (std::size_t i = 0; i < rows; ++i)
                                      {
                                          xmerge::detail::with_element_type(
                                              type, [&](auto tag) { low_rank_row<B>(v.data(), static_cast<decltype(tag)>(w) + i * cols + c0, left + i * rank, right + c0, cols, rank, width); });
                                          for (std::size_t j = 0; j < width; ++j)
                                          {
                                              norms[c0 + j] += static_cast<double>(v[j]) * v[j];
                                          }
                                      }
                                      for (std::size_t j = 0; j < width; ++j)
                                      {
                                          norms[c0 + j] = std::sqrt(norms[c0 + j]);
                                      }
                                  });
        return norms;
    }
}

XMERGE_INTRINSICS_END

#endif
