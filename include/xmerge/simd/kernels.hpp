/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_SIMD_KERNELS_HPP
#define XMERGE_SIMD_KERNELS_HPP

#include <algorithm>
#include <cstddef>
#include <type_traits>

#include "../config.hpp"
#include "batch.hpp"

XMERGE_INTRINSICS_BEGIN

/**
 * @file
 * The one family of streaming kernels: stores, sums, dot products and maxima
 * over n elements, one batch at a time.
 *
 * An operand is
 *   - a `const float*` to n values (its last partial batch is copied into a
 *     zero-padded register-sized buffer before it is read),
 *   - a `float`, broadcast to every element, or
 *   - a *padded stream*: any object with `template <class B> B packet(std::size_t i) const`
 *     giving elements [i, i + width of B), readable for every i below n rounded
 *     up to whole batches (the engine's bound expressions are such streams).
 *
 * Every kernel is a template over the batch type B (`simd::batch`, or float
 * for the scalar twin). Each reduction has exactly one accumulation order,
 * so the same dot product gives the same bits whichever node asks for it:
 * four accumulators over groups of four batches, the remaining whole batches
 * into the first, the partial last batch summed lane by lane in float, and
 * the two parts added in double.
 */

namespace xmerge::simd
{
    /// out[i] = f(src[i]...) for i < n; `out` may be any pointer operand.
    template <class B = batch, class F, class... Src>
    void transform(std::size_t n, float* out, F&& f, const Src&... src) noexcept;

    /// out[i] = src[i] for i < n.
    template <class B = batch, class Src>
    void store(std::size_t n, float* out, const Src& src) noexcept;

    /// sum over i < n of f(src[i]...), as double (see the file comment for the order).
    template <class B = batch, class F, class... Src>
    double sum(std::size_t n, F&& f, const Src&... src) noexcept;

    /// sum over i < n of a[i] * b[i], each product accumulated with one rounding (fused multiply-add).
    template <class B = batch, class A, class C>
    double dot(std::size_t n, const A& a, const C& b) noexcept;

    /**
     * Maximum over i < n of f(src[i]...), starting from `identity` (a value no
     * result is below, 0 for magnitudes). NaN results are not propagated.
     */
    template <class B = batch, class F, class... Src>
    float maximum(std::size_t n, float identity, F&& f, const Src&... src) noexcept;

    namespace detail
    {
        /// A padded stream over memory that is readable in whole batches.
        struct memory_stream
        {
            const float* data;

            template <class B>
            XMERGE_FORCE_INLINE B packet(std::size_t i) const noexcept
            {
                return batch_traits<B>::load(data + i);
            }
        };

        struct constant_stream
        {
            float value;

            template <class B>
            XMERGE_FORCE_INLINE B packet(std::size_t) const noexcept
            {
                return batch_traits<B>::broadcast(value);
            }
        };

        /// The last r < width values of a pointer operand in a zero-padded register-sized buffer.
        template <class B>
        struct padded_tail
        {
            alignas(64) float data[batch_traits<B>::size] = {};

            padded_tail(const float* p, std::size_t r) noexcept { std::copy(p, p + r, data); }

            template <class BB>
            XMERGE_FORCE_INLINE BB packet(std::size_t) const noexcept
            {
                return batch_traits<BB>::load(data);
            }
        };

        /// The operand as a stream for the whole batches.
        XMERGE_FORCE_INLINE memory_stream stream_of(const float* p) noexcept { return {p}; }
        XMERGE_FORCE_INLINE memory_stream stream_of(float* p) noexcept { return {p}; }
        XMERGE_FORCE_INLINE constant_stream stream_of(float s) noexcept { return {s}; }
        template <class S, class = std::enable_if_t<!std::is_arithmetic<S>::value && !std::is_pointer<S>::value>>
        XMERGE_FORCE_INLINE const S& stream_of(const S& s) noexcept
        {
            return s;
        }

        /// The operand as a stream readable at the start of its last partial batch, `full` elements in.
        template <class B>
        XMERGE_FORCE_INLINE padded_tail<B> tail_of(const float* p, std::size_t full, std::size_t r) noexcept
        {
            return padded_tail<B>(p + full, r);
        }
        template <class B>
        XMERGE_FORCE_INLINE padded_tail<B> tail_of(float* p, std::size_t full, std::size_t r) noexcept
        {
            return padded_tail<B>(p + full, r);
        }
        template <class B>
        XMERGE_FORCE_INLINE constant_stream tail_of(float s, std::size_t, std::size_t) noexcept
        {
            return {s};
        }
        template <class B, class S, class = std::enable_if_t<!std::is_arithmetic<S>::value && !std::is_pointer<S>::value>>
        XMERGE_FORCE_INLINE const S& tail_of(const S& s, std::size_t, std::size_t) noexcept
        {
            return s;
        }

        // A tail stream is read at offset `full` when it is the operand itself, at 0 when it is a copy.
        template <class B, class T>
        XMERGE_FORCE_INLINE B tail_packet(const T& t, std::size_t full) noexcept
        {
            return t.template packet<B>(full);
        }
        template <class B, class BB>
        XMERGE_FORCE_INLINE B tail_packet(const padded_tail<BB>& t, std::size_t) noexcept
        {
            return t.template packet<B>(0);
        }

        /// The sum of the first r lanes of v, in float, lane by lane.
        template <class B>
        XMERGE_FORCE_INLINE float sum_lanes(const B& v, std::size_t r) noexcept
        {
            alignas(64) float lanes_of[batch_traits<B>::size];
            batch_traits<B>::store(lanes_of, v);
            float t = 0.0f;
            for (std::size_t l = 0; l < r; ++l)
            {
                t += lanes_of[l];
            }
            return t;
        }

        template <class B, class F, class... S>
        XMERGE_FORCE_INLINE B tail_value(F& f, std::size_t full, std::size_t r, const S&... src) noexcept
        {
            return [&](const auto&... t) { return f(tail_packet<B>(t, full)...); }(tail_of<B>(src, full, r)...);
        }
    }

    /********************
     * Implementation   *
     ********************/

    template <class B, class F, class... Src>
    inline void transform(std::size_t n, float* out, F&& f, const Src&... src) noexcept
    {
        using traits = batch_traits<B>;
        constexpr std::size_t w = traits::size;
        const std::size_t full = n - n % w;
        for (std::size_t i = 0; i < full; i += w)
        {
            traits::store(out + i, f(detail::stream_of(src).template packet<B>(i)...));
        }
        if (const std::size_t r = n - full)
        {
            alignas(64) float res[w];
            traits::store(res, detail::tail_value<B>(f, full, r, src...));
            std::copy(res, res + r, out + full);
        }
    }

    template <class B, class Src>
    inline void store(std::size_t n, float* out, const Src& src) noexcept
    {
        simd::transform<B>(n, out, [](const auto& x) { return x; }, src);
    }

    template <class B, class F, class... Src>
    inline double sum(std::size_t n, F&& f, const Src&... src) noexcept
    {
        using traits = batch_traits<B>;
        constexpr std::size_t w = traits::size;
        const B zero = traits::broadcast(0.0f);
        B acc0 = zero, acc1 = zero, acc2 = zero, acc3 = zero;
        const std::size_t full4 = n - n % (4 * w);
        std::size_t i = 0;
        for (; i < full4; i += 4 * w)
        {
            acc0 += f(detail::stream_of(src).template packet<B>(i)...);
            acc1 += f(detail::stream_of(src).template packet<B>(i + w)...);
            acc2 += f(detail::stream_of(src).template packet<B>(i + 2 * w)...);
            acc3 += f(detail::stream_of(src).template packet<B>(i + 3 * w)...);
        }
        const std::size_t full = n - n % w;
        for (; i < full; i += w)
        {
            acc0 += f(detail::stream_of(src).template packet<B>(i)...);
        }
        double s = static_cast<double>(traits::reduce_add((acc0 + acc1) + (acc2 + acc3)));
        if (const std::size_t r = n - full)
        {
            s += static_cast<double>(detail::sum_lanes(detail::tail_value<B>(f, full, r, src...), r));
        }
        return s;
    }

    template <class B, class A, class C>
    inline double dot(std::size_t n, const A& a, const C& b) noexcept
    {
        using traits = batch_traits<B>;
        constexpr std::size_t w = traits::size;
        const auto& sa = detail::stream_of(a);
        const auto& sb = detail::stream_of(b);
        const B zero = traits::broadcast(0.0f);
        B acc0 = zero, acc1 = zero, acc2 = zero, acc3 = zero;
        const std::size_t full4 = n - n % (4 * w);
        std::size_t i = 0;
        for (; i < full4; i += 4 * w)
        {
            acc0 = simd::fma(sa.template packet<B>(i), sb.template packet<B>(i), acc0);
            acc1 = simd::fma(sa.template packet<B>(i + w), sb.template packet<B>(i + w), acc1);
            acc2 = simd::fma(sa.template packet<B>(i + 2 * w), sb.template packet<B>(i + 2 * w), acc2);
            acc3 = simd::fma(sa.template packet<B>(i + 3 * w), sb.template packet<B>(i + 3 * w), acc3);
        }
        const std::size_t full = n - n % w;
        for (; i < full; i += w)
        {
            acc0 = simd::fma(sa.template packet<B>(i), sb.template packet<B>(i), acc0);
        }
        double s = static_cast<double>(traits::reduce_add((acc0 + acc1) + (acc2 + acc3)));
        if (const std::size_t r = n - full)
        {
            const auto product = [](const B& x, const B& y) { return x * y; };
            s += static_cast<double>(detail::sum_lanes(detail::tail_value<B>(product, full, r, a, b), r));
        }
        return s;
    }

    template <class B, class F, class... Src>
    inline float maximum(std::size_t n, float identity, F&& f, const Src&... src) noexcept
    {
        using traits = batch_traits<B>;
        constexpr std::size_t w = traits::size;
        B acc0 = traits::broadcast(identity), acc1 = acc0;
        const std::size_t full2 = n - n % (2 * w);
        std::size_t i = 0;
        for (; i < full2; i += 2 * w)
        {
            acc0 = simd::max(acc0, f(detail::stream_of(src).template packet<B>(i)...));
            acc1 = simd::max(acc1, f(detail::stream_of(src).template packet<B>(i + w)...));
        }
        const std::size_t full = n - n % w;
        for (; i < full; i += w)
        {
            acc0 = simd::max(acc0, f(detail::stream_of(src).template packet<B>(i)...));
        }
        alignas(64) float lanes_out[w];
        traits::store(lanes_out, simd::max(acc0, acc1));
        float m = identity;
        for (std::size_t l = 0; l < w; ++l)
        {
            m = std::max(m, lanes_out[l]);
        }
        if (const std::size_t r = n - full)
        {
            traits::store(lanes_out, detail::tail_value<B>(f, full, r, src...));
            for (std::size_t l = 0; l < r; ++l)
            {
                m = std::max(m, lanes_out[l]);
            }
        }
        return m;
    }
}

XMERGE_INTRINSICS_END

#endif
