/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_KERNELS_ACTIVE_COUNTS_HPP
#define XMERGE_KERNELS_ACTIVE_COUNTS_HPP

#include <bitset>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "../config.hpp"
#include "../simd/batch.hpp"

XMERGE_INTRINSICS_BEGIN

/**
 * @file
 * Counts of where task vectors are active alone or together, over raw
 * float32 chunks: the statistic behind RAM+'s per-model rescaling. An entry
 * of term k is active when |t_k| > epsilon (strictly; NaN is never active).
 */

namespace xmerge::kernels
{
    /**
     * For n elements of k terms (each readable up to n rounded up to whole
     * batches): shared[j] += the elements where term j is active together
     * with at least one other term, unique[j] += those where it is the only
     * active term.
     */
    inline void active_counts(const float* const* terms, std::size_t k, std::size_t n, float epsilon, std::uint64_t* shared,
                              std::uint64_t* unique) noexcept;

    namespace scalar
    {
        inline void active_counts(const float* const* terms, std::size_t k, std::size_t n, float epsilon, std::uint64_t* shared,
                                  std::uint64_t* unique) noexcept;
    }

    namespace detail
    {
        /// One batch at element i; lanes whose bit in `valid` is clear (past the end) are not counted.
        template <class B>
        inline void active_counts_batch(const float* const* terms, std::size_t k, std::size_t i, std::uint32_t valid, float epsilon,
                                        std::uint64_t* shared, std::uint64_t* unique) noexcept
        {
            using traits = simd::batch_traits<B>;
            const B eps(epsilon);
            B count(0.0f);
            for (std::size_t j = 0; j < k; ++j)
            {
                count += simd::select(simd::abs(traits::load(terms[j] + i)) > eps, B(1.0f), B(0.0f));
            }
            const auto together = count > B(1.5f);
            const auto alone = count == B(1.0f);
            for (std::size_t j = 0; j < k; ++j)
            {
                const auto active = simd::abs(traits::load(terms[j] + i)) > eps;
                shared[j] += std::bitset<32>(simd::lane_bits(active && together) & valid).count();
                unique[j] += std::bitset<32>(simd::lane_bits(active && alone) & valid).count();
            }
        }

        template <class B>
        inline void active_counts(const float* const* terms, std::size_t k, std::size_t n, float epsilon, std::uint64_t* shared,
                                  std::uint64_t* unique) noexcept
        {
            constexpr std::size_t w = simd::batch_traits<B>::size;
            const std::size_t full = n - n % w;
            constexpr std::uint32_t all = w >= 32 ? ~0U : (1U << w) - 1U;
            for (std::size_t i = 0; i < full; i += w)
            {
                active_counts_batch<B>(terms, k, i, all, epsilon, shared, unique);
            }
            if (full < n)
            {
                active_counts_batch<B>(terms, k, full, (1U << (n - full)) - 1U, epsilon, shared, unique);
            }
        }
    }

    /********************
     * Implementation   *
     ********************/

    inline void active_counts(const float* const* terms, std::size_t k, std::size_t n, float epsilon, std::uint64_t* shared,
                              std::uint64_t* unique) noexcept
    {
        detail::active_counts<simd::batch>(terms, k, n, epsilon, shared, unique);
    }

    namespace scalar
    {
        inline void active_counts(const float* const* terms, std::size_t k, std::size_t n, float epsilon, std::uint64_t* shared,
                                  std::uint64_t* unique) noexcept
        {
            kernels::detail::active_counts<float>(terms, k, n, epsilon, shared, unique);
        }
    }
}

XMERGE_INTRINSICS_END

#endif
