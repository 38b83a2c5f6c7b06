/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_CATALOG_OVERLAP_HPP
#define XMERGE_METHODS_CATALOG_OVERLAP_HPP

#include "arcee_fusion.hpp"
#include "pcb.hpp"
#include "ram.hpp"
#include "ramplus_tl.hpp"
#include "registry.hpp"

namespace xmerge
{
    /// Registers the methods that weigh task vectors by how they overlap or compete: ram, ramplus_tl, arcee_fusion, pcb.
    template <class T = void>
    void add_overlap_methods(method_registry& r)
    {
        r.add(ram_method<T>());
        r.add(ramplus_tl_method<T>());
        r.add(arcee_fusion_method<T>());
        r.add(pcb_method<T>());
    }
}

#endif
