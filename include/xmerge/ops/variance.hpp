/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_VARIANCE_HPP
#define XMERGE_OPS_VARIANCE_HPP

#include <cstddef>
#include <type_traits>
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
            m_terms.for_each_input(f);
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
            explicit evaluator(const variance_node<E>& node) : m_terms(node.terms()) {}

            std::size_t collect(statistics_registry& r) { return m_terms.collect(r); }

            auto bind(std::size_t begin, std::size_t n, arena& a) const
            {
                return bound_variance<std::remove_pointer_t<decltype(m_terms.bind(begin, n, a))>>{m_terms.bind(begin, n, a), m_terms.size()};
            }

        private:
            list_evaluator<E> m_terms;
        };
    }

    template <class E>
    inline variance_node<E>::variance_node(expression_list<E> terms) : m_terms(std::move(terms))
    {
        detail::check_models(m_terms, "a variance");
    }
}

#endif
