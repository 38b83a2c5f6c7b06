/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MODEL_MERGE_HPP
#define XMERGE_MODEL_MERGE_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../core/parallel.hpp"
#include "../io/checkpoint_writer.hpp"
#include "../methods/registry.hpp"
#include "../ops/input.hpp"
#include "layers.hpp"
#include "model.hpp"
#include "parameter_setting.hpp"

/**
 * @file
 * Whole-model merges: every output tensor is built with a registry method
 * from the matching tensors of the input models, evaluated straight into
 * the output file, and released, so resident memory stays a small working
 * set whatever the model size.
 */

namespace xmerge
{
    /// A model taking part in a merge, with its own parameters.
    struct merge_source
    {
        merge_source() = default;
        merge_source(const model* m, std::map<std::string, parameter_setting> params = {}, std::map<std::string, const model*> extra_tensors = {},
                     std::pair<std::size_t, std::size_t> layers = {0, 0})
            : source(m)
            , parameters(std::move(params))
            , extra(std::move(extra_tensors))
            , layer_range(layers)
        {
        }

        const model* source = nullptr;
        /// Per-model parameters (method parameters of per-model scope).
        std::map<std::string, parameter_setting> parameters;
        /// Further per-model tensors a method reads (method_inputs::extra), by kind ("fisher").
        std::map<std::string, const model*> extra;
        /// Layers [first, second) this source contributes to a slice (slices only).
        std::pair<std::size_t, std::size_t> layer_range{0, 0};
    };

    /// A run of output layers built from equally long layer ranges of several models.
    struct merge_slice
    {
        std::vector<merge_source> sources;
        /// The base's layer range for this slice; needed when the method needs a base.
        std::optional<merge_source> base;
        /// Parameters for this slice, consulted before the global ones.
        std::map<std::string, parameter_setting> parameters;
    };

    /**
     * What to merge: a method, its inputs and parameter settings.
     *
     * Either `models` (every tensor of the reference model, which is the base
     * when there is one and the first model otherwise, is merged under its
     * own name) or `slices` (output layers are stacked from layer ranges,
     * renumbered from 0; tensors outside the layers come from the first
     * slice's sources when they sit before the layers, from the last slice's
     * otherwise; see depth_position).
     */
    struct merge_spec
    {
        std::string method;
        const model* base = nullptr;
        std::vector<merge_source> models;
        std::vector<merge_slice> slices;
        /// Global parameters (and per-model ones meant for every model).
        std::map<std::string, parameter_setting> parameters;
    };

    /// What to do with a tensor some input lacks, or has with another shape.
    enum class tensor_rule
    {
        /// Throw an error naming the tensor and the model (default).
        error,
        /// Copy the tensor from the base model (from the first model when there is no base).
        copy_base
    };

    /// Where a merge stands, for progress reports.
    struct merge_progress
    {
        enum class stage
        {
            statistics,  ///< pre-pass over all tensors for whole-model statistics
            tensors      ///< writing output tensors
        };
        stage phase = stage::tensors;
        std::size_t done = 0;
        std::size_t total = 0;
        /// The tensor just completed.
        std::string tensor;
        std::uint64_t bytes_read = 0;
        std::uint64_t bytes_written = 0;
    };

    /// How a merge runs and what it writes.
    struct merge_options
    {
        /// 0: every hardware thread; 1: the calling thread only.
        std::size_t threads = 0;
        /// Runs the parallel work when set (else a pool of `threads` is made for the merge).
        executor* exec = nullptr;
        /// dtype of merged F32/BF16/F16 tensors; by default that of the reference model's tensor.
        std::optional<dtype> out_dtype;
        /// Seed of random methods (each tensor draws from its own stream keyed by its name).
        std::uint64_t seed = 0;
        tensor_rule on_missing = tensor_rule::error;
        tensor_rule on_mismatch = tensor_rule::error;
        /// Shard size, overwrite, sync, metadata of the output.
        io::checkpoint_options output;
        /// Files copied into the output directory: (source path, name in the output).
        std::vector<std::pair<std::string, std::string>> files;
        /// Files of the output written from memory: (name in the output, contents).
        std::vector<std::pair<std::string, std::string>> file_contents;
        /// Called after each tensor (and during the statistics pre-pass).
        std::function<void(const merge_progress&)> progress;
    };

    /// One output tensor of a plan.
    struct planned_tensor
    {
        enum class action
        {
            merge,
            copy
        };
        std::string name;
        std::string dtype;
        shape_type shape;
        action what = action::merge;
        /// Merge inputs (null base when the merge has none).
        const model_tensor* base = nullptr;
        std::vector<const model_tensor*> models;
        std::map<std::string, std::vector<const model_tensor*>> extra;
        /// Parameters resolved for this tensor.
        parameters params;
        /// Copy source.
        const model_tensor* copy_from = nullptr;
        /// Why a tensor is copied by a rule instead of merged (empty for non-float tensors, always copied).
        std::string note;
    };

    /// Every output tensor, checked and with its parameters, before anything is written.
    struct merge_plan
    {
        std::string method;
        std::vector<planned_tensor> tensors;
        /// Number of output layers (0 when the names carry none).
        std::size_t layers = 0;
        /// Things the user may want to know (tensors only some models have, copies).
        std::vector<std::string> notes;
    };

    /// What a merge did.
    struct merge_summary
    {
        std::size_t tensors = 0;
        std::size_t merged = 0;
        std::size_t copied = 0;
        std::size_t shards = 0;
        std::size_t layers = 0;
        std::uint64_t bytes_read = 0;
        std::uint64_t bytes_written = 0;
        double seconds = 0.0;
        std::vector<std::string> notes;
    };

    /**
     * Checks a merge and resolves every output tensor's inputs and
     * parameters without reading tensor data: unknown method or parameter,
     * a per-model setting of a global parameter, a missing required
     * parameter, a missing base, tensors missing or of another shape (per the
     * rules in `options`) all throw here, before any output exists.
     */
    inline merge_plan plan_merge(const merge_spec& spec, const method_registry& registry, const merge_options& options = {});

    /**
     * Runs a plan into the checkpoint directory `out_dir`, atomically: the
     * directory appears complete or not at all. Whole-model statistics the
     * method declares are computed over all merged tensors first.
     */
    inline merge_summary run_merge(const merge_plan& plan, const method_registry& registry, const std::string& out_dir, const merge_options& options = {});

    /// plan_merge then run_merge.
    inline merge_summary merge_models(const merge_spec& spec, const method_registry& registry, const std::string& out_dir, const merge_options& options = {});

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        // The inputs of one output tensor, before parameters are resolved.
        struct tensor_sources
        {
            std::string out_name;
            double t = 0.0;
            const merge_source* base = nullptr;
            std::string base_name;
            std::vector<const merge_source*> models;
            std::vector<std::string> model_names;  // input tensor name per model
            const std::map<std::string, parameter_setting>* slice_parameters = nullptr;
        };

        inline const parameter_spec* find_spec(const method_info& info, const std::string& name)
        {
            for (const auto& s : info.parameters)
            {
                if (s.name == name)
                {
                    return &s;
                }
            }
            return nullptr;
        }

        inline std::string accepted_parameters(const method_info& info)
        {
            std::string out;
            for (const auto& s : info.parameters)
            {
                out += (out.empty() ? "" : ", ") + s.name;
            }
            return out.empty() ? "none" : out;
        }

        // Setting names must be parameters of the method; per-model settings must be per-model parameters.
        inline void check_setting_names(const method_info& info, const std::map<std::string, parameter_setting>& settings, const std::string& where, bool per_model)
        {
            for (const auto& [name, _] : settings)
            {
                const parameter_spec* s = find_spec(info, name);
                if (s == nullptr)
                {
                    throw parameter_error("", name, "unknown parameter of method '" + info.name + "'" + where + " (accepted: " + accepted_parameters(info) + ")");
                }
                if (per_model && s->scope == parameter_scope::global)
                {
                    throw parameter_error("", name, "is a global parameter of method '" + info.name + "' and cannot be set per model" + where
                                                        + "; set it under the recipe's top-level parameters");
                }
            }
        }

        inline std::optional<parameter_value> lookup(const std::map<std::string, parameter_setting>* settings, const std::string& name,
                                                     const std::string& tensor, double t)
        {
            if (settings == nullptr)
            {
                return std::nullopt;
            }
            const auto it = settings->find(name);
            if (it == settings->end())
            {
                return std::nullopt;
            }
            return it->second.evaluate(tensor, t);
        }

        inline parameters resolve_parameters(const method_info& info, const merge_spec& spec, const tensor_sources& src)
        {
            parameters p;
            p.set_tensor_name(src.out_name);
            for (const auto& s : info.parameters)
            {
                if (s.scope == parameter_scope::global)
                {
                    auto v = lookup(src.slice_parameters, s.name, src.out_name, src.t);
                    if (!v)
                    {
                        v = lookup(&spec.parameters, s.name, src.out_name, src.t);
                    }
                    if (v)
                    {
                        p.set(s.name, *v);
                    }
                    else if (!s.fallback && !s.optional)
                    {
                        throw parameter_error(src.out_name, s.name, "is required by method '" + info.name + "'");
                    }
                    continue;
                }
                std::vector<double> values;
                bool any = false;
                std::string unset;  // a model without a value for an optional parameter
                for (std::size_t k = 0; k < src.models.size(); ++k)
                {
                    const std::string& in_name = src.model_names[k];
                    auto v = lookup(&src.models[k]->parameters, s.name, in_name, src.t);
                    if (!v)
                    {
                        v = lookup(src.slice_parameters, s.name, src.out_name, src.t);
                    }
                    if (!v)
                    {
                        v = lookup(&spec.parameters, s.name, src.out_name, src.t);
                    }
                    if (!v && s.fallback)
                    {
                        v = *s.fallback;
                    }
                    if (!v && s.optional)
                    {
                        unset = src.models[k]->source->name();
                        continue;
                    }
                    if (!v)
                    {
                        throw parameter_error(src.out_name, s.name, "is required by method '" + info.name + "' for model '" + src.models[k]->source->name() + "'");
                    }
                    double number = 0.0;
                    if (const double* d = std::get_if<double>(&*v))
                    {
                        number = *d;
                    }
                    else if (const bool* b = std::get_if<bool>(&*v))
                    {
                        number = *b ? 1.0 : 0.0;
                    }
                    else
                    {
                        throw parameter_error(src.out_name, s.name, "must be a number for model '" + src.models[k]->source->name() + "'");
                    }
                    values.push_back(number);
                    any = true;
                }
                if (any && !unset.empty())
                {
                    throw parameter_error(src.out_name, s.name, "is set for some models but not for model '" + unset + "'; set it for every model or none");
                }
                if (any)
                {
                    p.set(s.name, values);
                }
            }
            return p;
        }

        inline bool same_kind(const model_tensor& a, const model_tensor& b)
        {
            return a.is_arithmetic() == b.is_arithmetic() && (a.is_arithmetic() || a.dtype == b.dtype);
        }

        // Fills the merge inputs of one output tensor, or turns it into a copy per the rules.
        inline planned_tensor plan_tensor(const method_info& info, const merge_spec& spec, const tensor_sources& src, const merge_options& options)
        {
            planned_tensor p;
            p.name = src.out_name;
            const model* base_model = src.base ? src.base->source : nullptr;
            const model_tensor* reference = base_model ? base_model->find(src.base_name) : nullptr;
            if (src.base && reference == nullptr)
            {
                // Nothing to copy from either: the base defines the tensor.
                throw io_error(base_model->name(), src.base_name, "missing from the base model");
            }
            if (reference == nullptr && !src.models.empty())
            {
                reference = src.models.front()->source->find(src.model_names.front());
            }
            if (reference == nullptr)
            {
                throw io_error(src.models.empty() ? std::string() : src.models.front()->source->name(), src.models.empty() ? src.out_name : src.model_names.front(),
                               "missing from this model");
            }
            // A copy of the reference: the base, or the first model without one.
            auto copy = [&](const std::string& why)
            {
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
            }
            for (std::size_t k = 0; k < src.models.size(); ++k)
            {
                const model& m = *src.models[k]->source;
                const model_tensor* t = m.find(src.model_names[k]);
                if (t == nullptr)
                {
                    if (options.on_missing == tensor_rule::error)
                    {
                        throw io_error(m.name(), src.model_names[k], "missing from this model (allow copying from the base to continue)");
                    }
                    return copy("missing from model '" + m.name() + "'");
                }
                if (t->shape != reference->shape || !same_kind(*t, *reference))
                {
                    const std::string what = t->shape != reference->shape ? "has shape " + to_string(t->shape) + " but the reference has " + to_string(reference->shape)
                                                                          : "has dtype " + t->dtype + " but the reference has " + reference->dtype;
                    if (options.on_mismatch == tensor_rule::error)
                    {
                        throw shape_error(src.model_names[k], "", "in model '" + m.name() + "' " + what);
                    }
                    return copy("in model '" + m.name() + "' " + what);
                }
                p.models.push_back(t);
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
            p.params = resolve_parameters(info, spec, src);
            p.dtype = options.out_dtype ? io::safetensors_name(*options.out_dtype) : reference->dtype;
            p.shape = reference->shape;
            return p;
        }

        inline std::vector<std::string> names_of(const model& m)
        {
            std::vector<std::string> out;
            for (const auto& t : m.tensors())
            {
                out.push_back(t.name);
            }
            return out;
        }
    }

    inline merge_plan plan_merge(const merge_spec& spec, const method_registry& registry, const merge_options& options)
    {
        const method_info& info = registry.find(spec.method);
        detail::check_setting_names(info, spec.parameters, "", false);
        merge_plan plan;
        plan.method = spec.method;

        if (!spec.models.empty() && !spec.slices.empty())
        {
            throw parameter_error("", "slices", "give either models or slices, not both");
        }
        if (spec.models.empty() && spec.slices.empty())
        {
            throw parameter_error("", "models", "method '" + spec.method + "' needs at least one model");
        }

        if (!spec.models.empty())
        {
            for (const auto& m : spec.models)
            {
                if (m.source == nullptr)
                {
                    throw parameter_error("", "models", "a model is null");
                }
                detail::check_setting_names(info, m.parameters, " (model '" + m.source->name() + "')", true);
            }
            if (info.needs_base && spec.base == nullptr)
            {
                throw parameter_error("", "base_model", "method '" + spec.method + "' needs a base model");
            }
            merge_source base_source;
            base_source.source = spec.base;
            const model& reference = spec.base ? *spec.base : *spec.models.front().source;
            plan.layers = count_layers(detail::names_of(reference));
            std::set<std::string> seen;
            for (const auto& t : reference.tensors())
            {
                detail::tensor_sources src;
                src.out_name = t.name;
                src.t = depth_position(t.name, plan.layers);
                if (spec.base)
                {
                    src.base = &base_source;
                    src.base_name = t.name;
                }
                for (const auto& m : spec.models)
                {
                    src.models.push_back(&m);
                    src.model_names.push_back(t.name);
                }
                plan.tensors.push_back(detail::plan_tensor(info, spec, src, options));
                seen.insert(t.name);
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
        else
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
                detail::check_setting_names(info, slice.parameters, " (slice " + std::to_string(si) + ")", false);
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
                    const std::size_t have = count_layers(detail::names_of(*s.source));
                    if (s.layer_range.second > have)
                    {
                        throw parameter_error("", "layer_range", "slice " + std::to_string(si) + " asks for layers up to " + std::to_string(s.layer_range.second)
                                                                    + " of '" + s.source->name() + "', which has " + std::to_string(have));
                    }
                };
                for (const auto& s : slice.sources)
                {
                    check_range(s);
                    detail::check_setting_names(info, s.parameters, " (model '" + s.source->name() + "')", true);
                }
                if (slice.base)
                {
                    check_range(*slice.base);
                }
                const merge_source& ref_source = slice.base ? *slice.base : slice.sources.front();
                const model& ref = *ref_source.source;
                auto sources_for = [&](const std::string& ref_name, std::optional<layer_name> layer, std::size_t offset, double t, std::string out_name)
                {
                    detail::tensor_sources src;
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
                            layers.push_back(detail::plan_tensor(info, spec, src, options));
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
                    const double t = depth_position(tensor.name, 0);
                    if ((t == 0.0 && first) || (t == 1.0 && last))
                    {
                        auto src = sources_for(tensor.name, std::nullopt, 0, t, tensor.name);
                        (t == 0.0 ? pre : post).push_back(detail::plan_tensor(info, spec, src, options));
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
        for (const auto& t : plan.tensors)
        {
            if (t.what == planned_tensor::action::copy && !t.note.empty())
            {
                plan.notes.push_back("tensor '" + t.name + "' copied from the base: " + t.note);
            }
        }
        return plan;
    }

    namespace detail
    {
        inline method_inputs inputs_of(const planned_tensor& t, std::uint64_t seed)
        {
            method_inputs in;
            in.tensor = t.name;
            in.seed = seed;
            if (t.base)
            {
                in.base = input(t.base->ref());
            }
            for (const model_tensor* m : t.models)
            {
                in.models.push_back(input(m->ref()));
            }
            for (const auto& [kind, list] : t.extra)
            {
                auto& out = in.extra[kind];
                for (const model_tensor* e : list)
                {
                    out.push_back(input(e->ref()));
                }
            }
            return in;
        }

        inline std::uint64_t input_bytes(const planned_tensor& t)
        {
            if (t.what == planned_tensor::action::copy)
            {
                return t.copy_from->bytes;
            }
            std::uint64_t n = t.base ? t.base->bytes : 0;
            for (const model_tensor* m : t.models)
            {
                n += m->bytes;
            }
            for (const auto& [_, list] : t.extra)
            {
                for (const model_tensor* e : list)
                {
                    n += e->bytes;
                }
            }
            return n;
        }

        // Overwriting a directory that holds an input would destroy the user's model.
        inline void check_output_is_not_input(const merge_plan& plan, const std::string& out_dir)
        {
            namespace fs = std::filesystem;
            std::error_code ec;
            const fs::path out = fs::weakly_canonical(fs::absolute(out_dir), ec);
            if (ec)
            {
                return;
            }
            std::set<std::string> checked;
            auto check = [&](const model_tensor* t)
            {
                if (t == nullptr || t->file == nullptr || !checked.insert(t->file->path()).second)
                {
                    return;
                }
                const fs::path in = fs::weakly_canonical(fs::absolute(t->file->path()), ec);
                auto o = out.begin();
                auto i = in.begin();
                for (; o != out.end() && i != in.end() && *o == *i; ++o, ++i)
                {
                }
                if (!ec && o == out.end())
                {
                    throw io_error(out_dir, "", "holds the input file " + t->file->path() + "; choose an output directory that holds no input");
                }
            };
            for (const auto& t : plan.tensors)
            {
                check(t.base);
                check(t.copy_from);
                for (const model_tensor* m : t.models)
                {
                    check(m);
                }
                for (const auto& [_, list] : t.extra)
                {
                    for (const model_tensor* e : list)
                    {
                        check(e);
                    }
                }
            }
        }

        inline void release_inputs(const planned_tensor& t)
        {
            auto rel = [&](const model_tensor* x)
            {
                if (x && x->file)
                {
                    x->file->release(x->name);
                }
            };
            rel(t.base);
            rel(t.copy_from);
            for (const model_tensor* m : t.models)
            {
                rel(m);
            }
            for (const auto& [_, list] : t.extra)
            {
                for (const model_tensor* e : list)
                {
                    rel(e);
                }
            }
        }
    }

    inline merge_summary run_merge(const merge_plan& plan, const method_registry& registry, const std::string& out_dir, const merge_options& options)
    {
        const auto start = std::chrono::steady_clock::now();
        const method_info& info = registry.find(plan.method);

        std::unique_ptr<thread_pool> own_pool;
        eval_options eval;
        eval.threads = options.threads;
        eval.exec = options.exec;
        if (eval.exec == nullptr && options.threads != 1)
        {
            own_pool = std::make_unique<thread_pool>(options.threads);
            eval.exec = own_pool.get();
        }

        std::vector<io::tensor_info> layout;
        for (const auto& t : plan.tensors)
        {
            io::tensor_info i;
            i.name = t.name;
            i.dtype = t.dtype;
            i.shape = t.shape;
            layout.push_back(std::move(i));
        }
        detail::check_output_is_not_input(plan, out_dir);
        // Fails early on a non-empty output directory, before anything is read.
        io::checkpoint_writer writer(out_dir, layout, options.output);

        merge_summary summary;
        merge_progress progress;
        std::map<std::string, std::vector<double>> statistics;
        if (!info.model_statistics.empty())
        {
            progress.phase = merge_progress::stage::statistics;
            progress.total = plan.tensors.size();
            for (const auto& stat : info.model_statistics)
            {
                statistics[stat.name];
            }
            for (const auto& t : plan.tensors)
            {
                if (t.what == planned_tensor::action::merge)
                {
                    const method_inputs in = detail::inputs_of(t, options.seed);
                    for (const auto& stat : info.model_statistics)
                    {
                        const std::vector<double> part = stat.per_tensor(in);
                        auto& sum = statistics[stat.name];
                        sum.resize(std::max(sum.size(), part.size()), 0.0);
                        for (std::size_t k = 0; k < part.size(); ++k)
                        {
                            sum[k] += part[k];
                        }
                    }
                    progress.bytes_read += detail::input_bytes(t);
                    detail::release_inputs(t);
                }
                ++progress.done;
                progress.tensor = t.name;
                if (options.progress)
                {
                    options.progress(progress);
                }
            }
            for (const auto& stat : info.model_statistics)
            {
                for (double& v : statistics[stat.name])
                {
                    v = stat.finish(v);
                }
            }
        }

        progress.phase = merge_progress::stage::tensors;
        progress.done = 0;
        progress.total = plan.tensors.size();
        for (const auto& t : plan.tensors)
        {
            if (t.what == planned_tensor::action::copy)
            {
                const model_tensor& src = *t.copy_from;
                if (src.dtype == t.dtype)
                {
                    writer.write(t.name, src.data, src.bytes);
                }
                else
                {
                    evaluate(input(src.ref()), writer.tensor(t.name), eval);
                }
                ++summary.copied;
            }
            else
            {
                method_inputs in = detail::inputs_of(t, options.seed);
                in.model_statistics = statistics;
                const any_expression merged = registry.build(plan.method, in, t.params);
                evaluate(merged, writer.tensor(t.name), eval);
                ++summary.merged;
            }
            writer.finish(t.name);
            detail::release_inputs(t);
            progress.bytes_read += detail::input_bytes(t);
            progress.bytes_written += numel(t.shape) * io::dtype_bits(t.dtype) / 8;
            ++progress.done;
            progress.tensor = t.name;
            if (options.progress)
            {
                options.progress(progress);
            }
        }
        for (const auto& [source, name] : options.files)
        {
            writer.add_file(source, name);
        }
        for (const auto& [name, contents] : options.file_contents)
        {
            writer.add_file_contents(name, contents);
        }
        writer.commit();

        summary.tensors = plan.tensors.size();
        summary.shards = writer.shard_count();
        summary.layers = plan.layers;
        summary.bytes_read = progress.bytes_read;
        summary.bytes_written = writer.total_bytes();
        summary.notes = plan.notes;
        summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        return summary;
    }

    inline merge_summary merge_models(const merge_spec& spec, const method_registry& registry, const std::string& out_dir, const merge_options& options)
    {
        return run_merge(plan_merge(spec, registry, options), registry, out_dir, options);
    }
}

#endif
