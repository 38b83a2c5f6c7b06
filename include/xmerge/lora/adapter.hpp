/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LORA_ADAPTER_HPP
#define XMERGE_LORA_ADAPTER_HPP

#include <cstddef>
#include <filesystem>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor_ref.hpp"
#include "../model/model.hpp"
#include "config.hpp"
#include "layer.hpp"

/**
 * @file
 * A PEFT LoRA adapter: adapter_config.json and adapter_model.safetensors,
 * read into layers named after the base-model weights they update.
 *
 * PEFT names a module's tensors "base_model.model.<module>.lora_A.weight",
 * ".lora_B.weight" (".lora_embedding_A/B" for embeddings), ".lora_B.bias"
 * (lora_bias) and ".lora_magnitude_vector" (DoRA); other tensors
 * ("<module>.weight" of modules_to_save, "<module>.base_layer.bias" of
 * saved biases) replace the base tensor of that name in full.
 */

namespace xmerge::lora
{
    /// A base-model tensor an adapter replaces in full.
    struct replacement
    {
        /// Name in the base model ("lm_head.weight").
        std::string target;
        /// The adapter's tensor (its name as in the adapter file).
        model_tensor tensor;
    };

    /// An adapter's layers and replacements, checked against its config.
    class adapter
    {
    public:
        /**
         * Opens a PEFT adapter: a directory holding adapter_config.json and
         * adapter_model.safetensors, or the safetensors file itself with the
         * config beside it. Throws io_error naming the file and tensor at
         * fault: a lora_A without its lora_B (or the reverse), ranks of A and
         * B that disagree with each other or with the config's r /
         * rank_pattern, DoRA magnitudes without use_dora (or the reverse),
         * LoRA tensors of an unknown kind.
         */
        static adapter open(const std::string& path);

        /// An adapter from a config and tensors named as PEFT saves them (the "base_model.model." prefix is optional).
        adapter(adapter_config config, model tensors, std::string config_origin = "adapter_config.json");

        const adapter_config& config() const noexcept { return m_config; }
        /// Updated weights, in file order.
        const std::vector<layer>& layers() const noexcept { return m_layers; }
        /// Tensors replaced in full.
        const std::vector<replacement>& replacements() const noexcept { return m_replacements; }
        /// The layer updating base weight `target`; null when there is none.
        const layer* find(const std::string& target) const noexcept;
        /// The layer whose lora_B bias updates base bias `target`; null when there is none.
        const layer* find_bias_update(const std::string& target) const noexcept;
        /// The replacement of base tensor `target`; null when there is none.
        const replacement* find_replacement(const std::string& target) const noexcept;
        /// The adapter's tensors as stored.
        const model& tensors() const noexcept { return m_tensors; }
        /// The adapter_model.safetensors path (or the in-memory model's name), for messages.
        const std::string& file() const noexcept { return m_tensors.name(); }

        /**
         * Throws io_error naming the adapter file and its tensor unless every
         * layer and replacement fits `base`: the base tensor exists, is
         * float32, bfloat16 or float16 where it is updated, and has the shape
         * the factors (or the replacement) call for.
         */
        void check_against(const model& base) const;

    private:
        adapter_config m_config;
        model m_tensors;
        std::vector<layer> m_layers;
        std::vector<replacement> m_replacements;
        std::unordered_map<std::string, std::size_t> m_layer_index, m_bias_index, m_replacement_index;
    };

    /// The module of a weight or bias name: "a.b.weight" -> "a.b".
    inline std::string module_of(const std::string& tensor);

    /// The prefix PEFT puts before module names in adapter files.
    constexpr const char* peft_prefix = "base_model.model.";

    /********************
     * Implementation   *
     ********************/

    inline std::string module_of(const std::string& tensor)
    {
        const auto dot = tensor.rfind('.');
        return dot == std::string::npos ? std::string() : tensor.substr(0, dot);
    }

    namespace detail
    {
        inline bool ends_with(const std::string& s, const std::string& suffix)
        {
            return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
        }

        enum class part
        {
            a,
            b,
            bias,
            magnitude,
            embedding_a,
            embedding_b
        };

        struct module_parts
        {
            const model_tensor* tensors[6] = {};
            const model_tensor*& operator[](part p) { return tensors[static_cast<int>(p)]; }
            const model_tensor* operator[](part p) const { return tensors[static_cast<int>(p)]; }
        };

        // Suffix of each LoRA tensor kind, longest first where one ends another.
        inline const std::pair<const char*, part>* lora_suffixes(std::size_t& count)
        {
            static const std::pair<const char*, part> table[] = {{".lora_A.weight", part::a},
                                                                 {".lora_B.weight", part::b},
                                                                 {".lora_B.bias", part::bias},
                                                                 {".lora_magnitude_vector.weight", part::magnitude},
                                                                 {".lora_magnitude_vector", part::magnitude},
                                                                 {".lora_embedding_A", part::embedding_a},
                                                                 {".lora_embedding_B", part::embedding_b}};
            count = sizeof(table) / sizeof(table[0]);
            return table;
        }

        inline const_tensor_ref factor_ref(const model_tensor& t, const std::string& file)
        {
            if (!t.is_arithmetic())
            {
                throw io_error(file, t.name, "dtype " + t.dtype + " cannot hold LoRA factors (F32, BF16 or F16 can)");
            }
            return t.ref();
        }
    }

    inline adapter adapter::open(const std::string& path)
    {
        namespace fs = std::filesystem;
        const fs::path p(path);
        if (!fs::exists(p))
        {
            throw io_error(path, "", "no such adapter directory or file");
        }
        const fs::path dir = fs::is_directory(p) ? p : p.parent_path();
        const fs::path weights = fs::is_directory(p) ? dir / "adapter_model.safetensors" : p;
        const fs::path config = dir / "adapter_config.json";
        if (!fs::exists(config))
        {
            throw io_error(config.string(), "", "no adapter_config.json: not a PEFT adapter directory");
        }
        if (!fs::exists(weights))
        {
            throw io_error(weights.string(), "", "no adapter_model.safetensors (adapters saved as .bin need converting to safetensors)");
        }
        return adapter(read_adapter_config(config.string()), model::open(weights.string()), config.string());
    }

    inline adapter::adapter(adapter_config config, model tensors, std::string config_origin)
        : m_config(std::move(config)), m_tensors(std::move(tensors))
    {
        const std::string& file = m_tensors.name();
        const std::string prefix = peft_prefix;
        std::map<std::string, detail::module_parts> modules;
        std::vector<std::string> order;
        std::size_t n_suffixes = 0;
        const auto* suffixes = detail::lora_suffixes(n_suffixes);
        for (const model_tensor& t : m_tensors.tensors())
        {
            const std::string name = t.name.compare(0, prefix.size(), prefix) == 0 ? t.name.substr(prefix.size()) : t.name;
            bool is_lora = false;
            for (std::size_t i = 0; i < n_suffixes && !is_lora; ++i)
            {
                const std::string suffix = suffixes[i].first;
                if (detail::ends_with(name, suffix))
                {
                    const std::string module = name.substr(0, name.size() - suffix.size());
                    if (modules.count(module) == 0)
                    {
                        order.push_back(module);
                    }
                    modules[module][suffixes[i].second] = &t;
                    is_lora = true;
                }
            }
            if (is_lora)
            {
                continue;
            }
            if (name.find("lora_") != std::string::npos)
            {
                throw io_error(file, t.name, "is a LoRA tensor of a kind this library does not know (LoRA, rsLoRA and DoRA are supported)");
            }
            // PEFT saves a wrapped layer's own bias as "<module>.base_layer.bias".
            std::string target = name;
            const auto wrapped = target.find(".base_layer.");
            if (wrapped != std::string::npos)
            {
                target.erase(wrapped, std::string(".base_layer").size());
            }
            m_replacement_index.emplace(target, m_replacements.size());
            m_replacements.push_back({target, t});
        }

        // Each pattern is compiled once for all modules.
        const detail::pattern_table<std::size_t> ranks(m_config.rank_pattern);
        const detail::pattern_table<double> alphas(m_config.alpha_pattern);
        for (const std::string& module : order)
        {
            const auto& parts = modules[module];
            using detail::part;
            const bool embedding = parts[part::embedding_a] || parts[part::embedding_b];
            const model_tensor* a = embedding ? parts[part::embedding_a] : parts[part::a];
            const model_tensor* b = embedding ? parts[part::embedding_b] : parts[part::b];
            const model_tensor* any = a ? a : (b ? b : (parts[part::magnitude] ? parts[part::magnitude] : parts[part::bias]));
            if (embedding && (parts[part::a] || parts[part::b]))
            {
                throw io_error(file, any->name, "module '" + module + "' has both lora_embedding and lora_A/lora_B factors");
            }
            if (a == nullptr || b == nullptr)
            {
                const std::string missing = a == nullptr ? (embedding ? "lora_embedding_A" : "lora_A.weight") : (embedding ? "lora_embedding_B" : "lora_B.weight");
                throw io_error(file, any->name, "has no matching " + missing + " for module '" + module + "'");
            }
            layer l;
            l.target = module + ".weight";
            l.a = detail::factor_ref(*a, file);
            l.b = detail::factor_ref(*b, file);
            l.embedding = embedding;
            l.layout = embedding || (m_config.fan_in_fan_out && l.a.dimension() == 2) ? factor_layout::in_out : factor_layout::out_in;
            if (l.a.dimension() < 2 || l.b.dimension() < 2 || l.a.shape()[0] != l.b.shape()[1])
            {
                throw io_error(file, b->name, "rank mismatch: " + a->name + " has shape " + to_string(l.a.shape()) + " and " + b->name + " has shape "
                                                  + to_string(l.b.shape()) + " (expected [r, in...] and [out, r...])");
            }
            const std::size_t expected = ranks.find(module, m_config.r);
            if (l.rank() != expected)
            {
                throw io_error(file, a->name, "has rank " + std::to_string(l.rank()) + " but " + config_origin + " gives r = " + std::to_string(expected)
                                                  + " for module '" + module + "' (r or rank_pattern)");
            }
            l.scale = scaling(alphas.find(module, m_config.lora_alpha), expected, m_config.use_rslora);
            if (const model_tensor* m = parts[part::magnitude])
            {
                if (!m_config.use_dora)
                {
                    throw io_error(file, m->name, "is a DoRA magnitude but " + config_origin + " does not set use_dora");
                }
                l.magnitude = detail::factor_ref(*m, file);
            }
            else if (m_config.use_dora)
            {
                throw io_error(file, a->name, config_origin + " sets use_dora but module '" + module + "' has no lora_magnitude_vector");
            }
            if (const model_tensor* bias = parts[part::bias])
            {
                if (!m_config.lora_bias)
                {
                    throw io_error(file, bias->name, "is a lora_B bias but " + config_origin + " does not set lora_bias");
                }
                l.bias = detail::factor_ref(*bias, file);
            }
            m_layer_index.emplace(l.target, m_layers.size());
            if (l.bias)
            {
                m_bias_index.emplace(module + ".bias", m_layers.size());
            }
            m_layers.push_back(std::move(l));
        }
        for (const auto& r : m_replacements)
        {
            if (m_layer_index.count(r.target))
            {
                throw io_error(file, r.tensor.name, "replaces '" + r.target + "', which a LoRA layer of the same adapter updates");
            }
        }
    }

    inline const layer* adapter::find(const std::string& target) const noexcept
    {
        const auto it = m_layer_index.find(target);
        return it == m_layer_index.end() ? nullptr : &m_layers[it->second];
    }

    inline const layer* adapter::find_bias_update(const std::string& target) const noexcept
    {
        const auto it = m_bias_index.find(target);
        return it == m_bias_index.end() ? nullptr : &m_layers[it->second];
    }

    inline const replacement* adapter::find_replacement(const std::string& target) const noexcept
    {
        const auto it = m_replacement_index.find(target);
        return it == m_replacement_index.end() ? nullptr : &m_replacements[it->second];
    }

    inline void adapter::check_against(const model& base) const
    {
        const auto base_tensor = [&](const std::string& target, const std::string& adapter_tensor, bool arithmetic) -> const model_tensor&
        {
            const model_tensor* t = base.find(target);
            if (t == nullptr)
            {
                throw io_error(file(), adapter_tensor, "updates '" + target + "', which base model '" + base.name() + "' does not have");
            }
            if (arithmetic && !t->is_arithmetic())
            {
                throw io_error(file(), adapter_tensor, "updates '" + target + "' of base model '" + base.name() + "', whose dtype " + t->dtype
                                                           + " cannot be computed with");
            }
            return *t;
        };
        for (const layer& l : m_layers)
        {
            const model_tensor& w = base_tensor(l.target, l.a.name(), true);
            const std::string why = mismatch(l, w.shape);
            if (!why.empty())
            {
                throw io_error(file(), l.a.name(), why + "; base tensor '" + l.target + "' of '" + base.name() + "'");
            }
            if (l.bias)
            {
                const model_tensor& bias = base_tensor(module_of(l.target) + ".bias", l.bias->name(), true);
                if (bias.shape.size() != 1 || bias.shape[0] != l.bias->size())
                {
                    throw io_error(file(), l.bias->name(), "has " + std::to_string(l.bias->size()) + " values but base bias '" + bias.name + "' has shape "
                                                               + to_string(bias.shape));
                }
            }
        }
        for (const replacement& r : m_replacements)
        {
            const model_tensor& t = base_tensor(r.target, r.tensor.name, false);
            if (t.shape != r.tensor.shape)
            {
                throw io_error(file(), r.tensor.name, "has shape " + to_string(r.tensor.shape) + " but base tensor '" + r.target + "' has shape "
                                                          + to_string(t.shape));
            }
            if (t.is_arithmetic() != r.tensor.is_arithmetic() || (!t.is_arithmetic() && t.dtype != r.tensor.dtype))
            {
                throw io_error(file(), r.tensor.name, "has dtype " + r.tensor.dtype + " but base tensor '" + r.target + "' has dtype " + t.dtype);
            }
        }
    }
}

#endif
