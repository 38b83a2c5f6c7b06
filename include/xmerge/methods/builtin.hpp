/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_BUILTIN_HPP
#define XMERGE_METHODS_BUILTIN_HPP

#include "catalog_averaging.hpp"
#include "catalog_data_aware.hpp"
#include "catalog_localization.hpp"
#include "catalog_overlap.hpp"
#include "catalog_sparse_geometric.hpp"
#include "passthrough.hpp"
#include "registry.hpp"

namespace xmerge
{
    /**
     * A registry holding every method of the library, by mergekit (or
     * FusionBench) name. Methods that need LAPACK are included when the
     * xmerge::linalg target is linked (it defines XMERGE_WITH_LINALG).
     */
    template <class T = void>
    method_registry builtin_methods()
    {
        method_registry r;
        add_averaging_methods<T>(r);
        add_sparse_geometric_methods<T>(r);
        add_data_aware_methods<T>(r);
        add_localization_methods<T>(r);
        add_overlap_methods<T>(r);
        r.add(passthrough_method<T>());
        return r;
    }
}

#endif
