/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_IO_MODEL_CONFIG_HPP
#define XMERGE_IO_MODEL_CONFIG_HPP

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "../core/dtype.hpp"
#include "../core/error.hpp"

/**
 * @file
 * A checkpoint's `config.json` (Hugging Face transformers), for the facts a
 * merge changes in it: the layer count of a layer-stacking merge, the
 * vocabulary size of a merged tokenizer, the dtype the tensors were written
 * in. Every other key is kept as it is, in its order.
 *
 * Vision-language configs keep the language model's facts under
 * `text_config`; a key absent at the top level is looked up there.
 */

namespace xmerge::io
{
    class model_config
    {
    public:
        /// Reads `path` (a config.json); io_error naming it when unreadable or not a JSON object.
        static model_config open(const std::string& path);

        /// Sets every layer-count key present (num_hidden_layers, n_layer, num_layers).
        void set_layer_count(std::size_t layers);
        /// vocab_size, or text_config.vocab_size; empty when neither is there.
        std::optional<std::size_t> vocab_size() const;
        void set_vocab_size(std::size_t n);
        /**
         * Records the dtype of the written tensors: "torch_dtype" (older
         * transformers) and "dtype" (newer), whichever are present, else
         * "torch_dtype", which every version reads.
         */
        void set_dtype(dtype t);
        /// tie_word_embeddings, when the config says.
        std::optional<bool> tied_embeddings() const;
        void set_tied_embeddings(bool tied);

        std::string dump() const { return m_json.dump(2) + "\n"; }
        const nlohmann::ordered_json& json() const noexcept { return m_json; }

    private:
        // The object holding `key`: the top level, else text_config; null when neither has it.
        nlohmann::ordered_json* holder(const char* key);
        const nlohmann::ordered_json* holder(const char* key) const;

        std::string m_path;
        nlohmann::ordered_json m_json;
    };

    /********************
     * Implementation   *
     ********************/

    inline model_config model_config::open(const std::string& path)
    {
        std::ifstream in(path, std::ios::binary);
        if (!in)
        {
            throw io_error(path, "", "cannot open");
        }
        std::stringstream text;
        text << in.rdbuf();
        model_config c;
        c.m_path = path;
        // A config has tens of keys: the ordered object's linear lookups cost nothing here.
        c.m_json = nlohmann::ordered_json::parse(text.str(), nullptr, false);
        if (c.m_json.is_discarded() || !c.m_json.is_object())
        {
            throw io_error(path, "", "is not a JSON object");
        }
        return c;
    }

    inline const nlohmann::ordered_json* model_config::holder(const char* key) const
    {
        if (m_json.contains(key))
        {
            return &m_json;
        }
        const auto text = m_json.find("text_config");
        if (text != m_json.end() && text->is_object() && text->contains(key))
        {
            return &*text;
        }
        return nullptr;
    }

    inline nlohmann::ordered_json* model_config::holder(const char* key)
    {
        return const_cast<nlohmann::ordered_json*>(static_cast<const model_config&>(*this).holder(key));
    }

    inline void model_config::set_layer_count(std::size_t layers)
    {
        for (const char* key : {"num_hidden_layers", "n_layer", "num_layers"})
        {
            if (auto* h = holder(key))
            {
                (*h)[key] = layers;
            }
        }
    }

    inline std::optional<std::size_t> model_config::vocab_size() const
    {
        const auto* h = holder("vocab_size");
        if (h == nullptr || !(*h)["vocab_size"].is_number_unsigned())
        {
            return std::nullopt;
        }
        return (*h)["vocab_size"].get<std::size_t>();
    }

    inline void model_config::set_vocab_size(std::size_t n)
    {
        auto* h = holder("vocab_size");
        (h ? *h : m_json)["vocab_size"] = n;
    }

    inline void model_config::set_dtype(dtype t)
    {
        const bool modern = m_json.contains("dtype"), legacy = m_json.contains("torch_dtype");
        if (modern)
        {
            m_json["dtype"] = name_of(t);
        }
        if (legacy || !modern)
        {
            m_json["torch_dtype"] = name_of(t);
        }
    }

    inline std::optional<bool> model_config::tied_embeddings() const
    {
        const auto* h = holder("tie_word_embeddings");
        if (h == nullptr || !(*h)["tie_word_embeddings"].is_boolean())
        {
            return std::nullopt;
        }
        return (*h)["tie_word_embeddings"].get<bool>();
    }

    inline void model_config::set_tied_embeddings(bool tied)
    {
        auto* h = holder("tie_word_embeddings");
        (h ? *h : m_json)["tie_word_embeddings"] = tied;
    }
}

#endif
