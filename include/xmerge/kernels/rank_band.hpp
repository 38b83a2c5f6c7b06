/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_KERNELS_RANK_BAND_HPP
#define XMERGE_KERNELS_RANK_BAND_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

#include "../config.hpp"
#include "../core/half.hpp"
#include "../simd/batch.hpp"
#include "../simd/compress.hpp"
#include "../simd/convert.hpp"

XMERGE_INTRINSICS_BEGIN

/**
 * @file
 * The band pass of an exact magnitude selection, over raw float32 chunks.
 *
 * Elements rank by |value| (bit patterns compared as integers, so NaN ranks
 * above +inf), larger first, then by lower index. A band is the range of
 * ranks from `hi` to `lo`, inclusive. For one chunk, band_pass() counts the
 * elements ranking before `hi` and appends those inside the band to a
 * candidate list; a selection among the candidates then finds an exact
 * cut. Compiled once for float32 keys (callers evaluate expressions into a
 * chunk buffer first), and once per element type for keys that are the
 * differences x - base of two inputs (task vectors), read without that
 * buffer. The scalar twin in `scalar::` is the reference the batch path is
 * tested against.
 */

namespace xmerge::kernels
{
    /// A position in the magnitude ranking: larger |value| first, then lower index.
    struct rank_key
    {
        std::int32_t bits;  ///< bit pattern of |value|
        std::uint64_t index;
    };

    /// Whether a ranks before b.
    inline bool ranks_before(const rank_key& a, const rank_key& b) noexcept
    {
        return a.bits > b.bits || (a.bits == b.bits && a.index < b.index);
    }

    /// The rank order of an element of a tensor below 2^32 elements as one number, larger first.
    inline std::uint64_t packed_rank(std::int32_t bits, std::uint64_t index) noexcept
    {
        return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(bits)) << 32) | (0xFFFFFFFFULL - (index & 0xFFFFFFFFULL));
    }

    inline rank_key unpack_rank(std::uint64_t key) noexcept
    {
        return {static_cast<std::int32_t>(key >> 32), 0xFFFFFFFFULL - (key & 0xFFFFFFFFULL)};
    }

    /// The ranks from `hi` to `lo`, inclusive.
    struct rank_band
    {
        rank_key hi;
        rank_key lo;
    };

    /**
     * The band's elements found in one task: magnitude bits and offsets from
     * the task's first element. The arrays are not initialized beyond what
     * was written (they are sized for compress-stores, not filled).
     */
    struct band_candidates
    {
        std::unique_ptr<std::int32_t[]> bits;
        std::unique_ptr<std::int32_t[]> offsets;
        std::size_t size = 0;
        std::size_t capacity = 0;

        /// Room for `extra` more candidates (a batch may be written past them).
        void reserve_more(std::size_t extra)
        {
            if (size + extra > capacity)
            {
                capacity = std::max(size + extra, 2 * capacity);
                grow(bits);
                grow(offsets);
            }
        }

    private:
        void grow(std::unique_ptr<std::int32_t[]>& a) const
        {
            std::unique_ptr<std::int32_t[]> b(new std::int32_t[capacity]);
            std::copy(a.get(), a.get() + size, b.get());
            a = std::move(b);
        }
    };

    /**
     * For the chunk of n values at tensor index `begin` (keys readable up to
     * n rounded up to whole batches), and each of `count` bands: adds to
     * above[b] the elements ranking before bands[b].hi, and appends those
     * inside bands[b] to out[b], with offsets counted from `task_begin`.
     */
    inline void band_pass(const float* keys, std::size_t n, std::uint64_t begin, std::uint64_t task_begin, const rank_band* bands, std::size_t count,
                          std::size_t* above, band_candidates* const* out);

    /**
     * The same for the keys x[i] - base[i] of two chunks of element type T
     * (float, bfloat16 or float16), both readable up to n rounded up to
     * whole batches: the bits of band_pass() over the materialized
     * differences.
     */
    template <class T>
    void band_pass_difference(const T* x, const T* base, std::size_t n, std::uint64_t begin, std::uint64_t task_begin, const rank_band* bands,
                              std::size_t count, std::size_t* above, band_candidates* const* out);

    /// Appends packed_rank() of every element of the chunk to `out` (a sample of chunks brackets the cuts).
    inline void sample_ranks(const float* keys, std::size_t n, std::uint64_t begin, std::vector<std::uint64_t>& out);

    namespace scalar
    {
        inline void band_pass(const float* keys, std::size_t n, std::uint64_t begin, std::uint64_t task_begin, const rank_band* bands, std::size_t count,
                              std::size_t* above, band_candidates* const* out);
        template <class T>
        void band_pass_difference(const T* x, const T* base, std::size_t n, std::uint64_t begin, std::uint64_t task_begin, const rank_band* bands,
                                  std::size_t count, std::size_t* above, band_candidates* const* out);
    }

    namespace detail
    {
        /// Keys in memory.
        struct stored_keys
        {
            const float* keys;

            template <class B>
            XMERGE_FORCE_INLINE B load(std::size_t j) const noexcept
            {
                return simd::batch_traits<B>::load(keys + j);
            }
        };

        /// Keys x - base of two chunks of element type T, widened in registers.
        template <class T>
        struct difference_keys
        {
            const T* x;
            const T* base;

            template <class B>
            XMERGE_FORCE_INLINE B load(std::size_t j) const noexcept
            {
                if constexpr (std::is_same<T, float>::value)
                {
                    return simd::batch_traits<B>::load(x + j) - simd::batch_traits<B>::load(base + j);
                }
                else
                {
                    return simd::load_widened<B>(x + j) - simd::load_widened<B>(base + j);
                }
            }
        };

        /// The band pass with batches of B (simd::batch, or float for the twin) over keys.load<B>(j).
        template <class B, class Keys>
        void band_pass(const Keys& keys, std::size_t n, std::uint64_t begin, std::uint64_t task_begin, const rank_band* bands, std::size_t count,
                       std::size_t* above, band_candidates* const* out);
    }

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        // A band edge seen from a chunk: its bits, and its index as a lane position (-1 before, past n after).
        template <class I>
        struct local_edge
        {
            I bits;
            I lane;
        };

        template <class I>
        local_edge<I> localize(const rank_key& k, std::uint64_t begin, std::size_t n) noexcept
        {
            const std::int64_t lane = k.index < begin ? -1 : static_cast<std::int64_t>(std::min<std::uint64_t>(k.index - begin, n + 1));
            return {I(k.bits), I(static_cast<std::int32_t>(lane))};
        }

        template <class B, class Keys>
        inline void band_pass(const Keys& keys, std::size_t n, std::uint64_t begin, std::uint64_t task_begin, const rank_band* bands, std::size_t count,
                              std::size_t* above, band_candidates* const* out)
        {
            using I = simd::int_batch_t<B>;
            constexpr std::size_t w = simd::batch_traits<B>::size;
            struct edges
            {
                local_edge<I> hi;
                local_edge<I> lo;
            };
            edges local[2];
            for (std::size_t b = 0; b < count; ++b)
            {
                local[b] = {localize<I>(bands[b].hi, begin, n), localize<I>(bands[b].lo, begin, n)};
            }
            const auto offset0 = static_cast<std::int32_t>(begin - task_begin);
            const I lanes = simd::lane_indices<I>();
            for (std::size_t j = 0; j < n; j += w)
            {
                const I bits = simd::bits_of(keys.template load<B>(j)) & I(0x7FFFFFFF);
                // lanes past the chunk's end take part in nothing
                const std::uint32_t valid = j + w <= n ? (w == 32 ? 0xFFFFFFFFU : (1U << w) - 1U) : (1U << (n - j)) - 1U;
                for (std::size_t b = 0; b < count; ++b)
                {
                    const edges& e = local[b];
                    // Most elements are clearly above or below the band: two compares decide.
                    const std::uint32_t strictly_above = simd::lane_bits(simd::float_mask(bits > e.hi.bits)) & valid;
                    const std::uint32_t touches = simd::lane_bits(simd::float_mask((bits >= e.lo.bits) && (bits <= e.hi.bits))) & valid;
                    if (!touches)
                    {
                        above[b] += simd::popcount(strictly_above);
                        continue;
                    }
                    const I lane = lanes + I(static_cast<std::int32_t>(j));
                    const std::uint32_t before_hi = simd::lane_bits(simd::float_mask((bits == e.hi.bits) && (lane < e.hi.lane))) & valid;
                    const std::uint32_t after_lo = simd::lane_bits(simd::float_mask((bits < e.lo.bits) || ((bits == e.lo.bits) && (lane > e.lo.lane)))) & valid;
                    const std::uint32_t ranked_above = strictly_above | before_hi;
                    above[b] += simd::popcount(ranked_above);
                    const std::uint32_t inside = valid & ~ranked_above & ~after_lo;
                    if (inside)
                    {
                        band_candidates& c = *out[b];
                        c.reserve_more(w);
                        simd::compress_store(c.bits.get() + c.size, bits, inside);
                        c.size += simd::compress_store(c.offsets.get() + c.size, lane + I(offset0), inside);
                    }
                }
            }
        }
    }

    inline void band_pass(const float* keys, std::size_t n, std::uint64_t begin, std::uint64_t task_begin, const rank_band* bands, std::size_t count,
                          std::size_t* above, band_candidates* const* out)
    {
        detail::band_pass<simd::batch>(detail::stored_keys{keys}, n, begin, task_begin, bands, count, above, out);
    }

    template <class T>
    inline void band_pass_difference(const T* x, const T* base, std::size_t n, std::uint64_t begin, std::uint64_t task_begin, const rank_band* bands,
                                     std::size_t count, std::size_t* above, band_candidates* const* out)
    {
        detail::band_pass<simd::batch>(detail::difference_keys<T>{x, base}, n, begin, task_begin, bands, count, above, out);
    }

    namespace scalar
    {
        inline void band_pass(const float* keys, std::size_t n, std::uint64_t begin, std::uint64_t task_begin, const rank_band* bands, std::size_t count,
                              std::size_t* above, band_candidates* const* out)
        {
            kernels::detail::band_pass<float>(kernels::detail::stored_keys{keys}, n, begin, task_begin, bands, count, above, out);
        }

        template <class T>
        inline void band_pass_difference(const T* x, const T* base, std::size_t n, std::uint64_t begin, std::uint64_t task_begin, const rank_band* bands,
                                         std::size_t count, std::size_t* above, band_candidates* const* out)
        {
            kernels::detail::band_pass<float>(kernels::detail::difference_keys<T>{x, base}, n, begin, task_begin, bands, count, above, out);
        }
    }

    inline void sample_ranks(const float* keys, std::size_t n, std::uint64_t begin, std::vector<std::uint64_t>& out)
    {
        for (std::size_t j = 0; j < n; ++j)
        {
            out.push_back(packed_rank(simd::bits_of(keys[j]) & 0x7FFFFFFF, begin + j));
        }
    }
}

XMERGE_INTRINSICS_END

#endif
