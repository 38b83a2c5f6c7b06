/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_SHARED_HPP
#define XMERGE_OPS_SHARED_HPP

#include <cstddef>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "../config.hpp"
#include "../core/arena.hpp"
#include "../core/bound.hpp"
#include "../core/expression.hpp"
#include "../core/sharing.hpp"
#include "../core/statistic.hpp"
#include "../core/tensor_ref.hpp"
#include "../simd/batch.hpp"
#include "../simd/kernels.hpp"

namespace xmerge
{
    /**
     * A sub-expression used in several places of a tree and evaluated once.
     *
     * Copies of a shared node (and every place it is used) refer to one
     * expression; an evaluation builds one evaluator for it, so its
     * statistics (a selection, a norm, a sort) are computed once however
     * many times it is read, and its values are computed once per chunk into
     * scratch memory that every place reading it loads from. Wrap anything
     * that is both read element-wise and measured, or that feeds several
     * terms:
     *
     *     auto pruned = shared(d * top_k_mask(d, k));
     *     auto merged = pruned * (norm_l1(d) / norm_l1(pruned));
     */
    template <class E>
    class shared_node : public std::conditional_t<is_tensor_expression_v<E>, tensor_expression<shared_node<E>>, scalar_expression<shared_node<E>>>
    {
    public:
        explicit shared_node(E e) : m_expr(std::make_shared<const E>(std::move(e))) {}

        const E& expression() const noexcept { return *m_expr; }
        const void* identity() const noexcept { return m_expr.get(); }
        std::string name() const { return m_expr->name(); }

        template <class T = E, class = std::enable_if_t<is_tensor_expression_v<T>>>
        const shape_type& shape() const noexcept
        {
            return m_expr->shape();
        }

        template <class F>
        void for_each_input(F&& f) const
        {
            m_expr->for_each_input(f);
        }

    private:
        std::shared_ptr<const E> m_expr;
    };

    /// Marks e as evaluated once however often it is used.
    template <class E>
    auto shared(E&& e)
    {
        return shared_node<std::decay_t<E>>(std::forward<E>(e));
    }

    namespace detail
    {
        template <class E>
        class evaluator<shared_node<E>>
        {
        public:
            explicit evaluator(const shared_node<E>& node)
                : m_state(sharing_scope::get<state>(node.identity(), [&] { return std::make_shared<state>(node.expression()); }))
            {
            }

            std::size_t collect(statistics_registry& r)
            {
                if (!m_state->collected)
                {
                    m_state->level = m_state->eval.collect(r);
                    m_state->collected = true;
                }
                return m_state->level;
            }

            /// The chunk's values, computed once into arena memory however many
            /// places read them. Always stored, even when read once: reading the
            /// expression in place would compile it into every consumer as well.
            template <class T = E, class = std::enable_if_t<is_tensor_expression_v<T>>>
            bound_pointer bind(std::size_t begin, std::size_t n, arena& a) const
            {
                const float* values = a.recall(m_state.get(), begin);
                if (!values)
                {
                    float* buf = padded_buffer(n, a);
                    simd::store(n, buf, m_state->eval.bind(begin, n, a));
                    a.remember(m_state.get(), begin, buf);
                    values = buf;
                }
                return {values};
            }

            template <class T = E, class = std::enable_if_t<is_scalar_expression_v<T>>>
            double value() const
            {
                return m_state->eval.value();
            }

        private:
            struct state
            {
                explicit state(const E& e) : eval(e) {}
                evaluator<E> eval;
                bool collected = false;
                std::size_t level = 0;
            };

            std::shared_ptr<state> m_state;
        };
    }
}

#endif
