/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_CORE_DTYPE_HPP
#define XMERGE_CORE_DTYPE_HPP

#include <cstddef>
#include <string>
#include <type_traits>

#include "half.hpp"

namespace xmerge
{
    /// Element types the engine reads and writes. Arithmetic is float32.
    enum class dtype
    {
        float32,
        bfloat16,
        float16
    };

    /// Bytes per element.
    constexpr std::size_t size_of(dtype t) noexcept;

    /// Lower-case name ("float32", "bfloat16", "float16").
    inline const char* name_of(dtype t) noexcept;

    /// The dtype of a C++ element type, when it has one.
    template <class T>
    struct dtype_of;

    template <class T>
    constexpr bool has_dtype_v = false;

    /********************
     * Implementation   *
     ********************/

    constexpr std::size_t size_of(dtype t) noexcept
    {
        return t == dtype::float32 ? 4 : 2;
    }

    inline const char* name_of(dtype t) noexcept
    {
        switch (t)
        {
            case dtype::float32:
                return "float32";
            case dtype::bfloat16:
                return "bfloat16";
            case dtype::float16:
                return "float16";
        }
        return "unknown";
    }

    template <>
    struct dtype_of<float> : std::integral_constant<dtype, dtype::float32>
    {
    };

    template <>
    struct dtype_of<bfloat16> : std::integral_constant<dtype, dtype::bfloat16>
    {
    };

    template <>
    struct dtype_of<float16> : std::integral_constant<dtype, dtype::float16>
    {
    };

    template <>
    constexpr bool has_dtype_v<float> = true;
    template <>
    constexpr bool has_dtype_v<bfloat16> = true;
    template <>
    constexpr bool has_dtype_v<float16> = true;
}

#endif
