/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_CATALOG_DATA_AWARE_HPP
#define XMERGE_METHODS_CATALOG_DATA_AWARE_HPP

#include "registry.hpp"

namespace xmerge
{
    /// Registers the data-aware and projection family (LAPACK-based ones with XMERGE_WITH_LINALG).
    inline void add_data_aware_methods(method_registry& r)
    {
        (void)r;
    }
}

#endif
