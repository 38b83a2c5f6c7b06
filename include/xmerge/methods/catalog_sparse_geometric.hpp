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
    template <class T = void>
    void add_sparse_geometric_methods(method_registry& r)
    {
        r.add(ties_method<T>());
        r.add(dare_linear_method<T>());
        r.add(dare_ties_method<T>());
        r.add(breadcrumbs_method<T>());
        r.add(breadcrumbs_ties_method<T>());
        r.add(della_method<T>());
        r.add(della_linear_method<T>());
        r.add(sce_method<T>());
        r.add(magmax_method<T>());
        r.add(nearswap_method<T>());
        r.add(slerp_method<T>());
        r.add(nuslerp_method<T>());
        r.add(multislerp_method<T>());
        r.add(karcher_method<T>());
        r.add(model_stock_method<T>());
    }
}

#endif
