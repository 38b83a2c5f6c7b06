/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_FISHER_HPP
#define XMERGE_METHODS_FISHER_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/arena.hpp"
#include "../core/bound.hpp"
#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../core/expression.hpp"
#include "../ops/any.hpp"
#include "../ops/arithmetic.hpp"
#include "../ops/list.hpp"
#include "../ops/reduce.hpp"
#include "../ops/scalar.hpp"
#include "../ops/weighted_sum.hpp"
#include "../simd/batch.hpp"
#include "options.hpp"
#include "registry.hpp"

namespace xmerge
{
    /// Parameters of Fisher-weighted averaging (FusionBench names and defaults).
    struct fisher_options
    {
        /// Model coefficients c_i (one per model, >= 0, not all 0); empty means 1 for every model.
        std::vector<double> weights;
        /// Divide each model's coefficient by its Fisher norm (`normalize_fisher_weight`).
        bool normalize = true;
        /// eps added to every Fisher value (`minimal_fisher_weight`), > 0.
        double minimal_fisher_weight = 1e-6;
        /**
         * ||F_i||_2 over all tensors of model i, one per model (see
         * fisher_norms()). Empty: the norms of this tensor's Fishers, which is
         * exact for a one-tensor model only.
         */
        std::vector<double> fisher_norms;
    };

    namespace detail
    {
        /// sum_k w_k (F_k + eps) x_k / sum_k w_k (F_k + eps), reading every model and Fisher once per batch.
        struct fisher_average_fn
        {
            float eps;

            template <class Terms>
            XMERGE_FORCE_INLINE auto operator()(const Terms& t) const noexcept
            {
                using B = typename Terms::batch;
                const B e(eps);
                B num(0.0f), den(0.0f);
                for (std::size_t k = 0; k < t.size(); ++k)
                {
                    const B wf = t.weight(k) * (t.template at<1>(k) + e);
                    num = simd::fma(wf, t[k], num);
                    den = den + wf;
                }
                return num / den;
            }
        };
    }

    /**
     * sum_i w_i (F_i + eps) x_i / sum_i w_i (F_i + eps), element-wise, over K
     * models x_i and their diagonal Fishers F_i, with weights that are numbers
     * or scalar expressions (the node behind fisher_merging).
     */
    template <class E, class F>
    using fisher_average_node = list_node<detail::fisher_average_fn, any_scalar, E, F>;

    /**
     * Fisher-weighted averaging: with diagonal Fishers F_i (same shapes as the
     * models) and F'_i = F_i + eps,
     *
     *     result = sum_i c_i F'_i x_i / sum_i c_i F'_i,
     *
     * element-wise; with `normalize`, c_i <- c_i / (||F_i||_2 + eps) (the
     * common factor sum_j 1 / (||F_j||_2 + eps) of the reference cancels).
     * Equal Fishers give the weighted average sum_i c_i x_i / sum_i c_i.
     *
     * Cost: one fused pass over models and Fishers (plus one over the
     * Fishers for their norms when they are not given). Throws parameter_error for a
     * Fisher count other than the model count, weights or norms of the
     * wrong count, negative or non-finite, weights that are all zero, and
     * eps <= 0; shape_error for tensors of different shapes. Fisher values
     * are expected to be >= 0 (squared gradients).
     */
    template <class E, class F>
    fisher_average_node<E, F> fisher_merging(const expression_list<E>& models, const expression_list<F>& fishers, const fisher_options& options = {});

    /**
     * ||F_i||_2 over all tensors of each model: fishers[i] lists model i's
     * Fisher tensors. The norms fisher_options::fisher_norms wants when a
     * multi-tensor model is merged tensor by tensor.
     */
    template <class = void>
    std::vector<double> fisher_norms(const std::vector<std::vector<const_tensor_ref>>& fishers, const eval_options& options = {});

    /**
     * `fisher` for the method registry: reads extra["fisher"]; per-model
     * `weight` (1.0), `normalize_fisher_weight` (true), `minimal_fisher_weight`
     * (1e-6). Declares the model statistic "fisher_norm" (||F_i||_2 over the
     * whole model).
     */
    template <class = void>
    method_info fisher_method();

    namespace detail
    {
        /// Throws unless the list has `count` finite, non-negative values.
        inline void check_non_negative(const std::string& tensor, const char* parameter, const std::vector<double>& v, std::size_t count);
    }

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        inline void check_non_negative(const std::string& tensor, const char* parameter, const std::vector<double>& v, std::size_t count)
        {
            if (v.size() != count)
            {
                throw parameter_error(tensor, parameter, "expected " + std::to_string(count) + " values (one per model), got " + std::to_string(v.size()));
            }
            for (std::size_t k = 0; k < v.size(); ++k)
            {
                if (!std::isfinite(v[k]) || v[k] < 0.0)
                {
                    throw parameter_error(tensor, parameter, "value " + std::to_string(k) + " must be finite and non-negative, got " + std::to_string(v[k]));
                }
            }
        }
    }

    template <class E, class F>
    inline fisher_average_node<E, F> fisher_merging(const expression_list<E>& models, const expression_list<F>& fishers, const fisher_options& options)
    {
        if (models.empty())
        {
            throw parameter_error("", "models", "Fisher merging needs at least one model");
        }
        const std::string tensor = models[0].name();
        const std::size_t k = models.size();
        if (fishers.size() != k)
        {
            throw parameter_error(tensor, "fisher", "expected " + std::to_string(k) + " Fisher tensors (one per model), got " + std::to_string(fishers.size()));
        }
        const double eps = options.minimal_fisher_weight;
        if (!(eps > 0.0) || !std::isfinite(eps))
        {
            throw parameter_error(tensor, "minimal_fisher_weight", "must be finite and positive (it keeps the denominator away from zero), got " + std::to_string(eps));
        }
        std::vector<double> c = options.weights.empty() ? std::vector<double>(k, 1.0) : options.weights;
        detail::check_non_negative(tensor, "weight", c, k);
        for (std::size_t i = 0; i < k; ++i)
        {
            if (models[i].shape() != models[0].shape())
            {
                throw shape_error(models[i].name(), "", "model " + std::to_string(i) + " has shape " + xmerge::to_string(models[i].shape()) + " but model 0 has shape "
                                                            + xmerge::to_string(models[0].shape()));
            }
            if (fishers[i].shape() != models[i].shape())
            {
                throw shape_error(fishers[i].name(), "fisher", "Fisher " + std::to_string(i) + " has shape " + xmerge::to_string(fishers[i].shape()) + " but its model has shape "
                                                                   + xmerge::to_string(models[i].shape()));
            }
        }
        double total = 0.0;
        for (double w : c)
        {
            total += w;
        }
        if (!(total > 0.0))
        {
            throw parameter_error(tensor, "weight", "all model coefficients are zero");
        }

        std::vector<any_scalar> weights;
        if (options.normalize && options.fisher_norms.empty())
        {
            // This tensor's norms, computed in the statistics phase.
            for (std::size_t i = 0; i < k; ++i)
            {
                weights.emplace_back(c[i] / (xmerge::norm(fishers[i]) + eps));
            }
        }
        else
        {
            if (options.normalize)
            {
                detail::check_non_negative(tensor, "fisher_norms", options.fisher_norms, k);
            }
            for (std::size_t i = 0; i < k; ++i)
            {
                weights.emplace_back(scalar_constant(options.normalize ? c[i] / (options.fisher_norms[i] + eps) : c[i]));
            }
        }
        return fisher_average_node<E, F>(detail::fisher_average_fn{static_cast<float>(eps)}, std::move(weights), models, fishers);
    }

    template <class>
    std::vector<double> fisher_norms(const std::vector<std::vector<const_tensor_ref>>& fishers, const eval_options& options)
    {
        std::vector<double> out;
        out.reserve(fishers.size());
        for (const auto& model : fishers)
        {
            double s = 0.0;
            for (const auto& f : model)
            {
                s += xmerge::value_of(xmerge::sum_squares(xmerge::input(f)), options);
            }
            out.push_back(std::sqrt(s));
        }
        return out;
    }

    template <class T>
    method_info fisher_method()
    {
        fisher_options defaults;
        defaults.weights = {1.0};
        const auto options = option_set<fisher_options>(defaults)
                                 .per_model(&fisher_options::weights, "weight", "model coefficient c_i")
                                 .global(&fisher_options::normalize, "normalize_fisher_weight", "divide each coefficient by the model's Fisher norm")
                                 .global(&fisher_options::minimal_fisher_weight, "minimal_fisher_weight", "eps added to every Fisher value");
        method_info m = xmerge::make_method("fisher", "Fisher-weighted averaging: each element weighted by the models' diagonal Fisher information", false, options,
                                    [](const method_inputs& in, fisher_options o) -> any_expression
                                    {
                                        const auto it = in.extra.find("fisher");
                                        if (it == in.extra.end())
                                        {
                                            throw parameter_error(in.tensor, "fisher", "Fisher merging needs one Fisher tensor per model (extra \"fisher\")");
                                        }
                                        if (o.normalize)
                                        {
                                            o.fisher_norms = in.model_statistics.at("fisher_norm");
                                        }
                                        return xmerge::fisher_merging(in.models, it->second, o);
                                    });
        model_statistic norms;
        norms.name = "fisher_norm";
        norms.per_tensor = [](const method_inputs& in)
        {
            const auto it = in.extra.find("fisher");
            if (it == in.extra.end() || it->second.size() != in.models.size())
            {
                throw parameter_error(in.tensor, "fisher", "Fisher merging needs one Fisher tensor per model (extra \"fisher\")");
            }
            std::vector<double> squares;
            for (const auto& f : it->second)
            {
                squares.push_back(xmerge::value_of(xmerge::sum_squares(f)));
            }
            return squares;
        };
        norms.finish = [](double s) { return std::sqrt(s); };
        m.model_statistics = {norms};
        return m;
    }
}

#endif
