/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_ANY_HPP
#define XMERGE_OPS_ANY_HPP

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "../core/arena.hpp"
#include "../core/bound.hpp"
#include "../core/expression.hpp"
#include "../core/statistic.hpp"
#include "../core/tensor_ref.hpp"

/**
 * @file
 * Type-erased expressions, for strategy boundaries: a method chosen at run
 * time (from a recipe), a container of mixed strategies, or simply a way to
 * keep a deep expression type out of an interface and out of compile time.
 * The erased expression is computed into a chunk buffer (one virtual call
 * and one pass over L1-resident memory per chunk), then read like an input.
 */

namespace xmerge
{
    namespace detail
    {
        using input_visitor = std::function<void(const const_tensor_ref&)>;

        class any_tensor_evaluator
        {
        public:
            virtual ~any_tensor_evaluator() = default;
            virtual std::size_t collect(statistics_registry& r) = 0;
            /// The chunk's values in an arena buffer readable up to padded_size(n).
            virtual const float* materialize(std::size_t begin, std::size_t n, arena& a) const = 0;
            /// The chunk's values stored as `type` at `out` (the root of an evaluation: no buffer in between).
            virtual void store_as(dtype type, std::size_t begin, std::size_t n, void* out, arena& a) const = 0;
        };

        class any_scalar_evaluator
        {
        public:
            virtual ~any_scalar_evaluator() = default;
            virtual std::size_t collect(statistics_registry& r) = 0;
            virtual double value() const = 0;
        };

        template <class Evaluator>
        class any_node
        {
        public:
            virtual ~any_node() = default;
            virtual const shape_type& shape() const = 0;
            virtual std::string name() const = 0;
            virtual void for_each_input(const input_visitor& f) const = 0;
            virtual std::unique_ptr<Evaluator> make_evaluator() const = 0;
        };

        template <class E>
        class tensor_evaluator_impl final : public any_tensor_evaluator
        {
        public:
            explicit tensor_evaluator_impl(const E& e) : m_eval(e) {}
            std::size_t collect(statistics_registry& r) override { return m_eval.collect(r); }
            const float* materialize(std::size_t begin, std::size_t n, arena& a) const override
            {
                float* buf = padded_buffer(n, a);
                simd::store(n, buf, m_eval.bind(begin, n, a));
                return buf;
            }
            void store_as(dtype type, std::size_t, std::size_t n, void* out, arena& a) const override;

        private:
            evaluator<E> m_eval;
        };

        template <class S>
        class scalar_evaluator_impl final : public any_scalar_evaluator
        {
        public:
            explicit scalar_evaluator_impl(const S& s) : m_eval(s) {}
            std::size_t collect(statistics_registry& r) override { return m_eval.collect(r); }
            double value() const override { return m_eval.value(); }

        private:
            evaluator<S> m_eval;
        };

        template <class E, class Evaluator, class Impl>
        class any_node_impl final : public any_node<Evaluator>
        {
        public:
            explicit any_node_impl(E e) : m_expr(std::move(e)) {}
            const shape_type& shape() const override
            {
                if constexpr (is_tensor_expression_v<E>)
                {
                    return m_expr.shape();
                }
                else
                {
                    static const shape_type scalar_shape{};
                    return scalar_shape;
                }
            }
            std::string name() const override { return m_expr.name(); }
            void for_each_input(const input_visitor& f) const override { m_expr.for_each_input(f); }
            std::unique_ptr<Evaluator> make_evaluator() const override { return std::make_unique<Impl>(m_expr); }

        private:
            E m_expr;
        };
    }

    /// Any tensor expression, behind one type; used as `any_expression` (a class template only so that every node is one).
    template <class Evaluator = detail::any_tensor_evaluator>
    class basic_any_expression : public tensor_expression<basic_any_expression<Evaluator>>
    {
    public:
        template <class E, class = std::enable_if_t<is_tensor_expression_v<E> && !std::is_same<std::decay_t<E>, basic_any_expression>::value>>
        basic_any_expression(E&& e)
            : m_node(std::make_shared<detail::any_node_impl<std::decay_t<E>, Evaluator, detail::tensor_evaluator_impl<std::decay_t<E>>>>(std::forward<E>(e)))
        {
        }

        const shape_type& shape() const { return m_node->shape(); }
        std::string name() const { return m_node->name(); }
        template <class F>
        void for_each_input(F&& f) const { m_node->for_each_input(std::forward<F>(f)); }
        const detail::any_node<Evaluator>& node() const noexcept { return *m_node; }

    private:
        std::shared_ptr<const detail::any_node<Evaluator>> m_node;
    };

    using any_expression = basic_any_expression<>;

    /// Any scalar expression, behind one type.
    class any_scalar : public scalar_expression<any_scalar>
    {
    public:
        template <class S, class = std::enable_if_t<is_scalar_expression_v<S> && !std::is_same<std::decay_t<S>, any_scalar>::value>>
        any_scalar(S&& s)
            : m_node(std::make_shared<detail::any_node_impl<std::decay_t<S>, detail::any_scalar_evaluator, detail::scalar_evaluator_impl<std::decay_t<S>>>>(std::forward<S>(s)))
        {
        }

        std::string name() const { return m_node->name(); }
        template <class F>
        void for_each_input(F&& f) const { m_node->for_each_input(std::forward<F>(f)); }
        const detail::any_node<detail::any_scalar_evaluator>& node() const noexcept { return *m_node; }

    private:
        std::shared_ptr<const detail::any_node<detail::any_scalar_evaluator>> m_node;
    };

    namespace detail
    {
        template <>
        class evaluator<any_expression>
        {
        public:
            explicit evaluator(const any_expression& e) : m_impl(e.node().make_evaluator()) {}
            std::size_t collect(statistics_registry& r) { return m_impl->collect(r); }
            bound_pointer bind(std::size_t begin, std::size_t n, arena& a) const { return {m_impl->materialize(begin, n, a)}; }
            /// Elements [begin, begin + n) stored as `type` at `out`, without the buffer bind() fills.
            void store_chunk(dtype type, std::size_t begin, std::size_t n, void* out, arena& a) const { m_impl->store_as(type, begin, n, out, a); }

        private:
            std::unique_ptr<any_tensor_evaluator> m_impl;
        };

        template <>
        class evaluator<any_scalar>
        {
        public:
            explicit evaluator(const any_scalar& s) : m_impl(s.node().make_evaluator()) {}
            std::size_t collect(statistics_registry& r) { return m_impl->collect(r); }
            double value() const { return m_impl->value(); }

        private:
            std::unique_ptr<any_scalar_evaluator> m_impl;
        };
    }

    namespace detail
    {
        template <class E>
        inline void tensor_evaluator_impl<E>::store_as(dtype type, std::size_t begin, std::size_t n, void* out, arena& a) const
        {
            detail::store_packets_as(type, n, out, m_eval.bind(begin, n, a));
        }
    }
}

#endif
