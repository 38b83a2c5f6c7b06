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

    /**
     * sum_i w_i (F_i + eps) x_i / sum_i w_i (F_i + eps), element-wise, over K
     * models x_i and their diagonal Fishers F_i, with weights that are numbers
     * or scalar expressions (the node behind fisher_merging).
     *
     * Each batch reads every model and Fisher once and accumulates the
     * numerator and the denominator together; when all models share a dtype
     * and all Fishers share one, the loop over the models is compiled for
     * those dtypes.
     */
    template <class E, class F>
    class fisher_average_node : public tensor_expression<fisher_average_node<E, F>>
    {
    public:
        fisher_average_node(expression_list<E> models, expression_list<F> fishers, std::vector<any_scalar> weights, double eps);

        const shape_type& shape() const noexcept { return m_models[0].shape(); }
        std::string name() const { return m_models[0].name(); }
        const expression_list<E>& models() const noexcept { return m_models; }
        const expression_list<F>& fishers() const noexcept { return m_fishers; }
        const std::vector<any_scalar>& weights() const noexcept { return m_weights; }
        double eps() const noexcept { return m_eps; }

        template <class G>
        void for_each_input(G&& g) const;

    private:
        expression_list<E> m_models;
        expression_list<F> m_fishers;
        std::vector<any_scalar> m_weights;
        double m_eps;
    };

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
    inline std::vector<double> fisher_norms(const std::vector<std::vector<const_tensor_ref>>& fishers, const eval_options& options = {});

    /**
     * `fisher` for the method registry: reads extra["fisher"]; per-model
     * `weight` (1.0), `normalize_fisher_weight` (true), `minimal_fisher_weight`
     * (1e-6). Declares the model statistic "fisher_norm" (||F_i||_2 over the
     * whole model).
     */
    inline method_info fisher_method();

    namespace detail
    {
        /// One chunk of a Fisher average: K bound models and Fishers (arena memory).
        template <class BX, class BF>
        struct bound_fisher_average
        {
            const BX* models;
            const BF* fishers;
            const float* weights;
            std::size_t count;
            float eps;
            bool uniform;  // inputs, every model of models[0]'s dtype and every Fisher of fishers[0]'s

            template <class B>
            XMERGE_FORCE_INLINE B packet(std::size_t i) const noexcept;
        };

        template <class E, class F>
        class evaluator<fisher_average_node<E, F>>
        {
        public:
            explicit evaluator(const fisher_average_node<E, F>& node);

            std::size_t collect(statistics_registry& r);
            auto bind(std::size_t begin, std::size_t n, arena& a) const;

        private:
            list_evaluator<E> m_models;
            list_evaluator<F> m_fishers;
            list_evaluator<any_scalar> m_weights;
            float m_eps;
        };

        /// Throws unless the list has `count` finite, non-negative values.
        inline void check_non_negative(const std::string& tensor, const char* parameter, const std::vector<double>& v, std::size_t count);
    }

    /********************
     * Implementation   *
     ********************/

    template <class E, class F>
    inline fisher_average_node<E, F>::fisher_average_node(expression_list<E> models, expression_list<F> fishers, std::vector<any_scalar> weights, double eps)
        : m_models(std::move(models))
        , m_fishers(std::move(fishers))
        , m_weights(std::move(weights))
        , m_eps(eps)
    {
        if (m_models.empty() || m_fishers.size() != m_models.size() || m_weights.size() != m_models.size())
        {
            throw parameter_error(m_models.empty() ? std::string() : m_models[0].name(), "fisher", "needs one Fisher tensor and one weight per model");
        }
    }

    template <class E, class F>
    template <class G>
    inline void fisher_average_node<E, F>::for_each_input(G&& g) const
    {
        m_models.for_each_input(g);
        m_fishers.for_each_input(g);
        for (const auto& w : m_weights)
        {
            w.for_each_input(g);
        }
    }

    namespace detail
    {
        template <class BX, class BF>
        template <class B>
        XMERGE_FORCE_INLINE B bound_fisher_average<BX, BF>::packet(std::size_t i) const noexcept
        {
            using traits = simd::batch_traits<B>;
            const B e = traits::broadcast(eps);
            if constexpr (std::is_same<BX, bound_input>::value && std::is_same<BF, bound_input>::value)
            {
                if (uniform)
                {
                    // num += w (F + eps) x, den += w (F + eps), with loads typed once per chunk
                    return with_element_type(models[0].type,
                                             [&](auto model_tag) XMERGE_LAMBDA_INLINE
                                             {
                                                 using model_element = std::remove_pointer_t<decltype(model_tag)>;
                                                 return with_element_type(fishers[0].type,
                                                                          [&](auto fisher_tag) XMERGE_LAMBDA_INLINE
                                                                          {
                                                                              using fisher_element = std::remove_pointer_t<decltype(fisher_tag)>;
                                                                              B num = traits::broadcast(0.0f);
                                                                              B den = num;
                                                                              for (std::size_t k = 0; k < count; ++k)
                                                                              {
                                                                                  const B f = load_as_float<B>(static_cast<const fisher_element*>(fishers[k].data) + i);
                                                                                  const B x = load_as_float<B>(static_cast<const model_element*>(models[k].data) + i);
                                                                                  const B wf = traits::broadcast(weights[k]) * (f + e);
                                                                                  num = simd::fma(wf, x, num);
                                                                                  den = den + wf;
                                                                              }
                                                                              return num / den;
                                                                          });
                                             });
                }
            }
            B num = traits::broadcast(0.0f);
            B den = num;
            for (std::size_t k = 0; k < count; ++k)
            {
                const B wf = traits::broadcast(weights[k]) * (fishers[k].template packet<B>(i) + e);
                num = simd::fma(wf, models[k].template packet<B>(i), num);
                den = den + wf;
            }
            return num / den;
        }

        template <class E, class F>
        inline evaluator<fisher_average_node<E, F>>::evaluator(const fisher_average_node<E, F>& node)
            : m_models(node.models())
            , m_fishers(node.fishers())
            , m_weights(expression_list<any_scalar>(node.weights()))
            , m_eps(static_cast<float>(node.eps()))
        {
        }

        template <class E, class F>
        inline std::size_t evaluator<fisher_average_node<E, F>>::collect(statistics_registry& r)
        {
            return std::max({m_models.collect(r), m_fishers.collect(r), m_weights.collect(r)});
        }

        template <class E, class F>
        inline auto evaluator<fisher_average_node<E, F>>::bind(std::size_t begin, std::size_t n, arena& a) const
        {
            const std::size_t k = m_models.size();
            auto* weights = a.allocate<float>(k);
            for (std::size_t i = 0; i < k; ++i)
            {
                weights[i] = static_cast<float>(m_weights[i].value());
            }
            auto* models = m_models.bind(begin, n, a);
            auto* fishers = m_fishers.bind(begin, n, a);
            const bool uniform = uniform_inputs(models, k) && uniform_inputs(fishers, k);
            return bound_fisher_average<std::remove_pointer_t<decltype(models)>, std::remove_pointer_t<decltype(fishers)>>{models, fishers, weights, k, m_eps,
                                                                                                                           uniform};
        }

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
                throw shape_error(models[i].name(), "", "model " + std::to_string(i) + " has shape " + to_string(models[i].shape()) + " but model 0 has shape "
                                                            + to_string(models[0].shape()));
            }
            if (fishers[i].shape() != models[i].shape())
            {
                throw shape_error(fishers[i].name(), "fisher", "Fisher " + std::to_string(i) + " has shape " + to_string(fishers[i].shape()) + " but its model has shape "
                                                                   + to_string(models[i].shape()));
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
                weights.emplace_back(c[i] / (norm(fishers[i]) + eps));
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
        return fisher_average_node<E, F>(models, fishers, std::move(weights), eps);
    }

    inline std::vector<double> fisher_norms(const std::vector<std::vector<const_tensor_ref>>& fishers, const eval_options& options)
    {
        std::vector<double> out;
        out.reserve(fishers.size());
        for (const auto& model : fishers)
        {
            double s = 0.0;
            for (const auto& f : model)
            {
                s += value_of(sum_squares(input(f)), options);
            }
            out.push_back(std::sqrt(s));
        }
        return out;
    }

    inline method_info fisher_method()
    {
        method_info m;
        m.name = "fisher";
        m.summary = "Fisher-weighted averaging: each element weighted by the models' diagonal Fisher information";
        m.parameters = {{"weight", parameter_scope::per_model, 1.0, "model coefficient c_i"},
                        {"normalize_fisher_weight", parameter_scope::global, true, "divide each coefficient by the model's Fisher norm"},
                        {"minimal_fisher_weight", parameter_scope::global, 1e-6, "eps added to every Fisher value"}};
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
                squares.push_back(value_of(sum_squares(f)));
            }
            return squares;
        };
        norms.finish = [](double s) { return std::sqrt(s); };
        m.model_statistics = {norms};
        m.build = [](const method_inputs& in, const parameters& p) -> any_expression
        {
            const auto it = in.extra.find("fisher");
            if (it == in.extra.end())
            {
                throw parameter_error(in.tensor, "fisher", "Fisher merging needs one Fisher tensor per model (extra \"fisher\")");
            }
            fisher_options o;
            o.weights = p.per_model("weight", in.models.size());
            o.normalize = p.flag("normalize_fisher_weight");
            o.minimal_fisher_weight = p.number("minimal_fisher_weight");
            if (o.normalize)
            {
                o.fisher_norms = in.model_statistics.at("fisher_norm");
            }
            return fisher_merging(in.models, it->second, o);
        };
        return m;
    }
}

#endif
