/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_LIST_HPP
#define XMERGE_OPS_LIST_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <new>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/arena.hpp"
#include "../core/error.hpp"
#include "../core/expression.hpp"
#include "../core/statistic.hpp"
#include "input.hpp"

namespace xmerge
{
    /**
     * A run-time number of expressions of one type: the K models of a merge,
     * their task vectors, their weights. Not an expression itself; nodes
     * such as weighted_sum consume it.
     */
    template <class E>
    class expression_list
    {
    public:
        using value_type = E;
        using const_iterator = typename std::vector<E>::const_iterator;

        expression_list() = default;
        explicit expression_list(std::vector<E> items) : m_items(std::move(items)) {}

        std::size_t size() const noexcept { return m_items.size(); }
        bool empty() const noexcept { return m_items.empty(); }
        const E& operator[](std::size_t i) const { return m_items[i]; }
        const_iterator begin() const noexcept { return m_items.begin(); }
        const_iterator end() const noexcept { return m_items.end(); }
        const std::vector<E>& items() const noexcept { return m_items; }

        void push_back(E e) { m_items.push_back(std::move(e)); }

        /// Calls f on every input of every expression.
        template <class F>
        void for_each_input(F&& f) const
        {
            for (const auto& e : m_items)
            {
                e.for_each_input(f);
            }
        }

    private:
        std::vector<E> m_items;
    };

    /// Inputs from a range of anything input() accepts. Unnamed elements are
    /// named "<prefix><index>" so errors can say which model is at fault.
    template <class Range>
    auto inputs(const Range& range, const std::string& prefix = "model.");

    /// Inputs reading a temporary range of owned tensors would dangle: refused at compile time.
    template <class T, class A, class A2>
    void inputs(std::vector<std::vector<T, A>, A2>&&, const std::string& = "model.") = delete;

    namespace detail
    {
        /// Throws unless the list holds at least one tensor expression and all have one shape.
        template <class E>
        void check_models(const expression_list<E>& terms, const char* what = "a merge");

        /// T in a non-deduced context (a parameter that must not take part in deduction).
        template <class T>
        struct identity
        {
            using type = T;
        };
        template <class T>
        using identity_t = typename identity<T>::type;

        /// Throws unless every weight is finite and there is one per term.
        inline void check_weights(const std::string& tensor, std::size_t terms, const std::vector<double>& weights, const char* parameter = "weights");

        /**
         * The evaluators of a list of expressions: their statistics, and the
         * chunk's bound terms as an arena array (what nodes with a run-time
         * number of operands loop over in their packets).
         */
        template <class E>
        class list_evaluator
        {
        public:
            explicit list_evaluator(const expression_list<E>& list);

            std::size_t size() const noexcept { return m_items.size(); }
            const evaluator<E>& operator[](std::size_t i) const noexcept { return m_items[i]; }

            /// Collects the statistics of every element; returns the highest level.
            std::size_t collect(statistics_registry& r);

            /// The elements bound to [begin, begin + n), in arena memory valid for the chunk.
            auto bind(std::size_t begin, std::size_t n, arena& a) const;

        private:
            std::vector<evaluator<E>> m_items;
        };
    }

    /// f applied to every element: expression_list<decltype(f(e))>.
    template <class E, class F>
    auto transform(const expression_list<E>& list, F&& f);

    /********************
     * Implementation   *
     ********************/

    template <class Range>
    inline auto inputs(const Range& range, const std::string& prefix)
    {
        using node = decltype(xmerge::input(*std::begin(range)));
        expression_list<node> out;
        std::size_t i = 0;
        for (const auto& x : range)
        {
            auto leaf = xmerge::input(x);
            if (leaf.name().empty())
            {
                leaf = xmerge::input(x, prefix + std::to_string(i));
            }
            out.push_back(std::move(leaf));
            ++i;
        }
        return out;
    }

    namespace detail
    {
        template <class E>
        inline void check_models(const expression_list<E>& terms, const char* what)
        {
            if (terms.empty())
            {
                throw parameter_error("", "models", std::string(what) + " needs at least one model");
            }
            for (std::size_t k = 1; k < terms.size(); ++k)
            {
                if (terms[k].shape() != terms[0].shape())
                {
                    throw shape_error(terms[k].name(), "", "model " + std::to_string(k) + " has shape " + xmerge::to_string(terms[k].shape()) + " but model 0 ('"
                                                               + terms[0].name() + "') has shape " + xmerge::to_string(terms[0].shape()));
                }
            }
        }

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

        template <class E>
        inline list_evaluator<E>::list_evaluator(const expression_list<E>& list)
        {
            m_items.reserve(list.size());
            for (const auto& e : list)
            {
                m_items.emplace_back(e);
            }
        }

        template <class E>
        inline std::size_t list_evaluator<E>::collect(statistics_registry& r)
        {
            std::size_t level = 0;
            for (auto& e : m_items)
            {
                level = std::max(level, e.collect(r));
            }
            return level;
        }

        template <class E>
        inline auto list_evaluator<E>::bind(std::size_t begin, std::size_t n, arena& a) const
        {
            using bound = decltype(m_items[0].bind(begin, n, a));
            auto* out = a.allocate<bound>(m_items.size());
            for (std::size_t i = 0; i < m_items.size(); ++i)
            {
                new (out + i) bound(m_items[i].bind(begin, n, a));
            }
            return out;
        }
    }

    template <class E, class F>
    inline auto transform(const expression_list<E>& list, F&& f)
    {
        using result = std::decay_t<decltype(f(std::declval<const E&>()))>;
        std::vector<result> items;
        items.reserve(list.size());
        for (const auto& e : list)
        {
            items.push_back(f(e));
        }
        return expression_list<result>(std::move(items));
    }
}

#endif
