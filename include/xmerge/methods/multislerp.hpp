/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_MULTISLERP_HPP
#define XMERGE_METHODS_MULTISLERP_HPP

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
    /**
     * Multi-SLERP (mergekit `multislerp`): barycentric interpolation of K
     * tensors (task vectors when a base is given) on the hypersphere. The
     * unit vectors are averaged with the weights, normalized to a point m,
     * projected to the tangent space at m, averaged there and mapped back with
     * the exponential map; the result is scaled by the weighted mean norm.
     *
     * Every step is a function of the Gram matrix, so the result is a
     * combination of the inputs with coefficients computed once: one
     * statistics pass, one element-wise pass. Throws parameter_error when the
     * weighted mean of the unit vectors vanishes (antipodal inputs), except
     * for two inputs, which then fall back to linear interpolation.
     */
    template <class E>
    any_expression multislerp(const expression_list<E>& models, const std::optional<detail::identity_t<E>>& base, std::vector<double> weights,
                                     bool normalize_weights = true, double eps = 1e-8);

    /// The coefficients of the multi-SLERP result in the basis of the inputs.
    inline std::vector<double> multislerp_coefficients(const gram_matrix& g, const std::vector<double>& weights, double eps, const std::string& tensor);

    namespace detail
    {
        struct multislerp_parameters
        {
            std::vector<double> weight;
            bool normalize_weights = true;
            double eps = 1e-8;
        };
    }

    /// `multislerp` for the method registry.
    template <class = void>
    method_info multislerp_method();

    /********************
     * Implementation   *
     ********************/

    inline std::vector<double> multislerp_coefficients(const gram_matrix& g, const std::vector<double>& w, double eps, const std::string& tensor)
    {
        const std::size_t k = g.k;
        std::vector<double> norms(k), mean(k);
        for (std::size_t i = 0; i < k; ++i)
        {
            norms[i] = std::sqrt(g(i, i));
            mean[i] = w[i] / (norms[i] + eps);  // sum_i w_i u_i, u_i = t_i / (|t_i| + eps)
        }
        const double mean_norm = std::sqrt(std::max(g.inner(mean, mean), 0.0));
        if (mean_norm < eps)
        {
            if (k == 2)
            {
                return {w[0], w[1]};
            }
            throw parameter_error(tensor, "weight", "the weighted mean of the unit vectors is zero (antipodal inputs with balancing weights)");
        }
        for (double& m : mean)
        {
            m /= mean_norm;
        }
        // tangent vectors u_i - <u_i, m> m, averaged with the weights
        double mean_component = 0.0;
        std::vector<double> g_mean(k, 0.0);
        for (std::size_t i = 0; i < k; ++i)
        {
            for (std::size_t j = 0; j < k; ++j)
            {
                g_mean[i] += g(i, j) * mean[j];
            }
            mean_component += w[i] * g_mean[i] / (norms[i] + eps);
        }
        std::vector<double> tangent(k);
        for (std::size_t i = 0; i < k; ++i)
        {
            tangent[i] = w[i] / (norms[i] + eps) - mean_component * mean[i];
        }
        const double tangent_norm = std::sqrt(std::max(g.inner(tangent, tangent), 0.0)) + eps;
        double average_norm = 0.0;
        for (std::size_t i = 0; i < k; ++i)
        {
            average_norm += norms[i] * w[i];
        }
        std::vector<double> c(k);
        for (std::size_t i = 0; i < k; ++i)
        {
            c[i] = (mean[i] * std::cos(tangent_norm) + tangent[i] * std::sin(tangent_norm) / tangent_norm) * average_norm;
        }
        return c;
    }

    template <class E>
    any_expression multislerp(const expression_list<E>& models, const std::optional<detail::identity_t<E>>& base, std::vector<double> weights,
                                     bool normalize_weights, double eps)
    {
        const std::string tensor = models.empty() ? std::string() : models[0].name();
        if (models.empty())
        {
            throw parameter_error(tensor, "models", "multislerp needs at least one model");
        }
        detail::check_weights(tensor, models.size(), weights, "weight");
        if (models.size() == 1)
        {
            return models[0];
        }
        if (normalize_weights)
        {
            double total = 0.0;
            for (double x : weights)
            {
                total += x;
            }
            if (total == 0.0)
            {
                throw parameter_error(tensor, "weight", "sum to zero, so they cannot be normalized");
            }
            for (double& x : weights)
            {
                x /= total;
            }
        }
        const gram_rule rule = [weights, eps, tensor](const gram_matrix& g) { return xmerge::multislerp_coefficients(g, weights, eps, tensor); };
        if (base)
        {
            return *base + xmerge::gram_combination(xmerge::task_vectors(models, *base), rule);
        }
        return xmerge::gram_combination(models, rule);
    }

    template <class T>
    method_info multislerp_method()
    {
        using P = detail::multislerp_parameters;
        const auto options = option_set<P>()
                                 .per_model(&P::weight, "weight", "weight of each model")
                                 .global(&P::normalize_weights, "normalize_weights", "divide the weights by their sum")
                                 .global(&P::eps, "eps", "guard against zero norms");
        return xmerge::make_method("multislerp", "barycentric interpolation of several models on the hypersphere", false, options,
                           [](const method_inputs& in, const P& p) -> any_expression
                           { return xmerge::multislerp(in.models, in.base, p.weight, p.normalize_weights, p.eps); });
    }
}

#endif
