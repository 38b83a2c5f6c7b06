/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_CATALOG_DATA_AWARE_HPP
#define XMERGE_METHODS_CATALOG_DATA_AWARE_HPP

#include "fisher.hpp"
#include "registry.hpp"

#if defined(XMERGE_WITH_LINALG)
#include "../linalg/isotropic.hpp"
#include "../linalg/opcm.hpp"
#include "../linalg/regmean.hpp"
#include "../linalg/tsv_c.hpp"
#include "../linalg/tsv_m.hpp"
#include "../linalg/wudi.hpp"
#endif

namespace xmerge
{
    /**
     * Registers the data-aware and projection family: fisher; with
     * XMERGE_WITH_LINALG (the xmerge::linalg target) also regmean, tsv_m,
     * iso_c, iso_cts, opcm, wudi and tsv_c.
     */
    template <class T = void>
    void add_data_aware_methods(method_registry& r)
    {
        r.add(fisher_method<T>());
#if defined(XMERGE_WITH_LINALG)
        r.add(regmean_method<T>());
        r.add(tsv_m_method<T>());
        r.add(iso_c_method<T>());
        r.add(iso_cts_method<T>());
        r.add(opcm_method<T>());
        r.add(wudi_method<T>());
        r.add(tsv_c_method<T>());
#endif
    }
}

#endif
