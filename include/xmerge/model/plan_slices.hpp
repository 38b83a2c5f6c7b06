/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MODEL_PLAN_SLICES_HPP
#define XMERGE_MODEL_PLAN_SLICES_HPP

#include <optional>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "layers.hpp"
#include "merge_plan.hpp"
#include "merge_spec.hpp"
#include "plan_models.hpp"
#include "plan_tensor.hpp"

/**
 * @file
 * Planning a layer-stacking merge (a recipe's `slices`): each slice merges
 * equally long layer ranges of its sources into output layers numbered on
 * from the previous slice; gradients run across each slice (t = i / (n - 1)).
 * Tensors outside the layers come from the first slice when they sit before
 * the layers and from the last slice otherwise, with gradients at t = 0.
 */

namespace xmerge
{
    namespace detail
    {
        inline void plan_slices(const method_info& info, const merge_spec& spec, const merge_options& options, merge_plan& plan)
        {
            if (info.needs_base)
            {
                for (const auto& s : spec.slices)
                {
                    if (!s.base)
                    {
                        throw parameter_error("", "base_model", "method '" + spec.method + "' needs a base model in every slice");
                    }
                }
            }
            std::size_t out_layer = 0;
            std::vector<planned_tensor> pre, layers, post;
            for (std::size_t si = 0; si < spec.slices.size(); ++si)
            {
                const merge_slice& slice = spec.slices[si];
                if (slice.sources.empty())
                {
                    throw parameter_error("", "slices", "slice " + std::to_string(si) + " has no sources");
                }
                const std::size_t n = slice.sources.front().layer_range.second - slice.sources.front().layer_range.first;
                auto check_range = [&](const merge_source& s)
                {
                    if (s.source == nullptr)
                    {
                        throw parameter_error("", "slices", "slice " + std::to_string(si) + " has a null model");
                    }
                    if (s.layer_range.second < s.layer_range.first || s.layer_range.second - s.layer_range.first != n)
                    {
                        throw parameter_error("", "layer_range", "all sources of slice " + std::to_string(si) + " must span the same number of layers ("
                                                                    + std::to_string(n) + "); '" + s.source->name() + "' does not");
                    }
                    const std::size_t have = count_layers(names_of(*s.source));
                    if (s.layer_range.second > have)
                    {
                        throw parameter_error("", "layer_range", "slice " + std::to_string(si) + " asks for layers up to " + std::to_string(s.layer_range.second)
                                                                    + " of '" + s.source->name() + "', which has " + std::to_string(have));
                    }
                };
                for (const auto& s : slice.sources)
                {
                    check_range(s);
                }
                if (slice.base)
                {
                    check_range(*slice.base);
                }
                const merge_source& ref_source = slice.base ? *slice.base : slice.sources.front();
                const model& ref = *ref_source.source;
                if (const auto stacks = count_layers_by_stack(names_of(ref)); stacks.size() > 1)
                {
                    std::string names;
                    for (const auto& [stack, _] : stacks)
                    {
                        names += (names.empty() ? "'" : ", '") + stack + "'";
                    }
                    throw parameter_error("", "slices", "'" + ref.name() + "' has several layer stacks (" + names
                                                            + "); slices need one (merge such models with a models list)");
                }
                auto sources_for = [&](const std::string& ref_name, std::optional<layer_name> layer, std::size_t offset, double t, std::string out_name)
                {
                    tensor_sources src;
                    src.out_name = std::move(out_name);
                    src.t = t;
                    src.slice_parameters = &slice.parameters;
                    auto input_name = [&](const merge_source& s) { return layer ? layer->renumbered(ref_name, s.layer_range.first + offset) : ref_name; };
                    if (slice.base)
                    {
                        src.base = &*slice.base;
                        src.base_name = input_name(*slice.base);
                    }
                    for (const auto& s : slice.sources)
                    {
                        src.models.push_back(&s);
                        src.model_names.push_back(input_name(s));
                    }
                    return src;
                };
                for (std::size_t o = 0; o < n; ++o)
                {
                    const double t = n > 1 ? static_cast<double>(o) / static_cast<double>(n - 1) : 1.0;
                    for (const auto& tensor : ref.tensors())
                    {
                        const auto layer = find_layer(tensor.name);
                        if (layer && layer->index == ref_source.layer_range.first + o)
                        {
                            auto src = sources_for(tensor.name, layer, o, t, layer->renumbered(tensor.name, out_layer + o));
                            layers.push_back(plan_tensor(info, spec, src, options));
                        }
                    }
                }
                out_layer += n;
                const bool first = si == 0, last = si + 1 == spec.slices.size();
                for (const auto& tensor : ref.tensors())
                {
                    if (find_layer(tensor.name))
                    {
                        continue;
                    }
                    const bool before = before_layers(tensor.name);
                    if ((before && first) || (!before && last))
                    {
                        auto src = sources_for(tensor.name, std::nullopt, 0, 0.0, tensor.name);
                        (before ? pre : post).push_back(plan_tensor(info, spec, src, options));
                    }
                }
            }
            plan.layers = out_layer;
            for (auto* part : {&pre, &layers, &post})
            {
                for (auto& p : *part)
                {
                    plan.tensors.push_back(std::move(p));
                }
            }
        }
    }
}

#endif
