/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_MODEL_STOCK_HPP
#define XMERGE_METHODS_MODEL_STOCK_HPP

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../ops/any.hpp"
#include "../ops/arithmetic.hpp"
#include "../ops/gram.hpp"
#include "../ops/list.hpp"
#include "../ops/task_vector.hpp"
#include "options.hpp"
#include "registry.hpp"

namespace xmerge
{
    /**
     * Model Stock (Jang et al., ECCV 2024): with cos the mean pairwise cosine
     * of the N task vectors (norm products clamped to >= 1e-6, each cosine
     * clamped to [-1, 1]),
     *
     *     t = N cos / (1 + (N - 1) cos),   result = t * mean(x) + (1 - t) * base,
     *
     * for the whole tensor or per row (`filter_wise`; a 1-D tensor is one row).
     *
     * Differs from mergekit where cos <= -1 / (N - 1): the denominator is then
     * zero or negative and t meaningless; here t = 0 (the base is kept).
     * Needs at least two models. Cost: one statistics pass (pairwise dot
     * products) and one element-wise pass; per row, the task vectors are
     * held in memory.
     */
    template <class E, class B>
    any_expression model_stock(const expression_list<E>& models, const B& base, bool filter_wise = false);

    /// The interpolation factor t of Model Stock for a Gram matrix of task vectors.
    inline double model_stock_ratio(const gram_matrix& g);

    namespace detail
    {
        struct model_stock_parameters
        {
            bool filter_wise = false;
        };
    }

    /// `model_stock` for the method registry.
    template <class = void>
    method_info model_stock_method();

    /********************
     * Implementation   *
     ********************/

    inline double model_stock_ratio(const gram_matrix& g)
    {
        const std::size_t n = g.k;
        double sum = 0.0;
        std::size_t pairs = 0;
        for (std::size_t i = 0; i < n; ++i)
        {
            for (std::size_t j = i + 1; j < n; ++j)
            {
                const double product = std::max(std::sqrt(g(i, i)) * std::sqrt(g(j, j)), 1e-6);
                sum += std::clamp(g(i, j) / product, -1.0, 1.0);
                ++pairs;
            }
        }
        const double cos = sum / static_cast<double>(pairs);
        const double denominator = 1.0 + (static_cast<double>(n) - 1.0) * cos;
        return denominator > 0.0 ? static_cast<double>(n) * cos / denominator : 0.0;
    }

    template <class E, class B>
    inline any_expression model_stock(const expression_list<E>& models, const B& base, bool filter_wise)
    {
        if (models.size() < 2)
        {
            throw parameter_error(base.name(), "models", "model_stock needs at least two models besides the base, got " + std::to_string(models.size()));
        }
        const gram_rule rule = [](const gram_matrix& g)
        {
            const double t = xmerge::model_stock_ratio(g);
            return std::vector<double>(g.k, t / static_cast<double>(g.k));
        };
        const auto deltas = xmerge::task_vectors(models, base);
        if (filter_wise)
        {
            return base + xmerge::vector_gram_combination(deltas, vector_axis::last, rule);
        }
        return base + xmerge::gram_combination(deltas, rule);
    }

    template <class T>
    method_info model_stock_method()
    {
        using P = detail::model_stock_parameters;
        const auto options = option_set<P>().global(&P::filter_wise, "filter_wise", "one ratio per row instead of per tensor");
        return xmerge::make_method("model_stock", "interpolation toward the mean by the angle between task vectors (Model Stock)", true, options,
                           [](const method_inputs& in, const P& p) -> any_expression { return xmerge::model_stock(in.models, *in.base, p.filter_wise); });
    }
}

#endif
