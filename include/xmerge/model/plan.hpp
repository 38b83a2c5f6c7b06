/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MODEL_PLAN_HPP
#define XMERGE_MODEL_PLAN_HPP

#include <string>

#include "../core/error.hpp"
#include "../methods/registry.hpp"
#include "merge_plan.hpp"
#include "merge_spec.hpp"
#include "parameter_resolution.hpp"
#include "plan_models.hpp"
#include "plan_slices.hpp"

/**
 * @file
 * plan_merge: a merge_spec checked and resolved into one planned_tensor per
 * output tensor, before any tensor data is read.
 */

namespace xmerge
{
    /**
     * Checks a merge and resolves every output tensor's inputs and
     * parameters without reading tensor data: an unknown method, a missing
     * required parameter, a missing base, tensors missing or of another shape
     * (per the rules in `options`) all throw here, before any output exists.
     * Settings the method does not use are dropped with a warning in
     * merge_plan::warnings, or refused with merge_options::strict.
     */
    inline merge_plan plan_merge(const merge_spec& spec, const method_registry& registry, const merge_options& options = {});

    /********************
     * Implementation   *
     ********************/

    inline merge_plan plan_merge(const merge_spec& given, const method_registry& registry, const merge_options& options)
    {
        const method_info& info = registry.find(given.method);
        merge_plan plan;
        plan.method = given.method;
        if (!given.models.empty() && !given.slices.empty())
        {
            throw parameter_error("", "slices", "give either models or slices, not both");
        }
        if (given.models.empty() && given.slices.empty())
        {
            throw parameter_error("", "models", "method '" + given.method + "' needs at least one model");
        }
        const merge_spec spec = detail::without_unused_settings(given, registry, info, options.strict, plan.warnings);
        if (!spec.models.empty())
        {
            detail::plan_models(info, spec, options, plan);
        }
        else
        {
            detail::plan_slices(info, spec, options, plan);
        }
        for (const auto& t : plan.tensors)
        {
            if (t.what == planned_tensor::action::copy && !t.note.empty())
            {
                plan.notes.push_back("tensor '" + t.name + "' copied from the base: " + t.note);
            }
        }
        return plan;
    }
}

#endif
