/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_WEIGHTED_SUM_HPP
#define XMERGE_OPS_WEIGHTED_SUM_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../core/arena.hpp"
#include "../core/error.hpp"
#include "../core/expression.hpp"
#include "../core/statistic.hpp"
#include "../simd/batch.hpp"
#include "arithmetic.hpp"
#include "list.hpp"
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
        void for_each_input(F&& f) const;

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

        template <class E, class W>
        class evaluator<weighted_sum_node<E, W>>
        {
        public:
            explicit evaluator(const weighted_sum_node<E, W>& node);

            std::size_t collect(statistics_registry& r);
            const float* eval(std::size_t begin, std::size_t n, float* dst, arena& a) const;

        private:
            std::vector<evaluator<E>> m_terms;
            std::vector<evaluator<W>> m_weights;
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
        if (m_terms.empty())
        {
            throw parameter_error("", "models", "a weighted sum needs at least one model");
        }
        if (m_weights.size() != m_terms.size())
        {
            throw parameter_error(m_terms[0].name(), "weights", "expected " + std::to_string(m_terms.size()) + " values (one per model), got "
                                                                   + std::to_string(m_weights.size()));
        }
        for (std::size_t k = 1; k < m_terms.size(); ++k)
        {
            if (m_terms[k].shape() != m_terms[0].shape())
            {
                throw shape_error(m_terms[k].name(), "", "model " + std::to_string(k) + " has shape " + to_string(m_terms[k].shape())
                                                             + " but model 0 ('" + m_terms[0].name() + "') has shape " + to_string(m_terms[0].shape()));
            }
        }
    }

    template <class E, class W>
    template <class F>
    inline void weighted_sum_node<E, W>::for_each_input(F&& f) const
    {
        for (const auto& t : m_terms)
        {
            t.for_each_input(f);
        }
        for (const auto& w : m_weights)
        {
            w.for_each_input(f);
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
        {
            m_terms.reserve(node.terms().size());
            for (const auto& t : node.terms())
            {
                m_terms.emplace_back(t);
            }
            m_weights.reserve(node.weights().size());
            for (const auto& w : node.weights())
            {
                m_weights.emplace_back(w);
            }
        }

        template <class E, class W>
        inline std::size_t evaluator<weighted_sum_node<E, W>>::collect(statistics_registry& r)
        {
            std::size_t level = 0;
            for (auto& t : m_terms)
            {
                level = std::max(level, t.collect(r));
            }
            for (auto& w : m_weights)
            {
                level = std::max(level, w.collect(r));
            }
            return level;
        }

        template <class E, class W>
        inline const float* evaluator<weighted_sum_node<E, W>>::eval(std::size_t begin, std::size_t n, float* dst, arena& a) const
        {
            const float w0 = static_cast<float>(m_weights[0].value());
            simd::transform(n, dst, multiplies_fn{}, m_terms[0].eval(begin, n, dst, a), w0);
            arena::frame frame(a);
            float* scratch = frame.acquire();
            for (std::size_t k = 1; k < m_terms.size(); ++k)
            {
                const float wk = static_cast<float>(m_weights[k].value());
                const float* term = m_terms[k].eval(begin, n, scratch, a);
                simd::transform(n, dst, [](auto w, auto x, auto acc) { return simd::fma(w, x, acc); }, wk, term, dst);
            }
            return dst;
        }
    }
}

#endif
