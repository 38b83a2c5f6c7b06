/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LORA_EXTRACT_MODEL_HPP
#define XMERGE_LORA_EXTRACT_MODEL_HPP

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../model/model.hpp"
#include "adapter.hpp"
#include "extract.hpp"
#include "write.hpp"

/**
 * @file
 * Extracting a PEFT adapter from a fine-tuned model and its base.
 *
 * 2-D weights become LoRA layers; tensors that are not 2-D (norms, biases,
 * convolutions) and embeddings (unless asked for as LoRA) are saved in
 * full, as modules_to_save (or, for the bias of a LoRA layer's own module,
 * as PEFT's saved biases). Unchanged tensors are left out. One tensor is
 * held at a time: the update in the SVD's precision plus the SVD's
 * workspace; the factors of every layer stay in memory until the adapter
 * is written, and tensors saved in full are copied from the fine-tune's
 * mapping when written.
 */

namespace xmerge::lora
{
    /// What extraction did with one tensor of the fine-tune.
    struct extracted_tensor
    {
        enum class kind
        {
            lora,       ///< factored
            full,       ///< saved in full
            unchanged   ///< equal to the base: left out
        };
        std::string name;
        kind what = kind::unchanged;
        std::size_t rank = 0;
        /// Frobenius norm of the update.
        double update_norm = 0.0;
        /// Share of ||update||_F^2 the factors keep (1 for full and unchanged tensors).
        double kept_energy = 1.0;
    };

    /// How extract_adapter() works.
    struct extraction_options : factor_options
    {
        /// Embedding tables (by a part of their name) are saved in full unless embeddings_as_lora.
        std::vector<std::string> embedding_names = {"embed_tokens", "wte", "wpe", "word_embeddings", "embed_in", "embed_positions", "position_embeddings"};
        bool embeddings_as_lora = false;
        /// The models store their linear weights [in, out] (GPT-2's Conv1D).
        bool fan_in_fan_out = false;
        /// dtype of the adapter's tensors; by default that of each fine-tuned tensor.
        std::optional<dtype> out_dtype;
        /// Written into adapter_config.json.
        std::string base_model_name_or_path;
        /// Replace an existing non-empty output directory.
        bool overwrite = false;
        /// Called after each tensor.
        std::function<void(const extracted_tensor&)> progress;
    };

    /// What extract_adapter() wrote.
    struct extraction_report
    {
        /// Every tensor of the fine-tune, in its order.
        std::vector<extracted_tensor> tensors;
        adapter_config config;
        double seconds = 0.0;
    };

    /**
     * Writes a PEFT adapter to `out_dir` that turns `base` into (an
     * approximation of) `finetuned`. Every tensor of the fine-tune must be
     * in the base with the same shape (io_error naming the fine-tune's file
     * and tensor otherwise); tensors only the base has are ignored.
     */
    inline extraction_report extract_adapter(const model& base, const model& finetuned, const std::string& out_dir, const extraction_options& options = {});

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        /// e describes the factors f of weight e.name; a layer over f's memory is added unless f is empty.
        inline void record_layer(extracted_tensor& e, const extracted_factors& f, std::vector<layer>& layers, factor_layout layout, bool embedding,
                                 const shape_type& weight_shape)
        {
            e.what = extracted_tensor::kind::lora;
            e.rank = f.rank();
            e.update_norm = std::sqrt(f.total_energy);
            e.kept_energy = f.kept_fraction();
            if (f.rank() != 0)
            {
                layers.push_back(as_layer(f, e.name, layout, embedding, weight_shape));
            }
        }

        inline bool same_bytes(const model_tensor& a, const model_tensor& b)
        {
            return a.bytes == b.bytes && a.dtype == b.dtype && (a.bytes == 0 || std::memcmp(a.data, b.data, a.bytes) == 0);
        }

        inline bool is_embedding(const std::string& name, const std::vector<std::string>& patterns)
        {
            for (const auto& p : patterns)
            {
                if (!p.empty() && name.find(p) != std::string::npos)
                {
                    return true;
                }
            }
            return false;
        }
    }

    inline extraction_report extract_adapter(const model& base, const model& finetuned, const std::string& out_dir, const extraction_options& options)
    {
        const auto start = std::chrono::steady_clock::now();
        // Which tensors change, and which of them can be factored.
        const auto& tensors = finetuned.tensors();
        std::vector<bool> changed(tensors.size(), false);
        std::set<std::string> factored_modules;
        std::map<std::string, std::vector<std::string>> changed_by_module;
        for (std::size_t i = 0; i < tensors.size(); ++i)
        {
            const model_tensor& t = tensors[i];
            const model_tensor* b = base.find(t.name);
            if (b == nullptr)
            {
                throw io_error(t.origin(), t.name, "is not in base model '" + base.name() + "'; an adapter can only change tensors the base has");
            }
            if (b->shape != t.shape)
            {
                throw io_error(t.origin(), t.name, "has shape " + to_string(t.shape) + " but the base's has shape " + to_string(b->shape));
            }
            if (b->is_arithmetic() != t.is_arithmetic() || (!t.is_arithmetic() && b->dtype != t.dtype))
            {
                throw io_error(t.origin(), t.name, "has dtype " + t.dtype + " but the base's has dtype " + b->dtype);
            }
            if (detail::same_bytes(t, *b))
            {
                continue;
            }
            if (!t.is_arithmetic())
            {
                throw io_error(t.origin(), t.name, "differs from the base but has dtype " + t.dtype + ", which an adapter cannot carry");
            }
            changed[i] = true;
            const std::string module = module_of(t.name);
            changed_by_module[module].push_back(t.name);
            if (t.shape.size() == 2 && t.name == module + ".weight" && (!detail::is_embedding(t.name, options.embedding_names) || options.embeddings_as_lora))
            {
                factored_modules.insert(module);
            }
        }
        // A module that changes tensors besides its weight and bias cannot be a LoRA target: it is saved whole.
        for (const auto& [module, names] : changed_by_module)
        {
            for (const std::string& name : names)
            {
                if (name != module + ".weight" && name != module + ".bias")
                {
                    factored_modules.erase(module);
                }
            }
        }

        extraction_report report;
        std::deque<extracted_factors> factors;
        std::vector<layer> layers;
        std::vector<std::pair<std::string, const_tensor_ref>> replacements;
        for (std::size_t i = 0; i < tensors.size(); ++i)
        {
            const model_tensor& t = tensors[i];
            extracted_tensor e;
            e.name = t.name;
            const std::string module = module_of(t.name);
            if (!changed[i])
            {
                e.what = extracted_tensor::kind::unchanged;
            }
            else if (factored_modules.count(module) && t.name == module + ".weight")
            {
                const bool embedding = detail::is_embedding(t.name, options.embedding_names);
                const factor_layout layout = embedding || options.fan_in_fan_out ? factor_layout::in_out : factor_layout::out_in;
                factors.push_back(extract_factors(t.ref(), base.at(t.name).ref(), options, layout));
                detail::record_layer(e, factors.back(), layers, layout, embedding, t.shape);
                base.release(base.at(t.name));
                finetuned.release(t);
            }
            else
            {
                e.what = extracted_tensor::kind::full;
                replacements.emplace_back(t.name, t.ref());
            }
            report.tensors.push_back(e);
            if (options.progress)
            {
                options.progress(e);
            }
        }

        adapter_config config;
        config.base_model_name_or_path = options.base_model_name_or_path;
        write_options wo;
        wo.out_dtype = options.out_dtype;
        wo.overwrite = options.overwrite;
        report.config = write_adapter(out_dir, layers, replacements, config, wo);
        report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        return report;
    }
}

#endif
