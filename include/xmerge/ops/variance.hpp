/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_VARIANCE_HPP
#define XMERGE_OPS_VARIANCE_HPP

#include <algorithm>
#include <cstddef>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "../core/arena.hpp"
#include "../core/bound.hpp"
#include "../core/error.hpp"
#include "../core/expression.hpp"
#include "../core/statistic.hpp"
#include "../simd/batch.hpp"
#include "list.hpp"

namespace xmerge
{
    /**
     * Per element, the population variance across K tensors:
     * (1 / K) sum_k (t_k - mean)^2, computed from the mean in two loops
     * (not from the mean of squares, which cancels badly).
     */
    template <class E>
    class variance_node : public tensor_expression<variance_node<E>>
    {
    public:
        explicit variance_node(expression_list<E> terms);

        const shape_type& shape() const noexcept { return m_terms[0].shape(); }
        std::string name() const { return m_terms[0].name(); }
        const expression_list<E>& terms() const noexcept { return m_terms; }

        template <class F>
        void for_each_input(F&& f) const
        {
            for (const auto& t : m_terms)
            {
                t.for_each_input(f);
            }
        }

    private:
        expression_list<E> m_terms;
    };

    /// Per-element population variance across the terms.
    template <class E>
    variance_node<E> variance(const expression_list<E>& terms)
    {
        return variance_node<E>(terms);
    }

    namespace detail
    {
        template <class Bound>
        struct bound_variance
        {
            const Bound* terms;
            std::size_t count;

            template <class B>
            XMERGE_FORCE_INLINE B packet(std::size_t i) const noexcept
            {
                const B inv = simd::batch_traits<B>::broadcast(1.0f / static_cast<float>(count));
                B mean = terms[0].template packet<B>(i);
                for (std::size_t k = 1; k < count; ++k)
                {
                    mean += terms[k].template packet<B>(i);
                }
                mean *= inv;
                B acc = simd::batch_traits<B>::broadcast(0.0f);
                for (std::size_t k = 0; k < count; ++k)
                {
                    const B d = terms[k].template packet<B>(i) - mean;
                    acc = simd::fma(d, d, acc);
                }
                return acc * inv;
            }
        };

        template <class E>
        class evaluator<variance_node<E>>
        {
        public:
            explicit evaluator(const variance_node<E>& node)
            {
                m_terms.reserve(node.terms().size());
                for (const auto& t : node.terms())
                {
                    m_terms.emplace_back(t);
                }
            }

            std::size_t collect(statistics_registry& r)
            {
                std::size_t level = 0;
                for (auto& t : m_terms)
                {
                    level = std::max(level, t.collect(r));
                }
                return level;
            }

            auto bind(std::size_t begin, std::size_t n, arena& a) const
            {
                using bound_term = decltype(m_terms[0].bind(begin, n, a));
                auto* terms = a.allocate<bound_term>(m_terms.size());
                for (std::size_t i = 0; i < m_terms.size(); ++i)
                {
                    new (terms + i) bound_term(m_terms[i].bind(begin, n, a));
                }
                return bound_variance<bound_term>{terms, m_terms.size()};
            }

        private:
            std::vector<evaluator<E>> m_terms;
        };
    }

    template <class E>
    inline variance_node<E>::variance_node(expression_list<E> terms) : m_terms(std::move(terms))
    {
        if (m_terms.empty())
        {
            throw parameter_error("", "models", "a variance needs at least one model");
        }
        for (std::size_t k = 1; k < m_terms.size(); ++k)
        {
            if (m_terms[k].shape() != m_terms[0].shape())
            {
                throw shape_error(m_terms[k].name(), "", "model " + std::to_string(k) + " has shape " + to_string(m_terms[k].shape())
                                                             + " but model 0 has shape " + to_string(m_terms[0].shape()));
            }
        }
    }
}

#endif
