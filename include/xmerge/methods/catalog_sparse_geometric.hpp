/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_CATALOG_SPARSE_GEOMETRIC_HPP
#define XMERGE_METHODS_CATALOG_SPARSE_GEOMETRIC_HPP

#include "breadcrumbs.hpp"
#include "dare.hpp"
#include "della.hpp"
#include "karcher.hpp"
#include "magmax.hpp"
#include "model_stock.hpp"
#include "multislerp.hpp"
#include "nearswap.hpp"
#include "nuslerp.hpp"
#include "registry.hpp"
#include "sce.hpp"
#include "slerp.hpp"
#include "ties.hpp"

namespace xmerge
{
    /// Registers the sparse-mask and geometry-aware family.
    inline void add_sparse_geometric_methods(method_registry& r)
    {
        r.add(ties_method());
        r.add(dare_linear_method());
        r.add(dare_ties_method());
        r.add(breadcrumbs_method());
        r.add(breadcrumbs_ties_method());
        r.add(della_method());
        r.add(della_linear_method());
        r.add(sce_method());
        r.add(magmax_method());
        r.add(nearswap_method());
        r.add(slerp_method());
        r.add(nuslerp_method());
        r.add(multislerp_method());
        r.add(karcher_method());
        r.add(model_stock_method());
    }
}

#endif
