/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_CATALOG_LOCALIZATION_HPP
#define XMERGE_METHODS_CATALOG_LOCALIZATION_HPP

#include "consensus.hpp"
#include "emr.hpp"
#include "registry.hpp"
#include "tall_mask.hpp"

namespace xmerge
{
    /// Registers the task-localization family: tall_mask, consensus_mask, consensus_task_arithmetic and emr.
    template <class T = void>
    void add_localization_methods(method_registry& r)
    {
        r.add(tall_mask_method<T>());
        r.add(consensus_mask_method<T>());
        r.add(consensus_task_arithmetic_method<T>());
        r.add(emr_method<T>());
    }
}

#endif
