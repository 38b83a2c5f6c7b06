/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_CATALOG_SPARSE_GEOMETRIC_HPP
#define XMERGE_METHODS_CATALOG_SPARSE_GEOMETRIC_HPP

#include "registry.hpp"

namespace xmerge
{
    /// Registers the sparse-mask and geometry-aware family.
    inline void add_sparse_geometric_methods(method_registry& r)
    {
        (void)r;
    }
}

#endif
