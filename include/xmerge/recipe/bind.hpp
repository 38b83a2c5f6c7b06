/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_RECIPE_BIND_HPP
#define XMERGE_RECIPE_BIND_HPP

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../methods/registry.hpp"
#include "../model/merge.hpp"
#include "../model/architecture.hpp"
#include "../model/model.hpp"
#include "../model/vocabulary.hpp"
#include "model_reference.hpp"
#include "recipe.hpp"
#include "vocabulary_merge.hpp"

/**
 * @file
 * A recipe bound to its checkpoints and to a method: the models opened
 * (each path once), the base model told apart from the models to merge,
 * and a merge_spec ready for plan_merge.
 */

namespace xmerge
{
    /// Choices of the command line that change how a recipe binds.
    struct bind_options
    {
        /**
         * Cut token-indexed tensors (embeddings, heads) to the smallest
         * vocabulary among the models, keeping token ids as they are
         * (mergekit's --unsafe-truncate-embeddings). Only sound when the
         * models agree on those ids.
         */
        bool truncate_vocabulary = false;

        /**
         * Makes a `MODEL+ADAPTER` reference a checkpoint: returns the path of
         * MODEL with the PEFT adapter at ADAPTER folded in (e.g.
         * lora::fold_cache::folded). Without it such references are refused.
         */
        std::function<std::string(const std::string& model, const std::string& adapter)> fold_adapter;
    };

    /**
     * A recipe whose checkpoints are open.
     *
     * Relative model paths are resolved from the current directory, as
     * mergekit does. When the method needs a base model and the base also
     * appears among the models (as in mergekit's examples), that entry is the
     * base and is not merged as a model; otherwise models are kept as listed.
     * Throws parameter_error for an unknown method, io_error naming the
     * recipe entry for a model that cannot be opened.
     */
    class recipe_merge
    {
    public:
        recipe_merge(const recipe& r, const method_registry& registry, const bind_options& options = {});
        recipe_merge(const recipe_merge&) = delete;
        recipe_merge& operator=(const recipe_merge&) = delete;

        const merge_spec& spec() const noexcept { return m_spec; }
        /// The base model, or null.
        const model* base() const noexcept { return m_base; }
        /// The model whose non-tensor files (config, tokenizer) go with the output: the base, else the first model.
        const model& reference() const noexcept { return *m_reference; }
        /// Output dtype the recipe asks for (out_dtype, else dtype), if any.
        std::optional<dtype> out_dtype() const noexcept { return m_out_dtype; }
        /// The merged vocabulary, when the recipe builds one (tokenizer_source, tokenizer).
        const merged_vocabulary* vocabulary() const noexcept { return m_vocabulary ? &*m_vocabulary : nullptr; }
        /// Total bytes of the distinct checkpoints opened.
        std::size_t input_bytes() const noexcept;

    private:
        /// The model of a recipe's reference (a path, or MODEL+ADAPTER folded), opened once.
        const model* open(const std::string& reference, const std::string& role);
        merge_source source(const recipe_model& m, const std::string& role);

        std::string m_recipe_path;
        std::map<std::string, std::unique_ptr<model>> m_models;
        merge_spec m_spec;
        const model* m_base = nullptr;
        const model* m_reference = nullptr;
        std::optional<dtype> m_out_dtype;
        std::optional<merged_vocabulary> m_vocabulary;
        std::function<std::string(const std::string&, const std::string&)> m_fold_adapter;
    };

    /// Token rows of every model cut to the smallest vocabulary among them, ids unchanged.
    inline std::shared_ptr<const vocabulary_alignment> truncated_vocabulary(const std::vector<const model*>& models);

    /********************
     * Implementation   *
     ********************/

    inline const model* recipe_merge::open(const std::string& reference, const std::string& role)
    {
        std::string path = reference;
        if (const auto lora = split_adapter_reference(reference, m_recipe_path))
        {
            if (!m_fold_adapter)
            {
                throw parameter_error("", "model", role + " '" + reference + "' folds an adapter into a model, which needs bind_options::fold_adapter (the lora component)",
                                      m_recipe_path);
            }
            path = m_fold_adapter(lora->model, lora->adapter);
        }
        if (path.empty())
        {
            throw parameter_error("", "model", role + " has an empty path", m_recipe_path);
        }
        std::error_code ec;
        std::filesystem::path resolved = std::filesystem::absolute(path, ec);
        if (!ec)
        {
            resolved = std::filesystem::weakly_canonical(resolved, ec);
        }
        const std::string key = ec ? path : resolved.string();
        auto it = m_models.find(key);
        if (it == m_models.end())
        {
            try
            {
                auto m = std::make_unique<model>(model::open(path));
                it = m_models.emplace(key, std::move(m)).first;
            }
            catch (const io_error& e)
            {
                throw io_error(e.file().empty() ? path : e.file(), e.tensor(),
                               e.reason() + " (" + role + " '" + reference + "' of recipe " + m_recipe_path + "; relative paths start from the current directory)");
            }
        }
        return it->second.get();
    }

    inline merge_source recipe_merge::source(const recipe_model& m, const std::string& role)
    {
        merge_source s;
        s.source = open(m.model, role);
        s.parameters = m.parameters;
        for (const auto& [kind, path] : m.extra)
        {
            s.extra[kind] = open(path, "'" + kind + "' tensors of " + role);
        }
        if (m.layer_range)
        {
            s.layer_range = *m.layer_range;
        }
        return s;
    }

    inline recipe_merge::recipe_merge(const recipe& r, const method_registry& registry, const bind_options& options)
        : m_recipe_path(r.path)
        , m_fold_adapter(options.fold_adapter)
    {
        const method_info& info = registry.find(r.merge_method);
        m_spec.method = r.merge_method;
        m_spec.parameters = r.parameters;
        m_out_dtype = r.out_dtype ? r.out_dtype : r.compute_dtype;

        if (!r.base_model.empty())
        {
            m_base = open(r.base_model, "base_model");
            m_spec.base = m_base;
        }
        for (const auto& m : r.models)
        {
            merge_source s = source(m, "model");
            if (info.needs_base && s.source == m_base)
            {
                continue;  // the base listed among the models: it is the base, not a task
            }
            m_spec.models.push_back(std::move(s));
        }
        if (!r.models.empty() && m_spec.models.empty())
        {
            throw parameter_error("", "models", "method '" + r.merge_method + "' needs at least one model besides the base", r.path);
        }
        for (std::size_t i = 0; i < r.slices.size(); ++i)
        {
            const recipe_slice& rs = r.slices[i];
            merge_slice slice;
            slice.parameters = rs.parameters;
            const model* slice_base = rs.base_model.empty() ? m_base : open(rs.base_model, "base_model of slice " + std::to_string(i));
            for (const auto& src : rs.sources)
            {
                merge_source s = source(src, "source of slice " + std::to_string(i));
                if (slice_base != nullptr && s.source == slice_base && !slice.base)
                {
                    slice.base = s;
                    if (info.needs_base)
                    {
                        continue;
                    }
                }
                slice.sources.push_back(std::move(s));
            }
            if (info.needs_base && !slice.base)
            {
                throw parameter_error("", "base_model", "slice " + std::to_string(i) + " has no source from the base model; method '" + r.merge_method
                                                             + "' needs one (list the base among the sources with its layer_range)", r.path);
            }
            if (slice.sources.empty())
            {
                throw parameter_error("", "sources", "slice " + std::to_string(i) + " has no model to merge besides the base", r.path);
            }
            m_spec.slices.push_back(std::move(slice));
        }
        m_spec.base = m_base;
        m_reference = m_base ? m_base : (!m_spec.models.empty() ? m_spec.models.front().source : m_spec.slices.front().sources.front().source);
        if (r.tokenizer || options.truncate_vocabulary)
        {
            // mergekit's order of the inputs: as listed, the base last when it is not listed.
            std::vector<const model*> order;
            auto add = [&](const std::string& path)
            {
                const model* m = open(path, "model");
                if (std::find(order.begin(), order.end(), m) == order.end())
                {
                    order.push_back(m);
                }
            };
            for (const auto& m : r.models)
            {
                add(m.model);
            }
            for (const auto& s : r.slices)
            {
                for (const auto& src : s.sources)
                {
                    add(src.model);
                }
            }
            if (m_base)
            {
                add(r.base_model);
            }
            if (r.tokenizer && options.truncate_vocabulary)
            {
                throw parameter_error("", "tokenizer_source", "a merged vocabulary and truncated embeddings exclude each other", r.path);
            }
            if (r.tokenizer)
            {
                m_vocabulary = merge_vocabularies(*r.tokenizer, m_base, order, [this](const std::string& path, const std::string& role) { return open(path, role); });
                m_spec.vocabulary = m_vocabulary->alignment;
            }
            else
            {
                m_spec.vocabulary = truncated_vocabulary(order);
            }
        }
    }

    inline std::shared_ptr<const vocabulary_alignment> truncated_vocabulary(const std::vector<const model*>& models)
    {
        auto a = std::make_shared<vocabulary_alignment>();
        bool first = true;
        for (const model* m : models)
        {
            for (const auto& t : m->tensors())
            {
                if (is_vocabulary_tensor(t.name) && !t.shape.empty())
                {
                    const auto rows = static_cast<std::size_t>(t.shape[0]);
                    a->tokens = first ? rows : std::min(a->tokens, rows);
                    first = false;
                }
            }
        }
        a->rows = a->tokens;
        a->order = models;
        for (const model* m : models)
        {
            std::vector<std::int64_t> rows(a->tokens);
            for (std::size_t i = 0; i < rows.size(); ++i)
            {
                rows[i] = static_cast<std::int64_t>(i);
            }
            a->rows_of[m] = std::move(rows);
        }
        return a;
    }

    inline std::size_t recipe_merge::input_bytes() const noexcept
    {
        std::size_t n = 0;
        for (const auto& [_, m] : m_models)
        {
            n += m->total_bytes();
        }
        return n;
    }
}

#endif
