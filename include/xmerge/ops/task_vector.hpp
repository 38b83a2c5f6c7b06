/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_TASK_VECTOR_HPP
#define XMERGE_OPS_TASK_VECTOR_HPP

#include <utility>

#include "arithmetic.hpp"
#include "list.hpp"

namespace xmerge
{
    /// Task vector of a fine-tune: x - base, element-wise.
    template <class X, class B>
    auto task_vector(X&& x, B&& base)
    {
        return std::forward<X>(x) - std::forward<B>(base);
    }

    /// The task vector of every model of a list against one base.
    template <class E, class B>
    auto task_vectors(const expression_list<E>& models, const B& base)
    {
        return xmerge::transform(models, [&](const E& m) { return xmerge::task_vector(m, base); });
    }
}

#endif
