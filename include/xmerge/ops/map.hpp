/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_MAP_HPP
#define XMERGE_OPS_MAP_HPP

#include <algorithm>
#include <cstddef>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "../core/arena.hpp"
#include "../core/bound.hpp"
#include "../core/error.hpp"
#include "../core/expression.hpp"
#include "../core/statistic.hpp"
#include "../core/tensor_ref.hpp"
#include "../simd/batch.hpp"
#include "scalar.hpp"

namespace xmerge
{
    /**
     * Element-wise f(args...) over tensor expressions, with scalar
     * expressions broadcast to every element.
     *
     * f is called with `simd::batch` values (and with float in the scalar
     * twin), one per argument, and returns one; a generic lambda such as
     * `[](auto a, auto b) { return simd::max(a, b); }` is the usual form.
     * Every tensor argument must have the same shape.
     */
    template <class F, class... Args>
    class map_node : public tensor_expression<map_node<F, Args...>>
    {
        static_assert(sizeof...(Args) > 0, "map needs at least one argument");
        static_assert(((is_tensor_expression_v<Args> || is_scalar_expression_v<Args>) && ...), "map arguments must be expressions");
        static_assert((is_tensor_expression_v<Args> || ...), "map needs at least one tensor argument");

    public:
        map_node(F f, Args... args);

        const shape_type& shape() const noexcept { return m_shape; }
        std::string name() const;
        const F& function() const noexcept { return m_f; }
        const std::tuple<Args...>& args() const noexcept { return m_args; }

        template <class G>
        void for_each_input(G&& g) const;

        /// Index of the first tensor argument.
        static constexpr std::size_t first_tensor();

    private:
        F m_f;
        std::tuple<Args...> m_args;
        shape_type m_shape;
    };

    namespace detail
    {
        /// Tensor and scalar expressions as they are; numbers become scalar_constant.
        template <class T>
        decltype(auto) as_operand(T&& x)
        {
            if constexpr (std::is_arithmetic<std::decay_t<T>>::value)
            {
                return scalar_constant(static_cast<double>(x));
            }
            else
            {
                return std::forward<T>(x);
            }
        }

        template <class T>
        using as_operand_t = std::decay_t<decltype(as_operand(std::declval<T>()))>;
    }

    /// Lazy element-wise f(args...); numbers among args are broadcast constants.
    template <class F, class... Args>
    auto map(F f, Args&&... args) -> map_node<F, detail::as_operand_t<Args>...>;

    namespace detail
    {
        /// f applied to the packets of its bound operands (f lives in the evaluator).
        template <class F, class... Bound>
        struct bound_map
        {
            const F* f;
            std::tuple<Bound...> args;

            template <class B>
            XMERGE_FORCE_INLINE B packet(std::size_t i) const noexcept
            {
                return packet<B>(i, std::index_sequence_for<Bound...>{});
            }

            template <class B, std::size_t... I>
            XMERGE_FORCE_INLINE B packet(std::size_t i, std::index_sequence<I...>) const noexcept
            {
                return (*f)(std::get<I>(args).template packet<B>(i)...);
            }
        };

        /// A tensor operand bound to the chunk, or a scalar operand broadcast.
        template <class Node>
        auto bind_operand(const evaluator<Node>& ev, std::size_t begin, std::size_t n, arena& a)
        {
            if constexpr (is_tensor_expression_v<Node>)
            {
                return ev.bind(begin, n, a);
            }
            else
            {
                return bound_constant{static_cast<float>(ev.value())};
            }
        }

        template <class F, class... Args>
        class evaluator<map_node<F, Args...>>
        {
        public:
            explicit evaluator(const map_node<F, Args...>& node) : evaluator(node, std::index_sequence_for<Args...>{}) {}

            std::size_t collect(statistics_registry& r);

            auto bind(std::size_t begin, std::size_t n, arena& a) const
            {
                return bind(begin, n, a, std::index_sequence_for<Args...>{});
            }

        private:
            template <std::size_t... I>
            evaluator(const map_node<F, Args...>& node, std::index_sequence<I...>);

            template <std::size_t... I>
            auto bind(std::size_t begin, std::size_t n, arena& a, std::index_sequence<I...>) const
            {
                using bound = bound_map<F, decltype(bind_operand(std::get<I>(m_args), begin, n, a))...>;
                // Braced initialization binds the operands left to right.
                return bound{&m_f, {bind_operand(std::get<I>(m_args), begin, n, a)...}};
            }

            F m_f;
            std::tuple<evaluator<Args>...> m_args;
        };
    }

    /********************
     * Implementation   *
     ********************/

    template <class F, class... Args>
    constexpr std::size_t map_node<F, Args...>::first_tensor()
    {
        constexpr bool is_tensor[] = {is_tensor_expression_v<Args>...};
        for (std::size_t i = 0; i < sizeof...(Args); ++i)
        {
            if (is_tensor[i])
            {
                return i;
            }
        }
        return sizeof...(Args);
    }

    template <class F, class... Args>
    inline map_node<F, Args...>::map_node(F f, Args... args)
        : m_f(std::move(f))
        , m_args(std::move(args)...)
    {
        m_shape = std::get<first_tensor()>(m_args).shape();
        std::string first_name = std::get<first_tensor()>(m_args).name();
        std::apply(
            [&](const auto&... a)
            {
                const auto check = [&](const auto& x)
                {
                    if constexpr (is_tensor_expression_v<decltype(x)>)
                    {
                        if (x.shape() != m_shape)
                        {
                            const std::string other = x.name();
                            throw shape_error(first_name.empty() ? other : first_name, "",
                                              "element-wise operands have shapes " + xmerge::to_string(m_shape)
                                                  + (first_name.empty() ? "" : " ('" + first_name + "')") + " and " + xmerge::to_string(x.shape())
                                                  + (other.empty() ? "" : " ('" + other + "')"));
                        }
                    }
                };
                (check(a), ...);
            },
            m_args);
    }

    template <class F, class... Args>
    inline std::string map_node<F, Args...>::name() const
    {
        std::string n;
        std::apply([&](const auto&... a) { ((n.empty() ? void(n = a.name()) : void()), ...); }, m_args);
        return n;
    }

    template <class F, class... Args>
    template <class G>
    inline void map_node<F, Args...>::for_each_input(G&& g) const
    {
        std::apply([&](const auto&... a) { (a.for_each_input(g), ...); }, m_args);
    }

    template <class F, class... Args>
    inline auto map(F f, Args&&... args) -> map_node<F, detail::as_operand_t<Args>...>
    {
        return map_node<F, detail::as_operand_t<Args>...>(std::move(f), detail::as_operand(std::forward<Args>(args))...);
    }

    namespace detail
    {
        template <class F, class... Args>
        template <std::size_t... I>
        inline evaluator<map_node<F, Args...>>::evaluator(const map_node<F, Args...>& node, std::index_sequence<I...>)
            : m_f(node.function())
            , m_args(std::get<I>(node.args())...)
        {
        }

        template <class F, class... Args>
        inline std::size_t evaluator<map_node<F, Args...>>::collect(statistics_registry& r)
        {
            std::size_t level = 0;
            std::apply([&](auto&... a) { ((level = std::max(level, a.collect(r))), ...); }, m_args);
            return level;
        }
    }
}

#endif
