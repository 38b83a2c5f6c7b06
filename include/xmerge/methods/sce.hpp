/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_SCE_HPP
#define XMERGE_METHODS_SCE_HPP

#include <cmath>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../ops/any.hpp"
#include "../ops/arithmetic.hpp"
#include "../ops/list.hpp"
#include "../ops/rank_mask.hpp"
#include "../ops/reduce.hpp"
#include "../ops/shared.hpp"
#include "../ops/sign_election.hpp"
#include "../ops/task_vector.hpp"
#include "../ops/variance.hpp"
#include "options.hpp"
#include "registry.hpp"

namespace xmerge
{
    /**
     * SCE (select, calculate, erase; mergekit `sce`):
     *
     * 1. select: with select_topk < 1, keep only the floor(select_topk *
     *    nonzero) elements where the task vectors vary most across models
     *    (population variance), zeroing the rest in every task vector;
     * 2. calculate: weight each model by the mean square of its (selected)
     *    task vector, normalized over the models;
     * 3. erase: elect a sign per element from the sum of the unweighted task
     *    vectors and average the agreeing entries with those weights.
     *
     * Cost: a statistics level for the nonzero count, one for the selection
     * (sampling, then one pass), one for the mean squares, and the
     * element-wise pass. The selection mask is shared by every use.
     */
    template <class E, class B>
    any_expression sce(const expression_list<E>& models, const B& base, double select_topk = 1.0);

    /// `sce` for the method registry.
    template <class = void>
    method_info sce_method();

    namespace detail
    {
        struct sce_parameters
        {
            double select_topk = 1.0;
            bool int8_mask = false;
        };

        struct ratio_or_uniform_fn
        {
            double uniform;
            double operator()(double part, double whole) const noexcept { return whole == 0.0 ? uniform : part / whole; }
        };

        template <class E, class B, class Deltas>
        any_expression sce_merge(const B& base, const Deltas& deltas)
        {
            using term = typename Deltas::value_type;
            // the mean squares, shared by each weight and the total they are divided by
            expression_list<shared_node<decltype(xmerge::sum_squares(std::declval<term>()))>> squares;
            for (const auto& d : deltas)
            {
                squares.push_back(xmerge::shared(xmerge::sum_squares(d)));
            }
            any_scalar total = squares[0];
            for (std::size_t k = 1; k < squares.size(); ++k)
            {
                total = total + squares[k];
            }
            expression_list<any_scalar> weights;
            const ratio_or_uniform_fn ratio{1.0 / static_cast<double>(squares.size())};
            for (const auto& s : squares)
            {
                weights.push_back(xmerge::apply(ratio, s, total));
            }
            election_options election;
            election.consensus = sign_consensus::sum;
            election.elect_on_weighted = false;
            election.divisor = merge_divisor::weights;
            return base + xmerge::elected_sum(deltas, weights, election);
        }
    }

    /********************
     * Implementation   *
     ********************/

    template <class E, class B>
    inline any_expression sce(const expression_list<E>& models, const B& base, double select_topk)
    {
        if (!std::isfinite(select_topk))
        {
            throw parameter_error(base.name(), "select_topk", "must be finite");
        }
        const auto deltas = xmerge::task_vectors(models, base);
        if (select_topk >= 1.0)
        {
            return detail::sce_merge<E>(base, deltas);
        }
        const auto spread = xmerge::shared(xmerge::variance(deltas));
        const auto k = xmerge::apply([topk = std::fabs(select_topk)](double nonzero) { return std::floor(topk * nonzero); }, xmerge::count_nonzero(spread));
        const auto mask = xmerge::shared(xmerge::top_k_mask(spread, k));
        const auto selected = xmerge::transform(deltas, [&](const auto& d) { return xmerge::shared(d * mask); });
        return detail::sce_merge<E>(base, selected);
    }

    template <class T>
    method_info sce_method()
    {
        using P = detail::sce_parameters;
        const auto options = option_set<P>()
                                 .global(&P::select_topk, "select_topk", "fraction of high-variance elements kept")
                                 .global(&P::int8_mask, "int8_mask", "accepted for compatibility; masks are never stored");
        return xmerge::make_method("sce", "variance-selected task vectors, mean-square weights and sign election (SCE)", true, options,
                           [](const method_inputs& in, const P& p) -> any_expression { return xmerge::sce(in.models, *in.base, p.select_topk); });
    }
}

#endif
