/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_LIST_HPP
#define XMERGE_OPS_LIST_HPP

#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/expression.hpp"
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

    /// f applied to every element: expression_list<decltype(f(e))>.
    template <class E, class F>
    auto transform(const expression_list<E>& list, F&& f);

    /********************
     * Implementation   *
     ********************/

    template <class Range>
    inline auto inputs(const Range& range, const std::string& prefix)
    {
        using node = decltype(input(*std::begin(range)));
        expression_list<node> out;
        std::size_t i = 0;
        for (const auto& x : range)
        {
            auto leaf = input(x);
            if (leaf.name().empty())
            {
                leaf = input(x, prefix + std::to_string(i));
            }
            out.push_back(std::move(leaf));
            ++i;
        }
        return out;
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
