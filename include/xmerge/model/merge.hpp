/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MODEL_MERGE_HPP
#define XMERGE_MODEL_MERGE_HPP

#include <string>

#include "merge_plan.hpp"
#include "merge_spec.hpp"
#include "plan.hpp"
#include "run.hpp"

/**
 * @file
 * Whole-model merges: a merge_spec (merge_spec.hpp) is checked and resolved
 * tensor by tensor by plan_merge (plan.hpp: plan_models.hpp for `models`,
 * plan_slices.hpp for `slices`, parameter_resolution.hpp for the values),
 * then run_merge (run.hpp) evaluates each planned tensor into the output.
 */

namespace xmerge
{
    /// plan_merge then run_merge.
    inline merge_summary merge_models(const merge_spec& spec, const method_registry& registry, const std::string& out_dir, const merge_options& options = {})
    {
        return run_merge(plan_merge(spec, registry, options), registry, out_dir, options);
    }
}

#endif
