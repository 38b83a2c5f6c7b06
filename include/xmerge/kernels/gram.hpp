/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_KERNELS_GRAM_HPP
#define XMERGE_KERNELS_GRAM_HPP

#include <cstddef>

#include "../config.hpp"
#include "../simd/batch.hpp"
#include "../simd/kernels.hpp"

/**
 * @file
 * Gram accumulation over raw float32 chunks: the pairwise dot products of K
 * vectors, each computed by simd::dot, so that an entry of a Gram matrix has
 * the bits of the dot product of the same two tensors.
 */

namespace xmerge::kernels
{
    /**
     * upper[p] += <terms[i], terms[j]> over n elements for every pair i <= j,
     * p counting the pairs row by row (0,0), (0,1), ..., (0,k-1), (1,1), ...
     * Every terms[i] must be readable up to n rounded up to whole batches.
     */
    inline void gram_upper(const float* const* terms, std::size_t k, std::size_t n, double* upper) noexcept;

    namespace scalar
    {
        inline void gram_upper(const float* const* terms, std::size_t k, std::size_t n, double* upper) noexcept;
    }

    namespace detail
    {
        template <class B>
        inline void gram_upper(const float* const* terms, std::size_t k, std::size_t n, double* upper) noexcept
        {
            std::size_t p = 0;
            for (std::size_t i = 0; i < k; ++i)
            {
                const simd::detail::memory_stream a{terms[i]};
                for (std::size_t j = i; j < k; ++j)
                {
                    upper[p++] += simd::dot<B>(n, a, simd::detail::memory_stream{terms[j]});
                }
            }
        }
    }

    /********************
     * Implementation   *
     ********************/

    inline void gram_upper(const float* const* terms, std::size_t k, std::size_t n, double* upper) noexcept
    {
        detail::gram_upper<simd::batch>(terms, k, n, upper);
    }

    namespace scalar
    {
        inline void gram_upper(const float* const* terms, std::size_t k, std::size_t n, double* upper) noexcept
        {
            kernels::detail::gram_upper<float>(terms, k, n, upper);
        }
    }
}

#endif
