/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_VARIANCE_HPP
#define XMERGE_OPS_VARIANCE_HPP

#include <cstddef>
#include <utility>

#include "../config.hpp"
#include "../simd/batch.hpp"
#include "list.hpp"
#include "list_node.hpp"
#include "scalar.hpp"

namespace xmerge
{
    namespace detail
    {
        /// (1 / K) sum_k (t_k - mean)^2 from the mean, in two loops (the mean of squares cancels badly).
        struct variance_fn
        {
            static constexpr const char* what = "a variance";

            template <class Terms>
            XMERGE_FORCE_INLINE auto operator()(const Terms& t) const noexcept
            {
                using B = typename Terms::batch;
                const B inv(1.0f / static_cast<float>(t.size()));
                B mean = t[0];
                for (std::size_t k = 1; k < t.size(); ++k)
                {
                    mean += t[k];
                }
                mean *= inv;
                B acc(0.0f);
                for (std::size_t k = 0; k < t.size(); ++k)
                {
                    const B d = t[k] - mean;
                    acc = simd::fma(d, d, acc);
                }
                return acc * inv;
            }
        };
    }

    /// Per element, the population variance across K tensors.
    template <class E>
    using variance_node = list_node<detail::variance_fn, scalar_constant, E>;

    /** @name Per-element population variance across the terms
     *  One overload per reference kind, so that xtensor's variance never
     *  wins when both namespaces are in use.
     */
    ///@{
    template <class E>
    auto variance(const expression_list<E>& terms)
    {
        return xmerge::combine(detail::variance_fn{}, terms);
    }
    template <class E>
    auto variance(expression_list<E>& terms)
    {
        return xmerge::variance(std::as_const(terms));
    }
    template <class E>
    auto variance(expression_list<E>&& terms)
    {
        return xmerge::variance(std::as_const(terms));
    }
    ///@}
}

#endif
