/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_ARITHMETIC_HPP
#define XMERGE_OPS_ARITHMETIC_HPP

#include <type_traits>
#include <utility>

#include "map.hpp"
#include "scalar.hpp"

namespace xmerge
{
    namespace detail
    {
        // At least one tensor operand; the other a tensor, a scalar expression or a number.
        template <class A, class B>
        constexpr bool is_tensor_binary_v = (is_tensor_expression_v<A> && (is_tensor_expression_v<B> || is_scalar_operand_v<B>))
                                            || (is_scalar_operand_v<A> && is_tensor_expression_v<B>);
    }

    /** @name Element-wise arithmetic
     *  Between tensor expressions, or a tensor expression and a scalar
     *  expression or number (broadcast). All lazy.
     */
    ///@{
    template <class A, class B, std::enable_if_t<detail::is_tensor_binary_v<A, B>, int> = 0>
    auto operator+(A&& a, B&& b) { return xmerge::map(detail::plus_fn{}, std::forward<A>(a), std::forward<B>(b)); }

    template <class A, class B, std::enable_if_t<detail::is_tensor_binary_v<A, B>, int> = 0>
    auto operator-(A&& a, B&& b) { return xmerge::map(detail::minus_fn{}, std::forward<A>(a), std::forward<B>(b)); }

    template <class A, class B, std::enable_if_t<detail::is_tensor_binary_v<A, B>, int> = 0>
    auto operator*(A&& a, B&& b) { return xmerge::map(detail::multiplies_fn{}, std::forward<A>(a), std::forward<B>(b)); }

    template <class A, class B, std::enable_if_t<detail::is_tensor_binary_v<A, B>, int> = 0>
    auto operator/(A&& a, B&& b) { return xmerge::map(detail::divides_fn{}, std::forward<A>(a), std::forward<B>(b)); }

    template <class A, std::enable_if_t<is_tensor_expression_v<A>, int> = 0>
    auto operator-(A&& a) { return xmerge::map(detail::negate_fn{}, std::forward<A>(a)); }
    ///@}

    /// s * e, s a number or scalar expression.
    template <class E, class S, std::enable_if_t<is_tensor_expression_v<E> && detail::is_scalar_operand_v<S>, int> = 0>
    auto scale(E&& e, S&& s) { return std::forward<S>(s) * std::forward<E>(e); }
}

#endif
