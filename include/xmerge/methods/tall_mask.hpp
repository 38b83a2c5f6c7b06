/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_TALL_MASK_HPP
#define XMERGE_METHODS_TALL_MASK_HPP

#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../ops/any.hpp"
#include "../ops/arithmetic.hpp"
#include "../ops/list.hpp"
#include "../ops/tall_mask.hpp"
#include "../ops/task_vector.hpp"
#include "options.hpp"
#include "per_task.hpp"
#include "registry.hpp"

namespace xmerge
{
    /**
     * TALL masks (Wang et al., "Localizing Task Information for Improved
     * Model Merging and Compression", ICML 2024), per-task reconstruction:
     * with tau_k = x_k - base and tau_MTL = sum_k tau_k,
     *
     *     m_t = [ |tau_t| > lambda_t |tau_MTL - tau_t| ],   model_t = base + m_t * tau_MTL.
     *
     * The compression use: store base, tau_MTL and one bit per element and
     * task instead of T fine-tuned models. One model per task; each is one
     * element-wise pass reading the base and the K task vectors.
     */
    template <class E, class B>
    auto tall_mask_model(const expression_list<E>& models, const B& base, std::size_t task, const std::vector<double>& lambdas)
    {
        return base + xmerge::tall_mask(xmerge::task_vectors(models, base), task, lambdas, tall_mask_value::masked_sum);
    }

    /// Every task's model_t (see tall_mask_model), in task order; evaluate them together with evaluate_all().
    template <class E, class B>
    std::vector<any_expression> tall_mask_models(const expression_list<E>& models, const B& base, const std::vector<double>& lambdas)
    {
        std::vector<any_expression> out;
        for (std::size_t t = 0; t < models.size(); ++t)
        {
            out.emplace_back(xmerge::tall_mask_model(models, base, t, lambdas));
        }
        return out;
    }

    /**
     * `tall_mask` for the method registry: per-model `tall_mask_lambda`
     * (0.6, FusionBench's default), optional `task`. build() gives task
     * `task`'s model (required there); build_outputs() gives `model.<t>`
     * and `mask.<t>` (0/1) for every task. Needs a base.
     */
    template <class = void>
    method_info tall_mask_method();

    namespace detail
    {
        struct tall_mask_parameters
        {
            std::vector<double> tall_mask_lambda{0.6};
            std::optional<std::size_t> task;
        };
    }

    template <class T>
    method_info tall_mask_method()
    {
        using P = detail::tall_mask_parameters;
        const auto options = option_set<P>()
                                 .per_model(&P::tall_mask_lambda, "tall_mask_lambda", "lambda_t of the mask |tau_t| > lambda_t |tau_MTL - tau_t|")
                                 .optional(&P::task, "task", "index of the task whose model build() gives");
        return xmerge::make_method_with_outputs(
            "tall_mask", "per-task models base + m_t * tau_MTL with TALL masks (one model per task)", true, options,
            [](const method_inputs& in, const P& p) -> any_expression
            {
                const std::size_t t = detail::selected_task(p.task, in.models.size(), in.tensor, "tall_mask");
                return xmerge::tall_mask_model(in.models, *in.base, t, p.tall_mask_lambda);
            },
            [](const method_inputs& in, const P& p)
            {
                std::vector<method_output> out;
                const auto deltas = xmerge::task_vectors(in.models, *in.base);
                for (std::size_t t = 0; t < in.models.size(); ++t)
                {
                    out.push_back({"model." + std::to_string(t), xmerge::tall_mask_model(in.models, *in.base, t, p.tall_mask_lambda)});
                }
                for (std::size_t t = 0; t < in.models.size(); ++t)
                {
                    out.push_back({"mask." + std::to_string(t), xmerge::tall_mask(deltas, t, p.tall_mask_lambda)});
                }
                return out;
            });
    }
}

#endif
