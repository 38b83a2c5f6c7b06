/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_CORE_BOUND_HPP
#define XMERGE_CORE_BOUND_HPP

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <type_traits>

#include "../config.hpp"
#include "dtype.hpp"
#include "../simd/batch.hpp"
#include "../simd/convert.hpp"
#include "../simd/kernels.hpp"
#include "arena.hpp"

XMERGE_INTRINSICS_BEGIN

/**
 * @file
 * Per-chunk bound expressions and the fused loops that run them.
 *
 * For each chunk, an evaluator's bind() returns a small value (a "bound"
 * expression) that knows where the chunk's operands are: pointers into
 * parameter memory, converted copies in arena buffers, broadcast scalars.
 * A bound expression has `template <class B> B packet(std::size_t i) const`,
 * the elements [i, i + width of B) of the chunk, computed in registers. The
 * root's loop calls packet() once per batch, so the whole tree is fused into
 * a single pass; with B = float the same code is the scalar twin.
 *
 * Contract: packet(i) may be called for every i < padded_size(n), where n is
 * the chunk's element count. Leaves whose memory ends within the last batch
 * copy it into a zero-padded buffer, so the tail runs through the same batch
 * code as the rest of the chunk.
 */

namespace xmerge::detail
{
    /// n rounded up to whole production batches.
    constexpr std::size_t padded_size(std::size_t n) noexcept
    {
        return (n + simd::lanes - 1) / simd::lanes * simd::lanes;
    }

    /// Chunk values in memory.
    struct bound_pointer
    {
        const float* data;

        template <class B>
        XMERGE_FORCE_INLINE B packet(std::size_t i) const noexcept
        {
            return simd::batch_traits<B>::load(data + i);
        }
    };

    /// A batch of elements stored as float, bfloat16 or float16, as float32.
    template <class B>
    XMERGE_FORCE_INLINE B load_as_float(const float* p) noexcept
    {
        return simd::batch_traits<B>::load(p);
    }
    template <class B>
    XMERGE_FORCE_INLINE B load_as_float(const bfloat16* p) noexcept
    {
        return simd::load_widened<B>(p);
    }
    template <class B>
    XMERGE_FORCE_INLINE B load_as_float(const float16* p) noexcept
    {
        return simd::load_widened<B>(p);
    }

    /**
     * Calls f(tag) with a null pointer of the C++ element type of `type`
     * (const float*, const bfloat16* or const float16*), so a loop over many
     * inputs of one dtype can be compiled once per dtype.
     */
    template <class F>
    XMERGE_FORCE_INLINE decltype(auto) with_element_type(dtype type, F&& f)
    {
        switch (type)
        {
            case dtype::bfloat16:
                return f(static_cast<const bfloat16*>(nullptr));
            case dtype::float16:
                return f(static_cast<const float16*>(nullptr));
            default:
                return f(static_cast<const float*>(nullptr));
        }
    }

    /// Bytes ahead of the current position that input streams are prefetched.
    constexpr std::size_t prefetch_distance = 1024;

    XMERGE_FORCE_INLINE void prefetch_ahead(const char* p) noexcept
    {
#if defined(__GNUC__) || defined(__clang__)
        __builtin_prefetch(p + prefetch_distance, 0, 3);
#else
        (void)p;
#endif
    }

    /// Chunk values in parameter memory of a run-time dtype, widened in registers.
    struct bound_input
    {
        const void* data;  ///< element 0 of the chunk
        dtype type;

        template <class B>
        XMERGE_FORCE_INLINE B packet(std::size_t i) const noexcept
        {
            // Long expressions keep few loads in flight; asking for memory ahead keeps the stream moving.
            prefetch_ahead(static_cast<const char*>(data) + i * size_of(type));
            // The branch is the same for every packet of a chunk, so it predicts perfectly.
            return with_element_type(type, [&](auto tag) XMERGE_LAMBDA_INLINE { return load_as_float<B>(static_cast<decltype(tag)>(data) + i); });
        }
    };

    /// One value broadcast to every element.
    struct bound_constant
    {
        float value;

        template <class B>
        XMERGE_FORCE_INLINE B packet(std::size_t) const noexcept
        {
            return simd::batch_traits<B>::broadcast(value);
        }
    };

    /// A padded arena buffer for a chunk of n values written by the caller.
    inline float* padded_buffer(std::size_t n, arena& a)
    {
        float* buf = a.buffer();
        std::fill(buf + n, buf + padded_size(n), 0.0f);
        return buf;
    }

    /// n floats of memory as an operand readable up to padded_size(n).
    inline bound_pointer bind_memory(const float* p, std::size_t n, arena& a)
    {
        if (n % simd::lanes == 0)
        {
            return {p};
        }
        float* buf = padded_buffer(n, a);
        std::memcpy(buf, p, n * sizeof(float));
        return {buf};
    }

    /**
     * A bound operand's n values as float32 memory readable up to
     * padded_size(n): the operand's own memory when it is float32 memory
     * already, else an arena buffer it is evaluated into. What raw-pointer
     * kernels read.
     */
    template <class Bound>
    const float* chunk_values(std::size_t n, const Bound& b, arena& a)
    {
        if constexpr (std::is_same<Bound, bound_pointer>::value)
        {
            return b.data;
        }
        else
        {
            if constexpr (std::is_same<Bound, bound_input>::value)
            {
                if (b.type == dtype::float32)
                {
                    return static_cast<const float*>(b.data);
                }
            }
            float* buf = padded_buffer(n, a);
            simd::store(n, buf, b);
            return buf;
        }
    }

    /// chunk_values() of the k bound terms of a list, as an array of pointers in arena memory.
    template <class Bound>
    const float** list_chunk_values(std::size_t n, const Bound* terms, std::size_t k, arena& a)
    {
        const float** values = a.allocate<const float*>(k);
        for (std::size_t i = 0; i < k; ++i)
        {
            values[i] = detail::chunk_values(n, terms[i], a);
        }
        return values;
    }

    /// Elements [0, n) of `dst` (stored as `type`) = the bound expression's
    /// values, rounded to the dtype in registers.
    template <class B = simd::batch, class Bound>
    void store_packets_as(dtype type, std::size_t n, void* dst, const Bound& b) noexcept
    {
        using traits = simd::batch_traits<B>;
        constexpr std::size_t w = traits::size;
        const auto narrow_loop = [&](auto* out)
        {
            const std::size_t full = n - n % w;
            for (std::size_t i = 0; i < full; i += w)
            {
                simd::store_narrowed<B>(out + i, b.template packet<B>(i));
            }
            if (const std::size_t r = n - full)
            {
                alignas(64) float tail[w];
                traits::store(tail, b.template packet<B>(full));
                simd::scalar::narrow(tail, out + full, r);
            }
        };
        switch (type)
        {
            case dtype::float32:
                simd::store<B>(n, static_cast<float*>(dst), b);
                break;
            case dtype::bfloat16:
                narrow_loop(static_cast<bfloat16*>(dst));
                break;
            case dtype::float16:
                narrow_loop(static_cast<float16*>(dst));
                break;
        }
    }
}

XMERGE_INTRINSICS_END

#endif
