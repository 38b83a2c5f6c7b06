/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_BUILTIN_HPP
#define XMERGE_METHODS_BUILTIN_HPP

#include "linear.hpp"
#include "registry.hpp"
#include "task_arithmetic.hpp"

namespace xmerge
{
    /// A registry holding every method of the library, by mergekit name.
    inline method_registry builtin_methods()
    {
        method_registry r;
        r.add(linear_method());
        r.add(task_arithmetic_method());
        return r;
    }
}

#endif
