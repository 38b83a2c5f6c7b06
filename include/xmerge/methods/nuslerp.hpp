/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_NUSLERP_HPP
#define XMERGE_METHODS_NUSLERP_HPP

#include <algorithm>
#include <cmath>
#include <optional>
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
    /// Where NuSLERP measures angles.
    struct nuslerp_options
    {
        /// The whole tensor as one vector (mergekit's default).
        bool flatten = true;
        /// Without flatten: vectors along dimension 0 (columns) instead of the last dimension (rows).
        bool row_wise = false;
    };

    /**
     * NuSLERP (mergekit `nuslerp`): spherical interpolation of two models,
     * t = w1 / (w0 + w1) (0.5 when |w0 + w1| < 1e-6), per vector of the
     * tensor or flattened. With a base, the task vectors are interpolated and
     * the base added back. Vectors that are (nearly) colinear (|sin theta| <
     * 1e-8) are interpolated linearly.
     *
     * Cost flattened: one statistics pass and one element-wise pass. Per
     * vector: the two inputs are evaluated into memory (two float32 buffers
     * the size of the tensor) and each vector combined on its own.
     */
    template <class E>
    any_expression nuslerp(const expression_list<E>& models, const std::optional<detail::identity_t<E>>& base, const std::vector<double>& weights,
                                  const nuslerp_options& options = {});

    /// The NuSLERP coefficients of two vectors from their Gram matrix.
    inline std::vector<double> nuslerp_coefficients(const gram_matrix& g, double t);

    namespace detail
    {
        struct nuslerp_parameters
        {
            std::vector<double> weight;
            bool flatten = true;
            bool row_wise = false;
        };
    }

    /// `nuslerp` for the method registry: exactly two models, optional base.
    template <class = void>
    method_info nuslerp_method();

    /********************
     * Implementation   *
     ********************/

    inline std::vector<double> nuslerp_coefficients(const gram_matrix& g, double t)
    {
        constexpr double eps = 1e-7;
        const double n0 = std::max(std::sqrt(g(0, 0)), eps);
        const double n1 = std::max(std::sqrt(g(1, 1)), eps);
        const double theta = std::acos(std::clamp(g(0, 1) / (n0 * n1), -1.0, 1.0));
        const double s = std::sin(theta);
        if (std::fabs(s) < 1e-8)
        {
            return {1.0 - t, t};
        }
        return {std::sin((1.0 - t) * theta) / s, std::sin(t * theta) / s};
    }

    template <class E>
    any_expression nuslerp(const expression_list<E>& models, const std::optional<detail::identity_t<E>>& base, const std::vector<double>& weights,
                                  const nuslerp_options& options)
    {
        const std::string tensor = models.empty() ? std::string() : models[0].name();
        if (models.size() != 2)
        {
            throw parameter_error(tensor, "models", "nuslerp needs exactly two models (plus an optional base), got " + std::to_string(models.size()));
        }
        detail::check_weights(tensor, 2, weights, "weight");
        const double total = weights[0] + weights[1];
        const double t = std::fabs(total) < 1e-6 ? 0.5 : weights[1] / total;
        const gram_rule rule = [t](const gram_matrix& g) { return xmerge::nuslerp_coefficients(g, t); };
        const vector_axis axis = options.flatten ? vector_axis::whole : (options.row_wise ? vector_axis::first : vector_axis::last);
        if (base)
        {
            const auto deltas = xmerge::task_vectors(models, *base);
            if (axis == vector_axis::whole)
            {
                return *base + xmerge::gram_combination(deltas, rule);
            }
            return *base + xmerge::vector_gram_combination(deltas, axis, rule);
        }
        if (axis == vector_axis::whole)
        {
            return xmerge::gram_combination(models, rule);
        }
        return xmerge::vector_gram_combination(models, axis, rule);
    }

    template <class T>
    method_info nuslerp_method()
    {
        using P = detail::nuslerp_parameters;
        const auto options = option_set<P>()
                                 .per_model(&P::weight, "weight", "weight of each model; t = w1 / (w0 + w1)")
                                 .global(&P::flatten, "nuslerp_flatten", "interpolate the flattened tensor")
                                 .global(&P::row_wise, "nuslerp_row_wise", "without flatten: vectors along dimension 0")
                                 .alias("flatten", "nuslerp_flatten")
                                 .alias("row_wise", "nuslerp_row_wise");
        return xmerge::make_method("nuslerp", "spherical interpolation of two models (or task vectors), per row or flattened", false, options,
                           [](const method_inputs& in, const P& p) -> any_expression
                           { return xmerge::nuslerp(in.models, in.base, p.weight, {p.flatten, p.row_wise}); });
    }
}

#endif
