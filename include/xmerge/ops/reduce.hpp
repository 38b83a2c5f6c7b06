/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_REDUCE_HPP
#define XMERGE_OPS_REDUCE_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../core/arena.hpp"
#include "../core/bound.hpp"
#include "../core/error.hpp"
#include "../core/expression.hpp"
#include "../core/chunk_statistic.hpp"
#include "../core/statistic.hpp"
#include "../core/tensor_ref.hpp"
#include "../simd/batch.hpp"
#include "../simd/kernels.hpp"
#include "scalar.hpp"

namespace xmerge
{
    /**
     * A per-tensor reduction of one or more tensor expressions of the same
     * shape, computed in the statistics phase.
     *
     * R is a reducer: `double identity() const`, `template <class... Bound> double chunk(std::size_t n, const Bound&...) const`
     * (the reduction of one chunk of bound operands, through the kernels of
     * simd/kernels.hpp),
     * `double combine(double, double) const` (associative), and
     * `double finish(double) const`. Chunk results are combined in element
     * order, in double precision, so the value does not depend on threads.
     */
    template <class R, class... Args>
    class reduce_node : public scalar_expression<reduce_node<R, Args...>>
    {
        static_assert((is_tensor_expression_v<Args> && ...), "reductions read tensor expressions");

    public:
        explicit reduce_node(R r, Args... args);

        const R& reducer() const noexcept { return m_reducer; }
        const std::tuple<Args...>& args() const noexcept { return m_args; }
        const shape_type& shape() const noexcept { return std::get<0>(m_args).shape(); }
        std::string name() const { return std::get<0>(m_args).name(); }

        template <class F>
        void for_each_input(F&& f) const
        {
            std::apply([&](const auto&... a) { (a.for_each_input(f), ...); }, m_args);
        }

    private:
        R m_reducer;
        std::tuple<Args...> m_args;
    };

    /** @name Reductions (scalar expressions) */
    ///@{
    /// sum_i a_i b_i
    template <class A, class B, std::enable_if_t<is_tensor_expression_v<A> && is_tensor_expression_v<B>, int> = 0>
    auto dot(A&& a, B&& b);
    /// sum_i a_i^2
    template <class A, std::enable_if_t<is_tensor_expression_v<A>, int> = 0>
    auto sum_squares(A&& a);
    /// sqrt(sum_i a_i^2)
    template <class A, std::enable_if_t<is_tensor_expression_v<A>, int> = 0>
    auto norm(A&& a);
    /// sum_i |a_i|
    template <class A, std::enable_if_t<is_tensor_expression_v<A>, int> = 0>
    auto norm_l1(A&& a);
    /// max_i |a_i| (0 for an empty tensor)
    template <class A, std::enable_if_t<is_tensor_expression_v<A>, int> = 0>
    auto norm_inf(A&& a);
    /// sum_i a_i
    template <class A, std::enable_if_t<is_tensor_expression_v<A>, int> = 0>
    auto total(A&& a);
    /// The number of elements that are not zero (NaN counts as not zero).
    template <class A, std::enable_if_t<is_tensor_expression_v<A>, int> = 0>
    auto count_nonzero(A&& a);
    ///@}

    /** @name The same for every reference kind of a node
     *  xtensor has unconstrained functions named norm and count_nonzero. With
     *  both namespaces in use, these overloads (every node is a class template)
     *  are more specialized than xtensor's, so the call stays xmerge's.
     */
    ///@{
    template <template <class...> class N, class... T, std::enable_if_t<is_tensor_expression_v<N<T...>>, int> = 0>
    auto norm(const N<T...>& a) { return xmerge::norm<const N<T...>&>(a); }
    template <template <class...> class N, class... T, std::enable_if_t<is_tensor_expression_v<N<T...>>, int> = 0>
    auto norm(N<T...>& a) { return xmerge::norm<const N<T...>&>(a); }
    template <template <class...> class N, class... T, std::enable_if_t<is_tensor_expression_v<N<T...>>, int> = 0>
    auto norm(N<T...>&& a) { return xmerge::norm<N<T...>>(std::move(a)); }
    template <template <class...> class N, class... T, std::enable_if_t<is_tensor_expression_v<N<T...>>, int> = 0>
    auto count_nonzero(const N<T...>& a) { return xmerge::count_nonzero<const N<T...>&>(a); }
    template <template <class...> class N, class... T, std::enable_if_t<is_tensor_expression_v<N<T...>>, int> = 0>
    auto count_nonzero(N<T...>& a) { return xmerge::count_nonzero<const N<T...>&>(a); }
    template <template <class...> class N, class... T, std::enable_if_t<is_tensor_expression_v<N<T...>>, int> = 0>
    auto count_nonzero(N<T...>&& a) { return xmerge::count_nonzero<N<T...>>(std::move(a)); }
    ///@}

    namespace detail
    {
        struct sum_reducer_base
        {
            double identity() const noexcept { return 0.0; }
            double combine(double a, double b) const noexcept { return a + b; }
            double finish(double v) const noexcept { return v; }
        };

        struct dot_reducer : sum_reducer_base
        {
            template <class A, class B>
            double chunk(std::size_t n, const A& a, const B& b) const noexcept
            {
                return simd::dot(n, a, b);
            }
        };

        struct sum_squares_reducer : sum_reducer_base
        {
            template <class A>
            double chunk(std::size_t n, const A& a) const noexcept
            {
                return simd::dot(n, a, a);
            }
        };

        struct sum_abs_reducer : sum_reducer_base
        {
            template <class A>
            double chunk(std::size_t n, const A& a) const noexcept
            {
                return simd::sum(n, [](auto x) { return simd::abs(x); }, a);
            }
        };

        struct sum_reducer : sum_reducer_base
        {
            template <class A>
            double chunk(std::size_t n, const A& a) const noexcept
            {
                return simd::sum(n, [](auto x) { return x; }, a);
            }
        };

        struct nonzero_reducer : sum_reducer_base
        {
            template <class A>
            double chunk(std::size_t n, const A& a) const noexcept
            {
                return simd::sum(n, [](auto x) { return simd::select(x != decltype(x)(0.0f), decltype(x)(1.0f), decltype(x)(0.0f)); }, a);
            }
        };

        struct max_abs_reducer
        {
            double identity() const noexcept { return 0.0; }
            double combine(double a, double b) const noexcept { return std::max(a, b); }
            double finish(double v) const noexcept { return v; }
            template <class A>
            double chunk(std::size_t n, const A& a) const noexcept
            {
                return simd::maximum(n, 0.0f, [](auto x) { return simd::abs(x); }, a);
            }
        };

        struct sqrt_fn
        {
            double operator()(double x) const noexcept { return std::sqrt(x); }
        };

        /// A reducer as a chunk-statistic kernel: one partial value per task, folded in task order.
        template <class R>
        struct reduce_kernel
        {
            using partial = double;

            R reducer;
            double value = 0.0;
            bool done = false;

            bool begin_pass(const pass_layout& layout, std::vector<double>& partials)
            {
                partials.assign(done ? 0 : layout.tasks(), reducer.identity());
                return !done;
            }

            template <class... Bound>
            void accumulate(double& task_value, const chunk_view& chunk, const Bound&... operands) const
            {
                task_value = reducer.combine(task_value, reducer.chunk(chunk.size, operands...));
            }

            void end_pass(std::vector<double>& partials)
            {
                double v = reducer.identity();
                for (double p : partials)
                {
                    v = reducer.combine(v, p);
                }
                value = reducer.finish(v);
                done = true;
            }
        };

        template <class R, class... Args>
        class evaluator<reduce_node<R, Args...>> final : public chunk_statistic<reduce_kernel<R>, evaluator<Args>...>
        {
        public:
            explicit evaluator(const reduce_node<R, Args...>& node) : evaluator(node, std::index_sequence_for<Args...>{}) {}

            double value() const noexcept { return this->kernel().value; }

        private:
            template <std::size_t... I>
            evaluator(const reduce_node<R, Args...>& node, std::index_sequence<I...>)
                : chunk_statistic<reduce_kernel<R>, evaluator<Args>...>(xmerge::numel(node.shape()), reduce_kernel<R>{node.reducer()}, std::get<I>(node.args())...)
            {
            }
        };
    }

    /********************
     * Implementation   *
     ********************/

    template <class R, class... Args>
    inline reduce_node<R, Args...>::reduce_node(R r, Args... args)
        : m_reducer(std::move(r))
        , m_args(std::move(args)...)
    {
        const auto& shape0 = std::get<0>(m_args).shape();
        std::apply(
            [&](const auto&... a)
            {
                const auto check = [&](const auto& x)
                {
                    if (x.shape() != shape0)
                    {
                        throw shape_error(x.name(), "", "reduction operands have shapes " + xmerge::to_string(shape0) + " and " + xmerge::to_string(x.shape()));
                    }
                };
                (check(a), ...);
            },
            m_args);
    }

    template <class A, class B, std::enable_if_t<is_tensor_expression_v<A> && is_tensor_expression_v<B>, int>>
    inline auto dot(A&& a, B&& b)
    {
        return reduce_node<detail::dot_reducer, std::decay_t<A>, std::decay_t<B>>({}, std::forward<A>(a), std::forward<B>(b));
    }

    template <class A, std::enable_if_t<is_tensor_expression_v<A>, int>>
    inline auto sum_squares(A&& a)
    {
        return reduce_node<detail::sum_squares_reducer, std::decay_t<A>>({}, std::forward<A>(a));
    }

    template <class A, std::enable_if_t<is_tensor_expression_v<A>, int>>
    inline auto norm(A&& a)
    {
        return xmerge::apply(detail::sqrt_fn{}, xmerge::sum_squares(std::forward<A>(a)));
    }

    template <class A, std::enable_if_t<is_tensor_expression_v<A>, int>>
    inline auto norm_l1(A&& a)
    {
        return reduce_node<detail::sum_abs_reducer, std::decay_t<A>>({}, std::forward<A>(a));
    }

    template <class A, std::enable_if_t<is_tensor_expression_v<A>, int>>
    inline auto norm_inf(A&& a)
    {
        return reduce_node<detail::max_abs_reducer, std::decay_t<A>>({}, std::forward<A>(a));
    }

    template <class A, std::enable_if_t<is_tensor_expression_v<A>, int>>
    inline auto total(A&& a)
    {
        return reduce_node<detail::sum_reducer, std::decay_t<A>>({}, std::forward<A>(a));
    }

    template <class A, std::enable_if_t<is_tensor_expression_v<A>, int>>
    inline auto count_nonzero(A&& a)
    {
        return reduce_node<detail::nonzero_reducer, std::decay_t<A>>({}, std::forward<A>(a));
    }

}

#endif
