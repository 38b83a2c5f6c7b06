/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_LERP_HPP
#define XMERGE_OPS_LERP_HPP

#include <utility>

#include "../simd/batch.hpp"
#include "map.hpp"

namespace xmerge
{
    namespace detail
    {
        struct lerp_fn
        {
            template <class T>
            T operator()(const T& a, const T& b, const T& t) const noexcept
            {
                return simd::fma(t, b, (T(1.0f) - t) * a);
            }
        };
    }

    /**
     * (1 - t) * a + t * b, element-wise.
     *
     * t is a number, a scalar expression, or a tensor expression of a's
     * shape (a per-element weight). t = 0 gives a and t = 1 gives b exactly.
     */
    template <class A, class B, class T>
    auto lerp(A&& a, B&& b, T&& t)
    {
        return xmerge::map(detail::lerp_fn{}, std::forward<A>(a), std::forward<B>(b), std::forward<T>(t));
    }
}

#endif
