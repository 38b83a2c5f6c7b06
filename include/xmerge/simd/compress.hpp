/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_SIMD_COMPRESS_HPP
#define XMERGE_SIMD_COMPRESS_HPP

#include <cstddef>
#include <cstdint>
#include <type_traits>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "../config.hpp"
#include "batch.hpp"

XMERGE_INTRINSICS_BEGIN

/**
 * @file
 * Compress-stores and lane counts: the selected lanes of an integer batch
 * written contiguously, for kernels that collect the few elements of a
 * chunk that pass a test.
 */

namespace xmerge::simd
{
    /// Number of set bits.
    XMERGE_FORCE_INLINE unsigned popcount(std::uint32_t m) noexcept
    {
#if defined(__GNUC__) || defined(__clang__)
        return static_cast<unsigned>(__builtin_popcount(m));
#else
        unsigned c = 0;
        for (; m; m &= m - 1)
        {
            ++c;
        }
        return c;
#endif
    }

    /**
     * Writes the lanes l of v whose bit l is set in `mask`, in lane order, to
     * out[0, popcount(mask)); returns that count. I is an int32 batch or
     * std::int32_t (the scalar twin, with mask 0 or 1). `out` needs room for
     * every lane of I.
     */
    template <class I>
    XMERGE_FORCE_INLINE std::size_t compress_store(std::int32_t* out, const I& v, std::uint32_t mask) noexcept
    {
        if constexpr (std::is_same<I, std::int32_t>::value)
        {
            *out = v;
            return mask & 1U;
        }
        else
        {
#if defined(__AVX512F__)
            if constexpr (I::size == 16)
            {
                _mm512_mask_compressstoreu_epi32(out, static_cast<__mmask16>(mask), v);
                return simd::popcount(mask);
            }
#endif
            alignas(64) std::int32_t lanes_of[I::size];
            v.store_aligned(lanes_of);
            std::size_t count = 0;
            for (; mask; mask &= mask - 1)
            {
                out[count++] = lanes_of[simd::lowest_bit(mask)];
            }
            return count;
        }
    }

    /// The lane numbers 0, 1, ..., width - 1 as an int32 batch (0 for the scalar twin).
    template <class I>
    XMERGE_FORCE_INLINE I lane_indices() noexcept
    {
        if constexpr (std::is_same<I, std::int32_t>::value)
        {
            return 0;
        }
        else
        {
            alignas(64) std::int32_t lanes_of[I::size];
            for (std::size_t l = 0; l < I::size; ++l)
            {
                lanes_of[l] = static_cast<std::int32_t>(l);
            }
            return I::load_aligned(lanes_of);
        }
    }
}

XMERGE_INTRINSICS_END

#endif
