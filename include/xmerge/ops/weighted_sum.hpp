/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_WEIGHTED_SUM_HPP
#define XMERGE_OPS_WEIGHTED_SUM_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <new>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/arena.hpp"
#include "../core/bound.hpp"
#include "../core/error.hpp"
#include "../core/expression.hpp"
#include "../core/statistic.hpp"
#include "../simd/batch.hpp"
#include "arithmetic.hpp"
#include "input.hpp"
#include "list.hpp"
#include "map.hpp"
#include "scalar.hpp"

namespace xmerge
{
    /**
     * sum_k w_k * e_k over a run-time list of K tensor expressions.
     *
     * Weights are numbers or scalar expressions (computed statistics). The
     * sum runs in model order: w_0 e_0, then one fused multiply-add per
     * further term.
     */
    template <class E, class W = scalar_constant>
    class weighted_sum_node : public tensor_expression<weighted_sum_node<E, W>>
    {
    public:
        weighted_sum_node(expression_list<E> terms, std::vector<W> weights);

        const shape_type& shape() const noexcept { return m_terms[0].shape(); }
        std::string name() const { return m_terms[0].name(); }
        const expression_list<E>& terms() const noexcept { return m_terms; }
        const std::vector<W>& weights() const noexcept { return m_weights; }

        template <class F>
        void for_each_input(F&& f) const
        {
            m_terms.for_each_input(f);
            for (const auto& w : m_weights)
            {
                w.for_each_input(f);
            }
        }

    private:
        expression_list<E> m_terms;
        std::vector<W> m_weights;
    };

    /// sum_k w_k * terms[k]; throws parameter_error on an empty list, a weight
    /// count that differs from the term count, or a non-finite weight.
    template <class E>
    auto weighted_sum(const expression_list<E>& terms, const std::vector<double>& weights);

    /// Same, with weights that are scalar expressions.
    template <class E, class S>
    auto weighted_sum(const expression_list<E>& terms, const expression_list<S>& weights);

    /// sum_k terms[k].
    template <class E>
    auto sum(const expression_list<E>& terms);

    /// (1 / K) * sum_k terms[k].
    template <class E>
    auto mean(const expression_list<E>& terms);

    namespace detail
    {
        /// Throws unless every weight is finite and there is one per term.
        inline void check_weights(const std::string& tensor, std::size_t terms, const std::vector<double>& weights, const char* parameter = "weights");

        /// sum_k w_k * term_k over a run-time number of bound terms (arena memory).
        template <class Bound>
        struct bound_weighted_sum
        {
            const Bound* terms;
            const float* weights;
            std::size_t count;
            bool uniform;  // Bound is bound_input and every term has terms[0]'s dtype

            template <class B>
            XMERGE_FORCE_INLINE B packet(std::size_t i) const noexcept
            {
                if constexpr (std::is_same<Bound, bound_input>::value)
                {
                    if (uniform)
                    {
                        return with_element_type(terms[0].type, [&](auto tag)
                        {
                            using element = std::remove_pointer_t<decltype(tag)>;
                            const auto x = [&](std::size_t k) { return load_as_float<B>(static_cast<const element*>(terms[k].data) + i); };
                            B acc = simd::batch_traits<B>::broadcast(weights[0]) * x(0);
                            for (std::size_t k = 1; k < count; ++k)
                            {
                                acc = simd::fma(simd::batch_traits<B>::broadcast(weights[k]), x(k), acc);
                            }
                            return acc;
                        });
                    }
                }
                B acc = simd::batch_traits<B>::broadcast(weights[0]) * terms[0].template packet<B>(i);
                for (std::size_t k = 1; k < count; ++k)
                {
                    acc = simd::fma(simd::batch_traits<B>::broadcast(weights[k]), terms[k].template packet<B>(i), acc);
                }
                return acc;
            }
        };

        /**
         * sum_k w_k * (x_k - base_k) where every task vector usually shares one
         * base: the base packet is then read once per batch instead of once per
         * term. Each term is still (x_k - base) * w_k, as in the general sum.
         * When the models are inputs of one dtype (the usual case), the loop
         * over them is compiled for that dtype, with no branch per term.
         */
        template <class BoundX, class BoundBase>
        struct bound_task_vector_sum
        {
            const BoundX* models;
            const BoundBase* bases;
            const float* weights;
            std::size_t count;
            bool shared_base;
            bool uniform;  // BoundX is bound_input and every model has models[0]'s dtype

            template <class B>
            XMERGE_FORCE_INLINE B packet(std::size_t i) const noexcept
            {
                using traits = simd::batch_traits<B>;
                if (shared_base)
                {
                    const B base = bases[0].template packet<B>(i);
                    if constexpr (std::is_same<BoundX, bound_input>::value)
                    {
                        if (uniform)
                        {
                            return with_element_type(models[0].type, [&](auto tag)
                            {
                                using element = std::remove_pointer_t<decltype(tag)>;
                                const auto x = [&](std::size_t k) { return load_as_float<B>(static_cast<const element*>(models[k].data) + i); };
                                B acc = traits::broadcast(weights[0]) * (x(0) - base);
                                for (std::size_t k = 1; k < count; ++k)
                                {
                                    acc = simd::fma(traits::broadcast(weights[k]), x(k) - base, acc);
                                }
                                return acc;
                            });
                        }
                    }
                    B acc = traits::broadcast(weights[0]) * (models[0].template packet<B>(i) - base);
                    for (std::size_t k = 1; k < count; ++k)
                    {
                        acc = simd::fma(traits::broadcast(weights[k]), models[k].template packet<B>(i) - base, acc);
                    }
                    return acc;
                }
                B acc = traits::broadcast(weights[0]) * (models[0].template packet<B>(i) - bases[0].template packet<B>(i));
                for (std::size_t k = 1; k < count; ++k)
                {
                    acc = simd::fma(traits::broadcast(weights[k]), models[k].template packet<B>(i) - bases[k].template packet<B>(i), acc);
                }
                return acc;
            }
        };

        /// True when every bound term is an input of the first term's dtype.
        template <class Bound>
        bool uniform_inputs(const Bound* terms, std::size_t count) noexcept
        {
            if constexpr (std::is_same<Bound, bound_input>::value)
            {
                for (std::size_t k = 1; k < count; ++k)
                {
                    if (terms[k].type != terms[0].type)
                    {
                        return false;
                    }
                }
                return true;
            }
            else
            {
                (void)terms;
                (void)count;
                return false;
            }
        }

        template <class E>
        struct is_task_vector : std::false_type
        {
        };

        template <class X, class Base>
        struct is_task_vector<map_node<minus_fn, X, Base>> : std::integral_constant<bool, is_tensor_expression_v<X> && is_tensor_expression_v<Base>>
        {
        };

        template <class E, class W>
        class evaluator<weighted_sum_node<E, W>>
        {
        public:
            explicit evaluator(const weighted_sum_node<E, W>& node);

            std::size_t collect(statistics_registry& r);
            auto bind(std::size_t begin, std::size_t n, arena& a) const;

        private:
            list_evaluator<E> m_terms;
            list_evaluator<W> m_weights;
            bool m_shared_base = false;  // task vectors of one base memory
        };
    }

    /********************
     * Implementation   *
     ********************/

    template <class E, class W>
    inline weighted_sum_node<E, W>::weighted_sum_node(expression_list<E> terms, std::vector<W> weights)
        : m_terms(std::move(terms))
        , m_weights(std::move(weights))
    {
        detail::check_models(m_terms, "a weighted sum");
        if (m_weights.size() != m_terms.size())
        {
            throw parameter_error(m_terms[0].name(), "weights", "expected " + std::to_string(m_terms.size()) + " values (one per model), got "
                                                                   + std::to_string(m_weights.size()));
        }
    }

    namespace detail
    {
        inline void check_weights(const std::string& tensor, std::size_t terms, const std::vector<double>& weights, const char* parameter)
        {
            if (weights.size() != terms)
            {
                throw parameter_error(tensor, parameter, "expected " + std::to_string(terms) + " values (one per model), got " + std::to_string(weights.size()));
            }
            for (std::size_t k = 0; k < weights.size(); ++k)
            {
                if (!std::isfinite(weights[k]))
                {
                    throw parameter_error(tensor, parameter, "value " + std::to_string(k) + " is not finite (" + std::to_string(weights[k]) + ")");
                }
            }
        }
    }

    template <class E>
    inline auto weighted_sum(const expression_list<E>& terms, const std::vector<double>& weights)
    {
        if (terms.empty())
        {
            throw parameter_error("", "models", "a weighted sum needs at least one model");
        }
        detail::check_weights(terms[0].name(), terms.size(), weights);
        std::vector<scalar_constant> w;
        w.reserve(weights.size());
        for (double x : weights)
        {
            w.emplace_back(x);
        }
        return weighted_sum_node<E, scalar_constant>(terms, std::move(w));
    }

    template <class E, class S>
    inline auto weighted_sum(const expression_list<E>& terms, const expression_list<S>& weights)
    {
        return weighted_sum_node<E, S>(terms, weights.items());
    }

    template <class E>
    inline auto sum(const expression_list<E>& terms)
    {
        return weighted_sum(terms, std::vector<double>(terms.size(), 1.0));
    }

    template <class E>
    inline auto mean(const expression_list<E>& terms)
    {
        auto s = sum(terms);
        return scale(std::move(s), 1.0 / static_cast<double>(terms.size()));
    }

    namespace detail
    {
        template <class E, class W>
        inline evaluator<weighted_sum_node<E, W>>::evaluator(const weighted_sum_node<E, W>& node)
            : m_terms(node.terms()), m_weights(expression_list<W>(node.weights()))
        {
            if constexpr (is_task_vector<E>::value)
            {
                using base_type = std::decay_t<decltype(std::get<1>(node.terms()[0].args()))>;
                if constexpr (std::is_same<base_type, input_node>::value)
                {
                    // One base tensor for every term (the usual task_vectors(models, base)).
                    const auto& first = std::get<1>(node.terms()[0].args()).tensor();
                    m_shared_base = true;
                    for (const auto& t : node.terms())
                    {
                        const auto& b = std::get<1>(t.args()).tensor();
                        m_shared_base = m_shared_base && b.data() == first.data() && b.type() == first.type();
                    }
                }
            }
        }

        template <class E, class W>
        inline std::size_t evaluator<weighted_sum_node<E, W>>::collect(statistics_registry& r)
        {
            return std::max(m_terms.collect(r), m_weights.collect(r));
        }

        template <class E, class W>
        inline auto evaluator<weighted_sum_node<E, W>>::bind(std::size_t begin, std::size_t n, arena& a) const
        {
            const std::size_t k = m_terms.size();
            auto* weights = a.allocate<float>(k);
            for (std::size_t i = 0; i < k; ++i)
            {
                weights[i] = static_cast<float>(m_weights[i].value());
            }
            if constexpr (is_task_vector<E>::value)
            {
                using bound_term = decltype(m_terms[0].bind(begin, n, a));
                using bound_x = std::tuple_element_t<0, decltype(bound_term::args)>;
                using bound_base = std::tuple_element_t<1, decltype(bound_term::args)>;
                auto* models = a.allocate<bound_x>(k);
                auto* bases = a.allocate<bound_base>(m_shared_base ? 1 : k);
                for (std::size_t i = 0; i < k; ++i)
                {
                    const bound_term t = m_terms[i].bind(begin, n, a);
                    new (models + i) bound_x(std::get<0>(t.args));
                    if (!m_shared_base || i == 0)
                    {
                        new (bases + i) bound_base(std::get<1>(t.args));
                    }
                }
                return bound_task_vector_sum<bound_x, bound_base>{models, bases, weights, k, m_shared_base, uniform_inputs(models, k)};
            }
            else
            {
                auto* terms = m_terms.bind(begin, n, a);
                return bound_weighted_sum<std::remove_pointer_t<decltype(terms)>>{terms, weights, k, uniform_inputs(terms, k)};
            }
        }
    }
}

#endif
