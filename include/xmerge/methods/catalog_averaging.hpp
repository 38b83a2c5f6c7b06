/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_CATALOG_AVERAGING_HPP
#define XMERGE_METHODS_CATALOG_AVERAGING_HPP

#include "linear.hpp"
#include "registry.hpp"
#include "task_arithmetic.hpp"

namespace xmerge
{
    /// Registers the averaging family: linear, task_arithmetic.
    template <class T = void>
    void add_averaging_methods(method_registry& r)
    {
        r.add(linear_method<T>());
        r.add(task_arithmetic_method<T>());
    }
}

#endif
