/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_CONSENSUS_HPP
#define XMERGE_METHODS_CONSENSUS_HPP

#include <cstddef>
#include <string>
#include <vector>

#include "../ops/any.hpp"
#include "../ops/arithmetic.hpp"
#include "../ops/list.hpp"
#include "../ops/map.hpp"
#include "../ops/tall_mask.hpp"
#include "../ops/task_vector.hpp"
#include "options.hpp"
#include "registry.hpp"
#include "task_arithmetic.hpp"

namespace xmerge
{
    /**
     * Consensus merging (Wang et al., ICML 2024): keep the elements of the
     * multi-task vector tau_MTL = sum_k tau_k that at least k tasks claim by
     * their TALL masks (see tall_mask), dropping "selfish" elements (one
     * task) and "catastrophic" ones (none):
     *
     *     merged = base + alpha * [sum_t m_t >= k] * tau_MTL.
     *
     * One element-wise pass reading the base and the K task vectors.
     */
    template <class E, class B>
    auto consensus_merge(const expression_list<E>& models, const B& base, const std::vector<double>& lambdas, std::size_t k = 2, double alpha = 1.0)
    {
        detail::check_finite(base.name(), "alpha", alpha);
        return xmerge::map(detail::add_scaled_fn{}, base,
                           xmerge::consensus_mask(xmerge::task_vectors(models, base), lambdas, k, tall_mask_value::masked_sum), alpha);
    }

    /// `consensus_mask` for the method registry: the 0/1 consensus mask itself (FusionBench's
    /// construct_consensus_mask): per-model `tall_mask_lambda` (0.6), `prun_thre_k` (2). Needs a base.
    template <class = void>
    method_info consensus_mask_method();

    /// `consensus_task_arithmetic` for the method registry: consensus_merge with per-model
    /// `tall_mask_lambda` (0.6), `prun_thre_k` (2), `alpha` (1.0). Needs a base.
    template <class = void>
    method_info consensus_task_arithmetic_method();

    namespace detail
    {
        struct consensus_parameters
        {
            std::vector<double> tall_mask_lambda{0.6};
            std::size_t prun_thre_k = 2;
            double alpha = 1.0;
        };

        inline option_set<consensus_parameters> consensus_options(bool with_alpha)
        {
            using P = consensus_parameters;
            auto o = option_set<P>()
                         .per_model(&P::tall_mask_lambda, "tall_mask_lambda", "lambda_t of each task's TALL mask")
                         .global(&P::prun_thre_k, "prun_thre_k", "keep elements claimed by at least this many tasks");
            if (with_alpha)
            {
                o.global(&P::alpha, "alpha", "scale of the masked multi-task vector");
            }
            return o;
        }
    }

    template <class T>
    method_info consensus_mask_method()
    {
        using P = detail::consensus_parameters;
        return xmerge::make_method("consensus_mask", "the 0/1 consensus mask: elements at least k tasks' TALL masks keep", true, detail::consensus_options(false),
                                   [](const method_inputs& in, const P& p) -> any_expression
                                   { return xmerge::consensus_mask(xmerge::task_vectors(in.models, *in.base), p.tall_mask_lambda, p.prun_thre_k); });
    }

    template <class T>
    method_info consensus_task_arithmetic_method()
    {
        using P = detail::consensus_parameters;
        return xmerge::make_method("consensus_task_arithmetic", "task arithmetic on the elements at least k tasks' TALL masks keep (consensus merging)", true,
                                   detail::consensus_options(true),
                                   [](const method_inputs& in, const P& p) -> any_expression
                                   { return xmerge::consensus_merge(in.models, *in.base, p.tall_mask_lambda, p.prun_thre_k, p.alpha); });
    }
}

#endif
