/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_SIMD_RANDOM_HPP
#define XMERGE_SIMD_RANDOM_HPP

#include <cstdint>
#include <string>

#include "batch.hpp"

XMERGE_INTRINSICS_BEGIN

/**
 * @file
 * Counter-based random numbers: the value for an element is a hash of
 * (seed, stream, element index), so a random mask is the same for any thread
 * count, chunk size, batch width or machine, and any element can be drawn
 * without drawing the ones before it.
 */

namespace xmerge::simd
{
    /// Two 32-bit words keying one random stream.
    struct random_key
    {
        std::uint32_t k0 = 0;
        std::uint32_t k1 = 0;
    };

    /// A key for (seed, stream, substream): e.g. (user seed, hash of the tensor name, model index).
    inline random_key make_random_key(std::uint64_t seed, std::uint64_t stream, std::uint64_t substream) noexcept;

    /// 64-bit FNV-1a hash of a name, for deriving streams from tensor names.
    inline std::uint64_t hash_name(const std::string& name) noexcept;

    /**
     * Uniform numbers in [0, 1) with 24 random bits, for the elements
     * `index + 0, ..., index + width - 1` of the stream `key`. B is a float
     * batch or float; the float twin gives the same values lane by lane.
     */
    template <class B>
    B uniform(const random_key& key, std::uint64_t index) noexcept;

    namespace detail
    {
        // A 32-bit bijection with good avalanche (multiply-xorshift).
        template <class U>
        XMERGE_FORCE_INLINE U mix32(U x) noexcept
        {
            x = x ^ (x >> 16);
            x = x * U(0x7feb352dU);
            x = x ^ (x >> 15);
            x = x * U(0x846ca68bU);
            x = x ^ (x >> 16);
            return x;
        }

        inline std::uint64_t splitmix64(std::uint64_t x) noexcept
        {
            x += 0x9E3779B97F4A7C15ULL;
            x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
            x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
            return x ^ (x >> 31);
        }
    }

    /********************
     * Implementation   *
     ********************/

    inline random_key make_random_key(std::uint64_t seed, std::uint64_t stream, std::uint64_t substream) noexcept
    {
        const std::uint64_t h = detail::splitmix64(detail::splitmix64(detail::splitmix64(seed) ^ stream) ^ substream);
        return {static_cast<std::uint32_t>(h), static_cast<std::uint32_t>(h >> 32)};
    }

    inline std::uint64_t hash_name(const std::string& name) noexcept
    {
        std::uint64_t h = 0xcbf29ce484222325ULL;
        for (unsigned char c : name)
        {
            h = (h ^ c) * 0x100000001b3ULL;
        }
        return h;
    }

    namespace detail
    {
        template <class U>
        XMERGE_FORCE_INLINE U lane_numbers() noexcept
        {
            alignas(64) static const std::uint32_t numbers[64] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                                                  16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
                                                                  32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47,
                                                                  48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63};
            return U::load_aligned(numbers);
        }
    }

    template <class B>
    inline B uniform(const random_key& key, std::uint64_t index) noexcept
    {
        using U = uint_batch_t<B>;
        const auto lo0 = static_cast<std::uint32_t>(index);
        const auto hi0 = static_cast<std::uint32_t>(index >> 32);
        U lo, hi;
        if constexpr (std::is_same<B, float>::value)
        {
            lo = lo0;
            hi = hi0;
        }
        else
        {
            lo = U(lo0) + detail::lane_numbers<U>();
            hi = U(hi0);
            if (lo0 > 0xFFFFFFFFU - static_cast<std::uint32_t>(U::size - 1))
            {
                // the lanes past a 2^32 boundary (lane l > 0xFFFFFFFF - lo0) belong to the next high word
                using I = int_batch_t<B>;
                const auto past = xsimd::bitwise_cast<I>(detail::lane_numbers<U>()) > I(static_cast<std::int32_t>(0xFFFFFFFFU - lo0));
                hi = hi + xsimd::bitwise_cast<U>(simd::select_ints(past, I(1), I(0)));
            }
        }
        U h = detail::mix32(lo ^ U(key.k0));
        h = detail::mix32(h ^ (hi * U(0x9E3779B9U)) ^ U(key.k1));
        const auto top24 = h >> 8;
        if constexpr (std::is_same<B, float>::value)
        {
            return static_cast<float>(top24) * 5.9604644775390625e-8f;
        }
        else
        {
            return xsimd::batch_cast<float>(xsimd::bitwise_cast<int_batch_t<B>>(top24)) * B(5.9604644775390625e-8f);
        }
    }
}

XMERGE_INTRINSICS_END

#endif
