/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_WEIGHTED_SUM_HPP
#define XMERGE_OPS_WEIGHTED_SUM_HPP

#include <cstddef>
#include <utility>
#include <vector>

#include "../config.hpp"
#include "../simd/batch.hpp"
#include "arithmetic.hpp"
#include "list.hpp"
#include "list_node.hpp"
#include "scalar.hpp"

namespace xmerge
{
    namespace detail
    {
        /// sum_k w_k t_k in term order: w_0 t_0, then one fused multiply-add per further term.
        struct weighted_sum_fn
        {
            static constexpr const char* what = "a weighted sum";

            template <class Terms>
            XMERGE_FORCE_INLINE auto operator()(const Terms& t) const noexcept
            {
                auto acc = t.weight(0) * t[0];
                for (std::size_t k = 1; k < t.size(); ++k)
                {
                    acc = simd::fma(t.weight(k), t[k], acc);
                }
                return acc;
            }
        };
    }

    /// sum_k w_k * e_k over a run-time list of K tensor expressions; weights are numbers or scalar expressions.
    template <class E, class W = scalar_constant>
    using weighted_sum_node = list_node<detail::weighted_sum_fn, W, E>;

    /// sum_k w_k * terms[k]; throws parameter_error on an empty list, a weight
    /// count that differs from the term count, or a non-finite weight.
    template <class E>
    auto weighted_sum(const expression_list<E>& terms, const std::vector<double>& weights)
    {
        return xmerge::combine_weighted(detail::weighted_sum_fn{}, weights, terms);
    }

    /// Same, with weights that are scalar expressions.
    template <class E, class S>
    auto weighted_sum(const expression_list<E>& terms, const expression_list<S>& weights)
    {
        return xmerge::combine_weighted(detail::weighted_sum_fn{}, weights, terms);
    }

    /** @name Sum and mean of a list
     *  The overloads for each reference kind make these a better match than
     *  xtensor's reducers of the same name when both namespaces are in use.
     */
    ///@{
    /// sum_k terms[k].
    template <class E>
    auto sum(const expression_list<E>& terms)
    {
        return xmerge::weighted_sum(terms, std::vector<double>(terms.size(), 1.0));
    }
    template <class E>
    auto sum(expression_list<E>& terms)
    {
        return xmerge::sum(std::as_const(terms));
    }
    template <class E>
    auto sum(expression_list<E>&& terms)
    {
        return xmerge::sum(std::as_const(terms));
    }

    /// (1 / K) * sum_k terms[k].
    template <class E>
    auto mean(const expression_list<E>& terms)
    {
        return xmerge::scale(xmerge::sum(terms), 1.0 / static_cast<double>(terms.size()));
    }
    template <class E>
    auto mean(expression_list<E>& terms)
    {
        return xmerge::mean(std::as_const(terms));
    }
    template <class E>
    auto mean(expression_list<E>&& terms)
    {
        return xmerge::mean(std::as_const(terms));
    }
    ///@}
}

#endif
