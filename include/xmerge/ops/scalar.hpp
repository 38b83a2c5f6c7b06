/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_SCALAR_HPP
#define XMERGE_OPS_SCALAR_HPP

#include <algorithm>
#include <cstddef>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "../core/expression.hpp"
#include "../core/statistic.hpp"

namespace xmerge
{
    /// A number known when the expression is built.
    class scalar_constant : public scalar_expression<scalar_constant>
    {
    public:
        explicit scalar_constant(double v) noexcept : m_value(v) {}
        double value() const noexcept { return m_value; }
        std::string name() const { return {}; }
        template <class F>
        void for_each_input(F&&) const {}

    private:
        double m_value;
    };

    namespace detail
    {
        /**
         * A number set by the evaluator that computes it (after its
         * statistics), read by the nodes it was handed to. Internal plumbing
         * for nodes that derive several coefficients from one statistic.
         */
        class deferred_scalar : public scalar_expression<deferred_scalar>
        {
        public:
            deferred_scalar() : m_value(std::make_shared<double>(0.0)) {}
            void set(double v) const noexcept { *m_value = v; }
            double value() const noexcept { return *m_value; }
            std::string name() const { return {}; }
            template <class F>
            void for_each_input(F&&) const {}

        private:
            std::shared_ptr<double> m_value;
        };
    }

    /**
     * f(values of S...) in double precision, computed after the statistics
     * it depends on. f must be callable with doubles.
     */
    template <class F, class... S>
    class scalar_map : public scalar_expression<scalar_map<F, S...>>
    {
    public:
        scalar_map(F f, S... args) : m_f(std::move(f)), m_args(std::move(args)...) {}

        const F& function() const noexcept { return m_f; }
        const std::tuple<S...>& args() const noexcept { return m_args; }
        std::string name() const;
        template <class G>
        void for_each_input(G&& g) const;

    private:
        F m_f;
        std::tuple<S...> m_args;
    };

    namespace detail
    {
        template <class T>
        using enable_arithmetic_t = std::enable_if_t<std::is_arithmetic<std::decay_t<T>>::value, int>;

        /// A scalar expression as is; a number as a scalar_constant.
        template <class T>
        decltype(auto) as_scalar(T&& x)
        {
            if constexpr (std::is_arithmetic<std::decay_t<T>>::value)
            {
                return scalar_constant(static_cast<double>(x));
            }
            else
            {
                static_assert(is_scalar_expression_v<T>, "expected a number or a scalar expression");
                return std::forward<T>(x);
            }
        }

        template <class T>
        using as_scalar_t = std::decay_t<decltype(as_scalar(std::declval<T>()))>;

        template <class T>
        constexpr bool is_scalar_operand_v = is_scalar_expression_v<T> || std::is_arithmetic<std::decay_t<T>>::value;

        // At least one scalar expression; the other a scalar expression or a number.
        template <class A, class B>
        constexpr bool is_scalar_binary_v = (is_scalar_expression_v<A> && is_scalar_operand_v<B>) || (is_scalar_operand_v<A> && is_scalar_expression_v<B>);
    }

    /// Lazy f(s...) over scalar expressions or numbers.
    template <class F, class... S>
    auto apply(F f, S&&... s) -> scalar_map<F, detail::as_scalar_t<S>...>;

    /** @name Arithmetic between scalar expressions (and numbers) */
    ///@{
    template <class A, class B, std::enable_if_t<detail::is_scalar_binary_v<A, B>, int> = 0>
    auto operator+(A&& a, B&& b);
    template <class A, class B, std::enable_if_t<detail::is_scalar_binary_v<A, B>, int> = 0>
    auto operator-(A&& a, B&& b);
    template <class A, class B, std::enable_if_t<detail::is_scalar_binary_v<A, B>, int> = 0>
    auto operator*(A&& a, B&& b);
    template <class A, class B, std::enable_if_t<detail::is_scalar_binary_v<A, B>, int> = 0>
    auto operator/(A&& a, B&& b);
    template <class A, std::enable_if_t<is_scalar_expression_v<A>, int> = 0>
    auto operator-(A&& a);
    ///@}

    namespace detail
    {
        template <>
        class evaluator<deferred_scalar>
        {
        public:
            explicit evaluator(const deferred_scalar& d) noexcept : m_node(d) {}
            std::size_t collect(statistics_registry&) noexcept { return 0; }
            double value() const noexcept { return m_node.value(); }

        private:
            deferred_scalar m_node;
        };

        template <>
        class evaluator<scalar_constant>
        {
        public:
            explicit evaluator(const scalar_constant& c) noexcept : m_value(c.value()) {}
            std::size_t collect(statistics_registry&) noexcept { return 0; }
            double value() const noexcept { return m_value; }

        private:
            double m_value;
        };

        template <class F, class... S>
        class evaluator<scalar_map<F, S...>>
        {
        public:
            explicit evaluator(const scalar_map<F, S...>& node);
            std::size_t collect(statistics_registry& r);
            double value() const;

        private:
            template <std::size_t... I>
            evaluator(const scalar_map<F, S...>& node, std::index_sequence<I...>);

            F m_f;
            std::tuple<evaluator<S>...> m_args;
        };

        struct plus_fn
        {
            template <class T>
            T operator()(const T& a, const T& b) const noexcept { return a + b; }
        };
        struct minus_fn
        {
            template <class T>
            T operator()(const T& a, const T& b) const noexcept { return a - b; }
        };
        struct multiplies_fn
        {
            template <class T>
            T operator()(const T& a, const T& b) const noexcept { return a * b; }
        };
        struct divides_fn
        {
            template <class T>
            T operator()(const T& a, const T& b) const noexcept { return a / b; }
        };
        struct negate_fn
        {
            template <class T>
            T operator()(const T& a) const noexcept { return -a; }
        };
    }

    /********************
     * Implementation   *
     ********************/

    template <class F, class... S>
    inline std::string scalar_map<F, S...>::name() const
    {
        std::string n;
        std::apply([&](const auto&... a) { ((n.empty() ? void(n = a.name()) : void()), ...); }, m_args);
        return n;
    }

    template <class F, class... S>
    template <class G>
    inline void scalar_map<F, S...>::for_each_input(G&& g) const
    {
        std::apply([&](const auto&... a) { (a.for_each_input(g), ...); }, m_args);
    }

    template <class F, class... S>
    inline auto apply(F f, S&&... s) -> scalar_map<F, detail::as_scalar_t<S>...>
    {
        return scalar_map<F, detail::as_scalar_t<S>...>(std::move(f), detail::as_scalar(std::forward<S>(s))...);
    }

    template <class A, class B, std::enable_if_t<detail::is_scalar_binary_v<A, B>, int>>
    inline auto operator+(A&& a, B&& b) { return xmerge::apply(detail::plus_fn{}, std::forward<A>(a), std::forward<B>(b)); }
    template <class A, class B, std::enable_if_t<detail::is_scalar_binary_v<A, B>, int>>
    inline auto operator-(A&& a, B&& b) { return xmerge::apply(detail::minus_fn{}, std::forward<A>(a), std::forward<B>(b)); }
    template <class A, class B, std::enable_if_t<detail::is_scalar_binary_v<A, B>, int>>
    inline auto operator*(A&& a, B&& b) { return xmerge::apply(detail::multiplies_fn{}, std::forward<A>(a), std::forward<B>(b)); }
    template <class A, class B, std::enable_if_t<detail::is_scalar_binary_v<A, B>, int>>
    inline auto operator/(A&& a, B&& b) { return xmerge::apply(detail::divides_fn{}, std::forward<A>(a), std::forward<B>(b)); }
    template <class A, std::enable_if_t<is_scalar_expression_v<A>, int>>
    inline auto operator-(A&& a) { return xmerge::apply(detail::negate_fn{}, std::forward<A>(a)); }

    namespace detail
    {
        template <class F, class... S>
        inline evaluator<scalar_map<F, S...>>::evaluator(const scalar_map<F, S...>& node)
            : evaluator(node, std::index_sequence_for<S...>{})
        {
        }

        template <class F, class... S>
        template <std::size_t... I>
        inline evaluator<scalar_map<F, S...>>::evaluator(const scalar_map<F, S...>& node, std::index_sequence<I...>)
            : m_f(node.function())
            , m_args(std::get<I>(node.args())...)
        {
        }

        template <class F, class... S>
        inline std::size_t evaluator<scalar_map<F, S...>>::collect(statistics_registry& r)
        {
            std::size_t level = 0;
            std::apply([&](auto&... a) { ((level = std::max(level, a.collect(r))), ...); }, m_args);
            return level;
        }

        template <class F, class... S>
        inline double evaluator<scalar_map<F, S...>>::value() const
        {
            return std::apply([&](const auto&... a) { return static_cast<double>(m_f(a.value()...)); }, m_args);
        }
    }
}

#endif
