/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MODEL_PLAN_MODELS_HPP
#define XMERGE_MODEL_PLAN_MODELS_HPP

#include <set>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "architecture.hpp"
#include "layers.hpp"
#include "merge_plan.hpp"
#include "merge_spec.hpp"
#include "plan_tensor.hpp"

/**
 * @file
 * Planning a merge of whole models (a recipe's `models`): every tensor of
 * the reference model (the base, else the first model) is merged under its
 * own name, at the depth position of its layer within its layer stack.
 * An output head the reference leaves out (tied embeddings) is still
 * written when another model has one, as mergekit does.
 */

namespace xmerge
{
    namespace detail
    {
        inline std::vector<std::string> names_of(const model& m)
        {
            std::vector<std::string> out;
            for (const auto& t : m.tensors())
            {
                out.push_back(t.name);
            }
            return out;
        }

        inline void plan_models(const method_info& info, const merge_spec& spec, const merge_options& options, merge_plan& plan)
        {
            for (const auto& m : spec.models)
            {
                if (m.source == nullptr)
                {
                    throw parameter_error("", "models", "a model is null");
                }
            }
            if (info.needs_base && spec.base == nullptr)
            {
                throw parameter_error("", "base_model", "method '" + spec.method + "' needs a base model");
            }
            merge_source base_source;
            base_source.source = spec.base;
            const model& reference = spec.base ? *spec.base : *spec.models.front().source;
            const auto stacks = count_layers_by_stack(names_of(reference));
            plan.layers = count_layers(names_of(reference));

            std::vector<std::string> outputs = names_of(reference);
            std::set<std::string> seen(outputs.begin(), outputs.end());
            // Heads of untied models when the reference is tied.
            for (const auto& m : spec.models)
            {
                for (const auto& t : m.source->tensors())
                {
                    if (seen.count(t.name) == 0 && !tied_embeddings(t.name).empty() && find_input(reference, t.name) != nullptr)
                    {
                        outputs.push_back(t.name);
                        seen.insert(t.name);
                    }
                }
            }
            for (const auto& name : outputs)
            {
                tensor_sources src;
                src.out_name = name;
                const auto layer = find_layer(name);
                src.t = layer ? depth_position(name, stacks.at(layer->stack(name))) : 0.0;
                if (spec.base)
                {
                    src.base = &base_source;
                    src.base_name = name;
                }
                for (const auto& m : spec.models)
                {
                    src.models.push_back(&m);
                    src.model_names.push_back(name);
                }
                plan.tensors.push_back(plan_tensor(info, spec, src, options));
            }
            for (const auto& m : spec.models)
            {
                std::size_t extra = 0;
                for (const auto& t : m.source->tensors())
                {
                    extra += seen.count(t.name) == 0;
                }
                if (extra > 0)
                {
                    plan.notes.push_back(std::to_string(extra) + " tensors of '" + m.source->name() + "' are not in the reference model '" + reference.name()
                                         + "' and were not written");
                }
            }
        }
    }
}

#endif
