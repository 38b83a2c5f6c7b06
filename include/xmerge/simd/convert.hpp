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

#if defined(__SSE2__) || defined(__AVX2__) || defined(__AVX512F__) || defined(__F16C__)
#include <immintrin.h>
#endif

#include "../core/dtype.hpp"
#include "../config.hpp"
#include "../core/half.hpp"
#include "batch.hpp"

XMERGE_INTRINSICS_BEGIN

/**
 * @file
 * Bulk conversion between the storage dtypes and float32.
 *
 * Widening is exact. Narrowing rounds to nearest even; NaNs stay NaN (quiet),
 * infinities and signed zeros are kept, float16 overflows to infinity. The
 * vector paths (AVX-512F, AVX2 + F16C, SSE2) are chosen at compile time from
 * the including code's flags and give the same bits as the scalar twin in
 * `xmerge::simd::scalar`.
 */

namespace xmerge::simd
{
    /** @name Widening to float32 (exact) */
    ///@{
    inline void widen(const bfloat16* src, float* dst, std::size_t n) noexcept;
    inline void widen(const float16* src, float* dst, std::size_t n) noexcept;
    ///@}

    /** @name Narrowing from float32 (round to nearest even) */
    ///@{
    inline void narrow(const float* src, bfloat16* dst, std::size_t n) noexcept;
    inline void narrow(const float* src, float16* dst, std::size_t n) noexcept;
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
    inline void load_as_float(dtype type, const void* src, std::size_t offset, std::size_t n, float* dst) noexcept;

    /// Elements [offset, offset + n) of `dst` (stored as `type`) = src[0, n), rounded.
    inline void store_from_float(dtype type, const float* src, void* dst, std::size_t offset, std::size_t n) noexcept;

    /// One element loop per conversion: the reference the vector paths are tested against.
    namespace scalar
    {
        inline void widen(const bfloat16* src, float* dst, std::size_t n) noexcept;
        inline void widen(const float16* src, float* dst, std::size_t n) noexcept;
        inline void narrow(const float* src, bfloat16* dst, std::size_t n) noexcept;
        inline void narrow(const float* src, float16* dst, std::size_t n) noexcept;
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
#if defined(__AVX512F__)
        // Round-to-nearest-even of 16 floats to bf16 bits in the low halves of 32-bit lanes.
        inline __m512i bf16_round(__m512 x) noexcept
        {
            const __m512i u = _mm512_castps_si512(x);
            const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
            const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb), 16);
            const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
            const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
            return _mm512_mask_blend_epi32(nan, rounded, quiet);
        }
#elif defined(__AVX2__)
        inline __m256i bf16_round(__m256 x) noexcept
        {
            const __m256i u = _mm256_castps_si256(x);
            const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
            const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), lsb), 16);
            const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
            const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
            return _mm256_blendv_epi8(rounded, quiet, nan);
        }
#elif defined(__SSE2__)
        inline __m128i bf16_round(__m128 x) noexcept
        {
            const __m128i u = _mm_castps_si128(x);
            const __m128i lsb = _mm_and_si128(_mm_srli_epi32(u, 16), _mm_set1_epi32(1));
            const __m128i rounded = _mm_srli_epi32(_mm_add_epi32(_mm_add_epi32(u, _mm_set1_epi32(0x7FFF)), lsb), 16);
            const __m128i quiet = _mm_or_si128(_mm_srli_epi32(u, 16), _mm_set1_epi32(0x40));
            const __m128i nan = _mm_castps_si128(_mm_cmpunord_ps(x, x));
            return _mm_or_si128(_mm_and_si128(nan, quiet), _mm_andnot_si128(nan, rounded));
        }

        // Packs the low 16 bits of two vectors of 32-bit lanes: sign-extend then
        // signed-saturating pack, which keeps every 16-bit pattern unchanged.
        inline __m128i pack_low16(__m128i a, __m128i b) noexcept
        {
            a = _mm_srai_epi32(_mm_slli_epi32(a, 16), 16);
            b = _mm_srai_epi32(_mm_slli_epi32(b, 16), 16);
            return _mm_packs_epi32(a, b);
        }
#endif
    }

    inline void widen(const bfloat16* src, float* dst, std::size_t n) noexcept
    {
        std::size_t i = 0;
#if defined(__AVX512F__)
        for (; i + 16 <= n; i += 16)
        {
            const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
            _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
        }
#elif defined(__AVX2__)
        for (; i + 8 <= n; i += 8)
        {
            const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
            _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
        }
#elif defined(__SSE2__)
        const __m128i zero = _mm_setzero_si128();
        for (; i + 8 <= n; i += 8)
        {
            const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
            _mm_storeu_ps(dst + i, _mm_castsi128_ps(_mm_unpacklo_epi16(zero, h)));
            _mm_storeu_ps(dst + i + 4, _mm_castsi128_ps(_mm_unpackhi_epi16(zero, h)));
        }
#endif
        scalar::widen(src + i, dst + i, n - i);
    }

    inline void narrow(const float* src, bfloat16* dst, std::size_t n) noexcept
    {
        std::size_t i = 0;
#if defined(__AVX512F__)
        for (; i + 16 <= n; i += 16)
        {
            const __m256i h = _mm512_cvtepi32_epi16(detail::bf16_round(_mm512_loadu_ps(src + i)));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), h);
        }
#elif defined(__AVX2__)
        for (; i + 16 <= n; i += 16)
        {
            const __m256i a = detail::bf16_round(_mm256_loadu_ps(src + i));
            const __m256i b = detail::bf16_round(_mm256_loadu_ps(src + i + 8));
            // packus works per 128-bit lane; the permute restores element order
            const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xD8);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), packed);
        }
#elif defined(__SSE2__)
        for (; i + 8 <= n; i += 8)
        {
            const __m128i a = detail::bf16_round(_mm_loadu_ps(src + i));
            const __m128i b = detail::bf16_round(_mm_loadu_ps(src + i + 4));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), detail::pack_low16(a, b));
        }
#endif
        scalar::narrow(src + i, dst + i, n - i);
    }

    inline void widen(const float16* src, float* dst, std::size_t n) noexcept
    {
        std::size_t i = 0;
#if defined(__AVX512F__)
        for (; i + 16 <= n; i += 16)
        {
            _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
        }
#elif defined(__F16C__)
        for (; i + 8 <= n; i += 8)
        {
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
        }
#endif
        scalar::widen(src + i, dst + i, n - i);
    }

    inline void narrow(const float* src, float16* dst, std::size_t n) noexcept
    {
        std::size_t i = 0;
#if defined(__AVX512F__)
        for (; i + 16 <= n; i += 16)
        {
            const __m256i h = _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), h);
        }
#elif defined(__F16C__)
        for (; i + 8 <= n; i += 8)
        {
            const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
        }
#endif
        scalar::narrow(src + i, dst + i, n - i);
    }

    namespace detail
    {
        // Fallback for a register width without a dedicated path: through memory.
        template <class B, class H>
        B widen_through_memory(const H* p) noexcept
        {
            alignas(64) float tmp[batch_traits<B>::size];
            scalar::widen(p, tmp, batch_traits<B>::size);
            return batch_traits<B>::load(tmp);
        }

        template <class B, class H>
        void narrow_through_memory(H* p, const B& v) noexcept
        {
            alignas(64) float tmp[batch_traits<B>::size];
            batch_traits<B>::store(tmp, v);
            scalar::narrow(tmp, p, batch_traits<B>::size);
        }
    }

    template <class B>
    inline B load_widened(const bfloat16* p) noexcept
    {
        if constexpr (std::is_same<B, float>::value)
        {
            return bf16_bits_to_float(p->bits);
        }
#if defined(__AVX512F__)
        else if constexpr (batch_traits<B>::size == 16)
        {
            const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
            return B(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
        }
#endif
#if defined(__AVX2__)
        else if constexpr (batch_traits<B>::size == 8)
        {
            const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
            return B(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
        }
#endif
#if defined(__SSE2__)
        else if constexpr (batch_traits<B>::size == 4)
        {
            const __m128i h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
            return B(_mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), h)));
        }
#endif
        else
        {
            return detail::widen_through_memory<B>(p);
        }
    }

    template <class B>
    inline B load_widened(const float16* p) noexcept
    {
        if constexpr (std::is_same<B, float>::value)
        {
            return f16_bits_to_float(p->bits);
        }
#if defined(__AVX512F__)
        else if constexpr (batch_traits<B>::size == 16)
        {
            return B(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
        }
#endif
#if defined(__F16C__) && defined(__AVX__)
        else if constexpr (batch_traits<B>::size == 8)
        {
            return B(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
        }
#endif
        else
        {
            return detail::widen_through_memory<B>(p);
        }
    }

    template <class B>
    inline void store_narrowed(bfloat16* p, const B& v) noexcept
    {
        if constexpr (std::is_same<B, float>::value)
        {
            p->bits = float_to_bf16_bits(v);
        }
#if defined(__AVX512F__)
        else if constexpr (batch_traits<B>::size == 16)
        {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(detail::bf16_round(v)));
        }
#elif defined(__AVX2__)
        else if constexpr (batch_traits<B>::size == 8)
        {
            const __m256i r = detail::bf16_round(v);
            _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)));
        }
#elif defined(__SSE2__)
        else if constexpr (batch_traits<B>::size == 4)
        {
            const __m128i r = detail::bf16_round(v);
            _mm_storel_epi64(reinterpret_cast<__m128i*>(p), detail::pack_low16(r, r));
        }
#endif
        else
        {
            detail::narrow_through_memory(p, v);
        }
    }

    template <class B>
    inline void store_narrowed(float16* p, const B& v) noexcept
    {
        if constexpr (std::is_same<B, float>::value)
        {
            p->bits = float_to_f16_bits(v);
        }
#if defined(__AVX512F__)
        else if constexpr (batch_traits<B>::size == 16)
        {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        }
#endif
#if defined(__F16C__) && defined(__AVX__)
        else if constexpr (batch_traits<B>::size == 8)
        {
            _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        }
#endif
        else
        {
            detail::narrow_through_memory(p, v);
        }
    }

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
                widen(static_cast<const bfloat16*>(src) + offset, dst, n);
                break;
            case dtype::float16:
                widen(static_cast<const float16*>(src) + offset, dst, n);
                break;
        }
    }

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
                narrow(src, static_cast<bfloat16*>(dst) + offset, n);
                break;
            case dtype::float16:
                narrow(src, static_cast<float16*>(dst) + offset, n);
                break;
        }
    }
}

XMERGE_INTRINSICS_END

#endif
