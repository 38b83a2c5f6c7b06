/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_LINEAR_HPP
#define XMERGE_METHODS_LINEAR_HPP

#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../ops/list.hpp"
#include "../ops/weighted_sum.hpp"
#include "options.hpp"
#include "registry.hpp"

namespace xmerge
{
    /**
     * Model soup (mergekit `linear`): sum_i w_i x_i, divided by sum_i w_i
     * when `normalize` is true (the default).
     *
     * Throws parameter_error for an empty model list, a weight count that
     * differs from the model count, a non-finite weight, or weights summing
     * to zero with normalize (mergekit would return inf/NaN there).
     */
    template <class E>
    auto linear(const expression_list<E>& models, const std::vector<double>& weights, bool normalize = true);

    /// Uniform soup: the element-wise mean of the models.
    template <class E>
    auto uniform_soup(const expression_list<E>& models);

    /// `linear` for the method registry: per-model `weight` (required), `normalize` (true).
    template <class = void>
    method_info linear_method();

    namespace detail
    {
        struct linear_parameters
        {
            std::vector<double> weight;
            bool normalize = true;
        };
    }

    /********************
     * Implementation   *
     ********************/

    template <class E>
    inline auto linear(const expression_list<E>& models, const std::vector<double>& weights, bool normalize)
    {
        if (models.empty())
        {
            throw parameter_error("", "models", "a weighted sum needs at least one model");
        }
        detail::check_weights(models[0].name(), models.size(), weights);
        if (!normalize)
        {
            return xmerge::weighted_sum(models, weights);
        }
        double total = 0.0;
        for (double w : weights)
        {
            total += w;
        }
        if (total == 0.0)
        {
            throw parameter_error(models[0].name(), "weights", "sum to zero, so they cannot be normalized; pass normalize = false");
        }
        // Normalizing the weights instead of the sum: one multiply-add per model, no division per element.
        std::vector<double> normalized(weights);
        for (double& w : normalized)
        {
            w /= total;
        }
        return xmerge::weighted_sum(models, normalized);
    }

    template <class E>
    inline auto uniform_soup(const expression_list<E>& models)
    {
        return xmerge::linear(models, std::vector<double>(models.size(), 1.0), true);
    }

    template <class T>
    method_info linear_method()
    {
        using P = detail::linear_parameters;
        const auto options = option_set<P>()
                                 .per_model(&P::weight, "weight", "weight of each model")
                                 .global(&P::normalize, "normalize", "divide by the sum of the weights");
        return xmerge::make_method("linear", "weighted average of the models (model soup)", false, options,
                           [](const method_inputs& in, const P& p) -> any_expression { return xmerge::linear(in.models, p.weight, p.normalize); });
    }
}

#endif
