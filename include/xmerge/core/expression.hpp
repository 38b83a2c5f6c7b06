/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_CORE_EXPRESSION_HPP
#define XMERGE_CORE_EXPRESSION_HPP

#include <type_traits>

/**
 * @file
 * The two kinds of lazy expression and what separates a node from its evaluation.
 *
 * A *tensor expression* describes a tensor element by element; a *scalar
 * expression* describes one number, possibly a statistic of tensors (a dot
 * product, a norm, a threshold) that is known only after the statistics
 * phase. Nodes are small value types: building one computes nothing and
 * copies only references to memory, so an expression built from
 * temporaries never dangles.
 *
 * Every node type N has a matching `xmerge::detail::evaluator<N>` that holds
 * the per-evaluation state (child evaluators, computed statistics). A tensor
 * node provides
 *   - `const shape_type& shape() const`,
 *   - `std::string name() const` (the first named input, for error messages),
 *   - `template <class F> void for_each_input(F&& f) const` (calls f on every
 *     const_tensor_ref it reads, used to detect aliasing with the output);
 * a scalar node provides `name()` and `for_each_input()`.
 *
 * A tensor evaluator is built once per evaluation, shared by all threads
 * and not modified after its statistics are computed. It provides
 *   - `std::size_t collect(detail::statistics_registry&)`: registers the
 *     statistics of the subtree and returns the highest level among them
 *     (0 when none);
 *   - `auto bind(std::size_t begin, std::size_t n, detail::arena&) const`:
 *     the chunk [begin, begin + n) as a bound expression (see bound.hpp),
 *     whose packets the evaluation loop computes in registers;
 * a scalar evaluator provides `collect` and `double value() const`.
 *
 * Packets are element-wise: the packet at i reads only elements [i, i + w)
 * of the chunk's operands. A node that needs more (a whole chunk, a whole
 * row) computes it in bind() or in the statistics phase, so evaluating in
 * place (output memory = an input's memory) is always safe.
 */

namespace xmerge
{
    /// CRTP base of every tensor expression node.
    template <class D>
    struct tensor_expression
    {
        const D& derived() const noexcept { return static_cast<const D&>(*this); }
    };

    /// CRTP base of every scalar expression node.
    template <class D>
    struct scalar_expression
    {
        const D& derived() const noexcept { return static_cast<const D&>(*this); }
    };

    template <class T>
    struct is_tensor_expression : std::is_base_of<tensor_expression<std::decay_t<T>>, std::decay_t<T>>
    {
    };

    template <class T>
    struct is_scalar_expression : std::is_base_of<scalar_expression<std::decay_t<T>>, std::decay_t<T>>
    {
    };

    template <class T>
    constexpr bool is_tensor_expression_v = is_tensor_expression<T>::value;
    template <class T>
    constexpr bool is_scalar_expression_v = is_scalar_expression<T>::value;

    namespace detail
    {
        /// Evaluation of node N; specialised next to each node type.
        template <class N, class Enable = void>
        class evaluator;
    }
}

#endif
