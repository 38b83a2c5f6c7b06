/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_SIMD_BATCH_HPP
#define XMERGE_SIMD_BATCH_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "../config.hpp"

XMERGE_INTRINSICS_BEGIN

/**
 * @file
 * The register type every kernel is written against, and a float twin.
 *
 * A kernel is a template over a batch type B: `simd::batch` (xsimd, widest
 * ISA the compiler was told to use) in production, `float` in the scalar
 * twin that tests compare against. Both are driven by the same element
 * function, usually a generic lambda, so the two paths cannot drift apart.
 */

namespace xmerge::simd
{
#if defined(XSIMD_NO_SUPPORTED_ARCHITECTURE) || defined(XMERGE_FORCE_SCALAR)
    using batch = float;
#else
    /// Widest float32 register of the target the including code is compiled for.
    using batch = xsimd::batch<float>;
#endif

    /// Loads, stores and width of a batch type (specialised for float).
    template <class B>
    struct batch_traits
    {
        static constexpr std::size_t size = B::size;
        static B load(const float* p) noexcept { return B::load_unaligned(p); }
        static void store(float* p, const B& v) noexcept { v.store_unaligned(p); }
        static B broadcast(float x) noexcept { return B(x); }
        static float reduce_add(const B& v) noexcept { return xsimd::hadd(v); }
    };

    template <>
    struct batch_traits<float>
    {
        static constexpr std::size_t size = 1;
        static float load(const float* p) noexcept { return *p; }
        static void store(float* p, float v) noexcept { *p = v; }
        static float broadcast(float x) noexcept { return x; }
        static float reduce_add(float v) noexcept { return v; }
    };

    /// Lanes of the production batch.
    constexpr std::size_t lanes = batch_traits<batch>::size;

    /** @name Element functions usable on batches and on float alike */
    ///@{
    template <class B>
    XMERGE_FORCE_INLINE B fma(const B& a, const B& b, const B& c) noexcept { return xsimd::fma(a, b, c); }
    XMERGE_FORCE_INLINE float fma(float a, float b, float c) noexcept { return std::fma(a, b, c); }

    template <class B>
    XMERGE_FORCE_INLINE B abs(const B& a) noexcept { return xsimd::abs(a); }
    XMERGE_FORCE_INLINE float abs(float a) noexcept { return std::fabs(a); }

    // Written as compare + select so batch and float agree on NaN (the first
    // operand is kept when the comparison is false, as std::min/std::max do).
    template <class B>
    XMERGE_FORCE_INLINE B min(const B& a, const B& b) noexcept { return xsimd::select(b < a, b, a); }
    XMERGE_FORCE_INLINE float min(float a, float b) noexcept { return std::min(a, b); }

    template <class B>
    XMERGE_FORCE_INLINE B max(const B& a, const B& b) noexcept { return xsimd::select(a < b, b, a); }
    XMERGE_FORCE_INLINE float max(float a, float b) noexcept { return std::max(a, b); }

    template <class C, class B>
    XMERGE_FORCE_INLINE B select(const C& cond, const B& a, const B& b) noexcept { return xsimd::select(cond, a, b); }
    XMERGE_FORCE_INLINE float select(bool cond, float a, float b) noexcept { return cond ? a : b; }
    ///@}

    /** @name Integer views of a float batch (same lanes), and their scalar twins */
    ///@{
    template <class B>
    struct integer_batches
    {
        using int_type = xsimd::batch<std::int32_t, typename B::arch_type>;
        using uint_type = xsimd::batch<std::uint32_t, typename B::arch_type>;
    };

    template <>
    struct integer_batches<float>
    {
        using int_type = std::int32_t;
        using uint_type = std::uint32_t;
    };

    template <class B>
    using int_batch_t = typename integer_batches<B>::int_type;
    template <class B>
    using uint_batch_t = typename integer_batches<B>::uint_type;

    /// The IEEE bit patterns of a float batch as signed integers.
    template <class B>
    XMERGE_FORCE_INLINE int_batch_t<B> bits_of(const B& v) noexcept { return xsimd::bitwise_cast<int_batch_t<B>>(v); }
    XMERGE_FORCE_INLINE std::int32_t bits_of(float v) noexcept
    {
        std::int32_t i;
        std::memcpy(&i, &v, sizeof i);
        return i;
    }

    /// A comparison of integer batches as a mask usable with float batches.
    template <class M>
    XMERGE_FORCE_INLINE auto float_mask(const M& m) noexcept { return xsimd::bool_cast(m); }
    XMERGE_FORCE_INLINE bool float_mask(bool m) noexcept { return m; }

    /// Bit l set when lane l of a float mask is true (lane 0 in bit 0).
    template <class M>
    XMERGE_FORCE_INLINE std::uint32_t lane_bits(const M& m) noexcept
    {
        if constexpr (std::is_same<M, bool>::value)
        {
            return m ? 1U : 0U;
        }
#if defined(__AVX512F__)
        else if constexpr (M::size == 16)
        {
            return static_cast<std::uint32_t>(static_cast<__mmask16>(m));
        }
#endif
#if defined(__AVX__)
        else if constexpr (M::size == 8)
        {
            return static_cast<std::uint32_t>(_mm256_movemask_ps(static_cast<__m256>(m)));
        }
#endif
#if defined(__SSE2__)
        else if constexpr (M::size == 4)
        {
            return static_cast<std::uint32_t>(_mm_movemask_ps(static_cast<__m128>(m)));
        }
#endif
        else
        {
            bool lanes_of[M::size];
            m.store_unaligned(lanes_of);
            std::uint32_t bits = 0;
            for (std::size_t l = 0; l < M::size; ++l)
            {
                bits |= static_cast<std::uint32_t>(lanes_of[l]) << l;
            }
            return bits;
        }
    }

    /** @name Integer batches and their scalar twin (std::int32_t) alike */
    ///@{
    template <class I>
    XMERGE_FORCE_INLINE void store_ints(std::int32_t* p, const I& v) noexcept
    {
        if constexpr (std::is_same<I, std::int32_t>::value)
        {
            *p = v;
        }
        else
        {
            v.store_aligned(p);
        }
    }

    template <class M, class I>
    XMERGE_FORCE_INLINE I select_ints(const M& m, const I& a, const I& b) noexcept
    {
        if constexpr (std::is_same<I, std::int32_t>::value)
        {
            return m ? a : b;
        }
        else
        {
            // through float lanes: xsimd 8's AVX-512BW integer select does not compile for 32-bit lanes everywhere
            using F = xsimd::batch<float, typename I::arch_type>;
            return xsimd::bitwise_cast<I>(xsimd::select(xsimd::bool_cast(m), xsimd::bitwise_cast<F>(a), xsimd::bitwise_cast<F>(b)));
        }
    }

    template <class I>
    XMERGE_FORCE_INLINE std::int64_t sum_ints(const I& v) noexcept
    {
        if constexpr (std::is_same<I, std::int32_t>::value)
        {
            return v;
        }
        else
        {
            return xsimd::hadd(v);
        }
    }

    /// Whether any lane of a mask is true.
    template <class M>
    XMERGE_FORCE_INLINE bool any(const M& m) noexcept
    {
        if constexpr (std::is_same<M, bool>::value)
        {
            return m;
        }
        else
        {
            return xsimd::any(m);
        }
    }

    /// Index of the lowest set bit of a non-zero mask.
    XMERGE_FORCE_INLINE unsigned lowest_bit(std::uint32_t m) noexcept
    {
#if defined(__GNUC__) || defined(__clang__)
        return static_cast<unsigned>(__builtin_ctz(m));
#else
        unsigned i = 0;
        while (!(m & 1U))
        {
            m >>= 1;
            ++i;
        }
        return i;
#endif
    }
    ///@}

    /// Lane numbers 0, 1, ..., width - 1 as floats.
    template <class B>
    XMERGE_FORCE_INLINE B lane_offsets() noexcept
    {
        if constexpr (std::is_same<B, float>::value)
        {
            return 0.0f;
        }
        else
        {
            alignas(64) static constexpr float numbers[64] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
                                                              22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43,
                                                              44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63};
            static_assert(B::size <= 64, "more lanes than the table holds");
            return B::load_aligned(numbers);
        }
    }
    ///@}
}

XMERGE_INTRINSICS_END

#endif
