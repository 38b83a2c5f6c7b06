/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_SIMD_CONVERT_HPP
#define XMERGE_SIMD_CONVERT_HPP

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

// <immintrin.h> declares every x86 extension; the SSE2-only default needs just <emmintrin.h>.
#if defined(__AVX__)
#include <immintrin.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../config.hpp"
#include "../core/dtype.hpp"
#include "../core/half.hpp"
#include "batch.hpp"

XMERGE_INTRINSICS_BEGIN

/**
 * @file
 * Conversion between the storage dtypes and float32.
 *
 * Widening is exact. Narrowing rounds to nearest even; NaNs stay NaN (quiet),
 * infinities and signed zeros are kept, float16 overflows to infinity. The
 * conversions are written once, as integer arithmetic on the 32-bit lanes of
 * a batch (`xsimd::batch<int32_t>`); the only target-specific code moves
 * 16-bit values in and out of those lanes (xsimd 8 has no widening load or
 * narrowing store of 16-bit lanes), plus the float16 instructions of F16C and
 * AVX-512 where the target has them. Every path gives the same bits as the
 * scalar twin in `xmerge::simd::scalar`.
 */

namespace xmerge::simd
{
    /** @name Bulk conversions
     *  H is bfloat16 or float16. Function templates, so that a translation
     *  unit that converts nothing compiles none of the batch code.
     */
    ///@{
    /// dst[0, n) = src[0, n) widened to float32 (exact).
    template <class H, class = std::enable_if_t<std::is_same<H, bfloat16>::value || std::is_same<H, float16>::value>>
    void widen(const H* src, float* dst, std::size_t n) noexcept;

    /// dst[0, n) = src[0, n) rounded to nearest even.
    template <class H, class = std::enable_if_t<std::is_same<H, bfloat16>::value || std::is_same<H, float16>::value>>
    void narrow(const float* src, H* dst, std::size_t n) noexcept;
    ///@}

    /** @name One register at a time (B = simd::batch or float)
     *  Used inside fused loops so that conversion happens in registers.
     */
    ///@{
    template <class B>
    B load_widened(const bfloat16* p) noexcept;
    template <class B>
    B load_widened(const float16* p) noexcept;
    template <class B>
    void store_narrowed(bfloat16* p, const B& v) noexcept;
    template <class B>
    void store_narrowed(float16* p, const B& v) noexcept;
    ///@}

    /// dst[0, n) = float32 values of elements [offset, offset + n) of `src`, stored as `type`.
    template <class = void>
    void load_as_float(dtype type, const void* src, std::size_t offset, std::size_t n, float* dst) noexcept;

    /// Elements [offset, offset + n) of `dst` (stored as `type`) = src[0, n), rounded.
    template <class = void>
    void store_from_float(dtype type, const float* src, void* dst, std::size_t offset, std::size_t n) noexcept;

    /// One element at a time: the reference the batch paths are tested against.
    namespace scalar
    {
        inline void widen(const bfloat16* src, float* dst, std::size_t n) noexcept;
        inline void widen(const float16* src, float* dst, std::size_t n) noexcept;
        inline void narrow(const float* src, bfloat16* dst, std::size_t n) noexcept;
        inline void narrow(const float* src, float16* dst, std::size_t n) noexcept;
    }

    namespace detail
    {
        /// 16-bit values zero-extended into the 32-bit lanes of an integer batch I.
        template <class I>
        I load_u16(const std::uint16_t* p) noexcept;

        /// The low 16 bits of every 32-bit lane of v, stored in lane order (the narrowing pack).
        template <class I>
        void store_u16(std::uint16_t* p, const I& v) noexcept;

        /// Logical right shift of the 32-bit lanes of a signed batch.
        template <class I>
        I shift_right(const I& v, int n) noexcept;

        /** @name The conversions on the bit patterns in 32-bit lanes */
        ///@{
        template <class I>
        I bf16_from_float_bits(const I& u) noexcept;
        template <class B>
        int_batch_t<B> f16_bits_of(const B& v) noexcept;
        template <class B>
        B float_from_f16_bits(const int_batch_t<B>& h) noexcept;
        ///@}
    }

    /********************
     * Implementation   *
     ********************/

    namespace scalar
    {
        inline void widen(const bfloat16* src, float* dst, std::size_t n) noexcept
        {
            for (std::size_t i = 0; i < n; ++i)
            {
                dst[i] = bf16_bits_to_float(src[i].bits);
            }
        }

        inline void widen(const float16* src, float* dst, std::size_t n) noexcept
        {
            for (std::size_t i = 0; i < n; ++i)
            {
                dst[i] = f16_bits_to_float(src[i].bits);
            }
        }

        inline void narrow(const float* src, bfloat16* dst, std::size_t n) noexcept
        {
            for (std::size_t i = 0; i < n; ++i)
            {
                dst[i].bits = float_to_bf16_bits(src[i]);
            }
        }

        inline void narrow(const float* src, float16* dst, std::size_t n) noexcept
        {
            for (std::size_t i = 0; i < n; ++i)
            {
                dst[i].bits = float_to_f16_bits(src[i]);
            }
        }
    }

    namespace detail
    {
        template <class I>
        XMERGE_FORCE_INLINE I load_u16(const std::uint16_t* p) noexcept
        {
#if defined(__AVX512F__)
            if constexpr (I::size == 16)
            {
                return I(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
            }
#endif
#if defined(__AVX2__)
            if constexpr (I::size == 8)
            {
                return I(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
            }
#endif
#if defined(__SSE2__)
            if constexpr (I::size == 4)
            {
                return I(_mm_unpacklo_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)), _mm_setzero_si128()));
            }
#endif
            alignas(64) std::int32_t lanes_of[I::size];
            for (std::size_t l = 0; l < I::size; ++l)
            {
                lanes_of[l] = p[l];
            }
            return I::load_aligned(lanes_of);
        }

        template <class I>
        XMERGE_FORCE_INLINE void store_u16(std::uint16_t* p, const I& v) noexcept
        {
#if defined(__AVX512F__)
            if constexpr (I::size == 16)
            {
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(v));
                return;
            }
#endif
#if defined(__AVX2__)
            if constexpr (I::size == 8)
            {
                // every lane holds a 16-bit value, so unsigned saturation keeps it
                const __m256i x = v;
                _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm_packus_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1)));
                return;
            }
#endif
#if defined(__SSE2__)
            if constexpr (I::size == 4)
            {
                // sign-extend the low halves, then a signed-saturating pack keeps every 16-bit pattern
                const __m128i x = _mm_srai_epi32(_mm_slli_epi32(v, 16), 16);
                _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packs_epi32(x, x));
                return;
            }
#endif
            alignas(64) std::int32_t lanes_of[I::size];
            v.store_aligned(lanes_of);
            for (std::size_t l = 0; l < I::size; ++l)
            {
                p[l] = static_cast<std::uint16_t>(lanes_of[l]);
            }
        }

        template <class I>
        XMERGE_FORCE_INLINE I shift_right(const I& v, int n) noexcept
        {
            using U = xsimd::batch<std::uint32_t, typename I::arch_type>;
            return xsimd::bitwise_cast<I>(xsimd::bitwise_cast<U>(v) >> n);
        }

        // (u + 0x7FFF + lsb) >> 16, and NaN -> its top half with the quiet bit set
        template <class I>
        XMERGE_FORCE_INLINE I bf16_from_float_bits(const I& u) noexcept
        {
            const I rounded = detail::shift_right(u + I(0x7FFF) + (detail::shift_right(u, 16) & I(1)), 16);
            const I quiet = detail::shift_right(u, 16) | I(0x40);
            return simd::select_ints((u & I(0x7FFFFFFF)) > I(0x7F800000), quiet, rounded);
        }

        template <class B>
        XMERGE_FORCE_INLINE int_batch_t<B> f16_bits_of(const B& v) noexcept
        {
            using I = int_batch_t<B>;
            const I u = simd::bits_of(v);
            const I sign = detail::shift_right(u, 16) & I(0x8000);
            const I a = u & I(0x7FFFFFFF);
            // normal half range: rebias the exponent, round 13 bits away (a carry into infinity is right)
            const I r = a - I(0x38000000);
            const I normal = detail::shift_right(r + I(0x0FFF) + (detail::shift_right(r, 13) & I(1)), 13);
            // below the normal range: |x| + 0.5 rounds, once and to nearest even, to a multiple of 2^-24
            const I subnormal = simd::bits_of(simd::abs(v) + B(0.5f)) - I(0x3F000000);
            const I nan = I(0x7E00) | (detail::shift_right(a, 13) & I(0x03FF));
            I h = simd::select_ints(a >= I(0x38800000), normal, subnormal);
            h = simd::select_ints(a >= I(0x47800000), I(0x7C00), h);
            h = simd::select_ints(a > I(0x7F800000), nan, h);
            return h | sign;
        }

        template <class B>
        XMERGE_FORCE_INLINE B float_from_f16_bits(const int_batch_t<B>& h) noexcept
        {
            using I = int_batch_t<B>;
            const I sign = (h & I(0x8000)) << 16;
            const I em = h & I(0x7FFF);
            const I mantissa = h & I(0x03FF);
            const I normal = (em << 13) + I(112 << 23);
            // infinity, or NaN made quiet as the F16C instructions do
            const I special = I(0x7F800000) | (mantissa << 13) | simd::select_ints(mantissa != I(0), I(0x00400000), I(0));
            // zero or subnormal: mantissa * 2^-24 is exact in float32
            const I tiny = simd::bits_of(xsimd::batch_cast<float>(em) * B(5.9604644775390625e-8f));
            I bits = simd::select_ints(em >= I(0x0400), normal, tiny);
            bits = simd::select_ints(em >= I(0x7C00), special, bits);
            return xsimd::bitwise_cast<B>(bits | sign);
        }
    }

    template <class B>
    XMERGE_FORCE_INLINE B load_widened(const bfloat16* p) noexcept
    {
        if constexpr (std::is_same<B, float>::value)
        {
            return bf16_bits_to_float(p->bits);
        }
        else
        {
            using I = int_batch_t<B>;
            return xsimd::bitwise_cast<B>(detail::load_u16<I>(reinterpret_cast<const std::uint16_t*>(p)) << 16);
        }
    }

    template <class B>
    XMERGE_FORCE_INLINE B load_widened(const float16* p) noexcept
    {
        if constexpr (std::is_same<B, float>::value)
        {
            return f16_bits_to_float(p->bits);
        }
#if defined(__AVX512F__)
        else if constexpr (B::size == 16)
        {
            return B(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
        }
#endif
#if defined(__F16C__) && defined(__AVX__)
        else if constexpr (B::size == 8)
        {
            return B(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
        }
#endif
        else
        {
            return detail::float_from_f16_bits<B>(detail::load_u16<int_batch_t<B>>(reinterpret_cast<const std::uint16_t*>(p)));
        }
    }

    template <class B>
    XMERGE_FORCE_INLINE void store_narrowed(bfloat16* p, const B& v) noexcept
    {
        if constexpr (std::is_same<B, float>::value)
        {
            p->bits = float_to_bf16_bits(v);
        }
        else
        {
            detail::store_u16(reinterpret_cast<std::uint16_t*>(p), detail::bf16_from_float_bits(simd::bits_of(v)));
        }
    }

    template <class B>
    XMERGE_FORCE_INLINE void store_narrowed(float16* p, const B& v) noexcept
    {
        if constexpr (std::is_same<B, float>::value)
        {
            p->bits = float_to_f16_bits(v);
        }
#if defined(__AVX512F__)
        else if constexpr (B::size == 16)
        {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        }
#endif
#if defined(__F16C__) && defined(__AVX__)
        else if constexpr (B::size == 8)
        {
            _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        }
#endif
        else
        {
            detail::store_u16(reinterpret_cast<std::uint16_t*>(p), detail::f16_bits_of(v));
        }
    }

    template <class H, class>
    inline void widen(const H* src, float* dst, std::size_t n) noexcept
    {
        // whole batches through the register conversions, the rest through the scalar twin
        std::size_t i = 0;
        for (; i + lanes <= n; i += lanes)
        {
            batch_traits<batch>::store(dst + i, simd::load_widened<batch>(src + i));
        }
        simd::scalar::widen(src + i, dst + i, n - i);
    }

    template <class H, class>
    inline void narrow(const float* src, H* dst, std::size_t n) noexcept
    {
        std::size_t i = 0;
        for (; i + lanes <= n; i += lanes)
        {
            simd::store_narrowed<batch>(dst + i, batch_traits<batch>::load(src + i));
        }
        simd::scalar::narrow(src + i, dst + i, n - i);
    }

    template <class>
    inline void load_as_float(dtype type, const void* src, std::size_t offset, std::size_t n, float* dst) noexcept
    {
        switch (type)
        {
            case dtype::float32:
                if (n != 0)  // src may be null for an empty tensor
                {
                    std::memcpy(dst, static_cast<const float*>(src) + offset, n * sizeof(float));
                }
                break;
            case dtype::bfloat16:
                simd::widen(static_cast<const bfloat16*>(src) + offset, dst, n);
                break;
            case dtype::float16:
                simd::widen(static_cast<const float16*>(src) + offset, dst, n);
                break;
        }
    }

    template <class>
    inline void store_from_float(dtype type, const float* src, void* dst, std::size_t offset, std::size_t n) noexcept
    {
        switch (type)
        {
            case dtype::float32:
                if (n != 0 && static_cast<float*>(dst) + offset != src)
                {
                    std::memcpy(static_cast<float*>(dst) + offset, src, n * sizeof(float));
                }
                break;
            case dtype::bfloat16:
                simd::narrow(src, static_cast<bfloat16*>(dst) + offset, n);
                break;
            case dtype::float16:
                simd::narrow(src, static_cast<float16*>(dst) + offset, n);
                break;
        }
    }
}

XMERGE_INTRINSICS_END

#endif
