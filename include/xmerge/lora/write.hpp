/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LORA_WRITE_HPP
#define XMERGE_LORA_WRITE_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../core/tensor_ref.hpp"
#include "../io/checkpoint_writer.hpp"
#include "../ops/input.hpp"
#include "adapter.hpp"
#include "config.hpp"
#include "layer.hpp"

/**
 * @file
 * Writing layers (and tensors replaced in full) as a PEFT adapter
 * directory, atomically: it appears complete or not at all.
 */

namespace xmerge::lora
{
    /// How write_adapter() writes.
    struct write_options
    {
        /// dtype of every tensor in the file; by default each keeps its own.
        std::optional<dtype> out_dtype;
        /// Replace an existing non-empty directory (only once the new one is complete).
        bool overwrite = false;
        /// Flush to the device before returning.
        bool sync = false;
    };

    /**
     * Writes a PEFT adapter to directory `dir`: adapter_model.safetensors and
     * adapter_config.json.
     *
     * `config` gives the fields the layers do not decide (use_rslora, which
     * turns each layer's scale into an alpha, base_model_name_or_path,
     * anything in `other`). The rest is derived: target_modules (every
     * layer's module, by full name), r and lora_alpha (the most common
     * values) with rank_pattern and alpha_pattern entries for the layers
     * that differ, use_dora, fan_in_fan_out, lora_bias, and for the
     * replacements (base tensor name, new value) modules_to_save, or
     * bias = "lora_only" for the bias of a layer's own module.
     *
     * Throws parameter_error for what PEFT cannot express: DoRA or bias
     * updates on some layers only, fan_in_fan_out on some linear layers only,
     * a replacement of a weight a layer updates, two layers of one weight.
     * Returns the config written.
     */
    inline adapter_config write_adapter(const std::string& dir, const std::vector<layer>& layers,
                                        const std::vector<std::pair<std::string, const_tensor_ref>>& replacements, adapter_config config = {},
                                        const write_options& options = {});

    /// Writes an adapter read with adapter::open (or built in memory) again, e.g. in another dtype.
    inline adapter_config write_adapter(const std::string& dir, const adapter& a, const write_options& options = {});

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        template <class T>
        T most_common(const std::vector<T>& values)
        {
            std::map<T, std::size_t> counts;
            for (const T& v : values)
            {
                ++counts[v];
            }
            T best = counts.begin()->first;
            std::size_t best_count = 0;
            for (const auto& [value, count] : counts)
            {
                if (count >= best_count)  // ties go to the larger value
                {
                    best = value;
                    best_count = count;
                }
            }
            return best;
        }

        inline void require_all_or_none(std::size_t with, std::size_t total, const char* what)
        {
            if (with != 0 && with != total)
            {
                throw parameter_error("", what,
                                      std::to_string(with) + " of " + std::to_string(total) + " layers have it; a PEFT adapter has it on every layer or on none");
            }
        }

        /// alpha = scale * r (or * sqrt(r)), rounded to a whole number when it is one up to rounding.
        inline double alpha_of(const layer& l, bool rslora)
        {
            const double r = static_cast<double>(l.rank());
            const double alpha = l.scale * (rslora ? std::sqrt(r) : r);
            const double whole = std::round(alpha);
            return std::fabs(alpha - whole) <= 1e-9 * std::max(1.0, std::fabs(alpha)) ? whole : alpha;
        }
    }

    inline adapter_config write_adapter(const std::string& dir, const std::vector<layer>& layers,
                                        const std::vector<std::pair<std::string, const_tensor_ref>>& replacements, adapter_config config,
                                        const write_options& options)
    {
        std::size_t dora = 0, bias = 0, fan_in_fan_out = 0, linear = 0;
        std::vector<std::size_t> ranks;
        std::vector<double> alphas;
        std::set<std::string> targets;
        for (const layer& l : layers)
        {
            if (l.rank() == 0)
            {
                throw parameter_error(l.target, "r", "a layer of rank 0 cannot be written; leave it out");
            }
            if (!targets.insert(l.target).second)
            {
                throw parameter_error(l.target, "layers", "two layers update this weight");
            }
            dora += l.is_dora();
            bias += l.bias.has_value();
            if (!l.embedding)
            {
                ++linear;
                fan_in_fan_out += l.layout == factor_layout::in_out;
            }
            ranks.push_back(l.rank());
            alphas.push_back(detail::alpha_of(l, config.use_rslora));
        }
        detail::require_all_or_none(dora, layers.size(), "use_dora");
        detail::require_all_or_none(bias, layers.size(), "lora_bias");
        detail::require_all_or_none(fan_in_fan_out, linear, "fan_in_fan_out");

        config.use_dora = dora != 0;
        config.lora_bias = bias != 0;
        config.fan_in_fan_out = fan_in_fan_out != 0;
        config.target_modules.clear();
        config.target_modules_regex.clear();
        config.rank_pattern.clear();
        config.alpha_pattern.clear();
        config.modules_to_save.clear();
        config.bias = "none";
        if (!layers.empty())
        {
            config.r = detail::most_common(ranks);
            config.lora_alpha = detail::most_common(alphas);
        }

        const std::string prefix = peft_prefix;
        std::vector<std::pair<io::tensor_info, const_tensor_ref>> out;
        const auto add = [&](const std::string& name, const const_tensor_ref& t)
        {
            io::tensor_info info;
            info.name = name;
            info.dtype = io::safetensors_name(options.out_dtype.value_or(t.type()));
            info.shape = t.shape();
            out.emplace_back(std::move(info), t);
        };
        for (std::size_t i = 0; i < layers.size(); ++i)
        {
            const layer& l = layers[i];
            const std::string module = module_of(l.target);
            config.target_modules.push_back(module);
            if (ranks[i] != config.r)
            {
                config.rank_pattern.emplace_back(escape_pattern(module), ranks[i]);
            }
            if (alphas[i] != config.lora_alpha)
            {
                config.alpha_pattern.emplace_back(escape_pattern(module), alphas[i]);
            }
            add(prefix + module + (l.embedding ? ".lora_embedding_A" : ".lora_A.weight"), l.a);
            add(prefix + module + (l.embedding ? ".lora_embedding_B" : ".lora_B.weight"), l.b);
            if (l.magnitude)
            {
                add(prefix + module + ".lora_magnitude_vector", *l.magnitude);
            }
            if (l.bias)
            {
                add(prefix + module + ".lora_B.bias", *l.bias);
            }
        }
        std::set<std::string> saved_modules;
        for (const auto& [target, tensor] : replacements)
        {
            if (targets.count(target))
            {
                throw parameter_error(target, "replacements", "a layer of the adapter updates this weight; it cannot also be replaced in full");
            }
            const std::string module = module_of(target);
            const bool own_bias = module.size() + 5 == target.size() && target.compare(module.size(), 5, ".bias") == 0 && targets.count(module + ".weight");
            if (own_bias)
            {
                // A LoRA layer's module cannot be saved whole; PEFT saves its bias beside the layer.
                config.bias = "lora_only";
                add(prefix + module + ".base_layer.bias", tensor);
            }
            else
            {
                if (saved_modules.insert(module).second)
                {
                    config.modules_to_save.push_back(module);
                }
                add(prefix + target, tensor);
            }
        }

        std::vector<io::tensor_info> layout;
        for (const auto& [info, _] : out)
        {
            layout.push_back(info);
        }
        io::checkpoint_options co;
        co.basename = "adapter_model";
        co.max_shard_bytes = std::numeric_limits<std::size_t>::max();  // PEFT reads one file
        co.overwrite = options.overwrite;
        co.sync = options.sync;
        io::checkpoint_writer writer(dir, layout, co);
        for (const auto& [info, t] : out)
        {
            if (io::safetensors_name(t.type()) == info.dtype)
            {
                writer.write(info.name, t.data(), t.bytes());
            }
            else
            {
                xmerge::evaluate(xmerge::input(t), writer.tensor(info.name));
            }
            writer.finish(info.name);
        }
        writer.add_file_contents("adapter_config.json", to_json(config));
        writer.commit();
        return config;
    }

    inline adapter_config write_adapter(const std::string& dir, const adapter& a, const write_options& options)
    {
        std::vector<std::pair<std::string, const_tensor_ref>> replaced;
        for (const auto& r : a.replacements())
        {
            if (!r.tensor.is_arithmetic())
            {
                throw io_error(a.file(), r.tensor.name, "dtype " + r.tensor.dtype + " cannot be written by this function");
            }
            replaced.emplace_back(r.target, r.tensor.ref());
        }
        return write_adapter(dir, a.layers(), replaced, a.config(), options);
    }
}

#endif
