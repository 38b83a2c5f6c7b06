/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MODEL_PLAN_TENSOR_HPP
#define XMERGE_MODEL_PLAN_TENSOR_HPP

#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../io/safetensors.hpp"
#include "../methods/registry.hpp"
#include "architecture.hpp"
#include "merge_plan.hpp"
#include "merge_spec.hpp"
#include "parameter_resolution.hpp"

/**
 * @file
 * Planning one output tensor: find its inputs (an output head a tied
 * checkpoint leaves out is read from its input embedding), check their
 * shapes and dtypes against the reference, apply the rules for missing and
 * mismatched tensors, and resolve its parameters.
 */

namespace xmerge
{
    namespace detail
    {
        /// `name` in `m`, or, for an output head `m` leaves out (tied embeddings), the input embedding it shares.
        inline const model_tensor* find_input(const model& m, const std::string& name)
        {
            if (const model_tensor* t = m.find(name))
            {
                return t;
            }
            for (const auto& e : tied_embeddings(name))
            {
                if (const model_tensor* t = m.find(e))
                {
                    return t;
                }
            }
            return nullptr;
        }

        inline bool same_kind(const model_tensor& a, const model_tensor& b)
        {
            return a.is_arithmetic() == b.is_arithmetic() && (a.is_arithmetic() || a.dtype == b.dtype);
        }

        // Shapes that agree, or agree past the token axis when vocabularies are merged.
        inline bool compatible_shapes(const shape_type& a, const shape_type& b, bool token_rows)
        {
            if (!token_rows)
            {
                return a == b;
            }
            return !a.empty() && a.size() == b.size() && std::equal(a.begin() + 1, a.end(), b.begin() + 1);
        }

        /// Fills the merge inputs of one output tensor, or turns it into a copy per the rules.
        inline planned_tensor plan_tensor(const method_info& info, const merge_spec& spec, const tensor_sources& src, const merge_options& options)
        {
            planned_tensor p;
            p.name = src.out_name;
            const model* base_model = src.base ? src.base->source : nullptr;
            const model_tensor* reference = base_model ? find_input(*base_model, src.base_name) : nullptr;
            if (src.base && reference == nullptr)
            {
                // Nothing to copy from either: the base defines the tensor.
                throw io_error(base_model->name(), src.base_name, "missing from the base model");
            }
            if (reference == nullptr && !src.models.empty())
            {
                reference = find_input(*src.models.front()->source, src.model_names.front());
            }
            if (reference == nullptr)
            {
                throw io_error(src.models.empty() ? std::string() : src.models.front()->source->name(), src.models.empty() ? src.out_name : src.model_names.front(),
                               "missing from this model");
            }
            const bool token_rows = spec.vocabulary && reference->is_arithmetic() && is_vocabulary_tensor(src.out_name);
            shape_type out_shape = reference->shape;
            if (token_rows)
            {
                if (out_shape.empty())
                {
                    throw shape_error(src.out_name, "", "a token-indexed tensor with no dimension");
                }
                out_shape[0] = static_cast<std::int64_t>(spec.vocabulary->rows);
            }
            // A copy of the reference: the base, or the first model without one.
            auto copy = [&](const std::string& why)
            {
                if (token_rows)
                {
                    throw shape_error(src.out_name, "", why + "; a token-indexed tensor cannot be copied from one model when vocabularies are merged");
                }
                p.what = planned_tensor::action::copy;
                p.copy_from = reference;
                p.dtype = reference->is_arithmetic() && options.out_dtype ? io::safetensors_name(*options.out_dtype) : reference->dtype;
                p.shape = reference->shape;
                p.note = why;
                return p;
            };
            if (!reference->is_arithmetic())
            {
                return copy("");  // position ids, masks: nothing to merge
            }
            if (src.base)
            {
                p.base = reference;
                p.base_model = base_model;
            }
            for (std::size_t k = 0; k < src.models.size(); ++k)
            {
                const model& m = *src.models[k]->source;
                const model_tensor* t = find_input(m, src.model_names[k]);
                if (t == nullptr)
                {
                    if (options.on_missing == tensor_rule::error)
                    {
                        throw io_error(m.name(), src.model_names[k], "missing from this model (allow copying from the base to continue)");
                    }
                    return copy("missing from model '" + m.name() + "'");
                }
                if (!compatible_shapes(t->shape, reference->shape, token_rows) || !same_kind(*t, *reference))
                {
                    std::string what = t->shape != reference->shape ? "has shape " + to_string(t->shape) + " but the reference has " + to_string(reference->shape)
                                                                    : "has dtype " + t->dtype + " but the reference has " + reference->dtype;
                    if (is_vocabulary_tensor(src.out_name) && !spec.vocabulary && t->shape.size() == reference->shape.size()
                        && compatible_shapes(t->shape, reference->shape, true))
                    {
                        what += " (vocabularies of different sizes: set tokenizer_source to union, base or a model to lay them out on one vocabulary)";
                    }
                    if (options.on_mismatch == tensor_rule::error)
                    {
                        throw shape_error(src.model_names[k], "", "in model '" + m.name() + "' " + what);
                    }
                    return copy("in model '" + m.name() + "' " + what);
                }
                p.models.push_back(t);
                p.model_sources.push_back(&m);
                for (const auto& [kind, extra_model] : src.models[k]->extra)
                {
                    const model_tensor* e = extra_model->find(src.model_names[k]);
                    if (e == nullptr)
                    {
                        throw io_error(extra_model->name(), src.model_names[k], "missing from the '" + kind + "' tensors of model '" + m.name() + "'");
                    }
                    if (e->shape != t->shape || !e->is_arithmetic())
                    {
                        throw shape_error(src.model_names[k], kind, "the '" + kind + "' tensor of model '" + m.name() + "' has shape " + to_string(e->shape) + " and dtype "
                                                                        + e->dtype + "; expected the model's shape in F32, BF16 or F16");
                    }
                    auto& list = p.extra[kind];
                    if (list.size() != k)
                    {
                        throw io_error(extra_model->name(), src.model_names[k], "only some models have '" + kind + "' tensors");
                    }
                    list.push_back(e);
                }
            }
            for (const auto& [kind, list] : p.extra)
            {
                if (list.size() != src.models.size())
                {
                    throw io_error("", src.out_name, "only some models have '" + kind + "' tensors");
                }
            }
            if (token_rows)
            {
                if (!p.extra.empty())
                {
                    throw parameter_error(src.out_name, "tokenizer_source", "merged vocabularies are not supported with extra per-model tensors (Fisher, Gram)");
                }
                p.vocabulary = spec.vocabulary;
            }
            p.params = resolve_parameters(info, spec, src);
            p.dtype = options.out_dtype ? io::safetensors_name(*options.out_dtype) : reference->dtype;
            p.shape = out_shape;
            return p;
        }
    }
}

#endif
