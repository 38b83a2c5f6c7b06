/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_IO_TOKENIZER_HPP
#define XMERGE_IO_TOKENIZER_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"

/**
 * @file
 * A Hugging Face tokenizer as its files describe it (`tokenizer.json`, the
 * "fast" tokenizer, and `tokenizer_config.json`): the vocabulary, token to
 * id, and the added tokens with their flags; enough to build the vocabulary
 * of a merge and write its tokenizer. Nothing here tokenizes text.
 *
 * The model's vocabulary is `model.vocab` (a token-to-id object for BPE,
 * WordPiece and WordLevel; a list of [piece, score] for Unigram), and the
 * added tokens are `added_tokens`; together they are what transformers'
 * `get_vocab()` returns.
 */

namespace xmerge::io
{
    /// The tokenizer files of a checkpoint directory.
    class tokenizer_files
    {
    public:
        /// Whether `dir` holds a tokenizer.json.
        static bool present(const std::string& dir);

        /// Reads `dir`/tokenizer.json (required) and `dir`/tokenizer_config.json (if present); io_error naming the file otherwise.
        static tokenizer_files open(const std::string& dir);

        const std::string& directory() const noexcept { return m_dir; }
        /// Every token (model vocabulary and added tokens) and its id.
        const std::unordered_map<std::string, std::int64_t>& vocabulary() const noexcept { return m_vocab; }
        /// Number of distinct tokens (transformers' len(get_vocab())).
        std::size_t size() const noexcept { return m_vocab.size(); }
        bool contains(const std::string& token) const { return m_vocab.count(token) != 0; }
        /// Added tokens by id: the JSON object of tokenizer.json (content, id, special, ...).
        std::map<std::int64_t, nlohmann::json> added_tokens() const;

        /**
         * Drops every token whose id is `n` or more (tokens a checkpoint
         * lists past its embedding rows), with the BPE merges that use them.
         * Throws io_error when that needs a model type other than BPE.
         */
        void truncate(std::int64_t n);

        /**
         * Appends a token as an added token with the next free id and the
         * flags of `info` (an added-token object; at least "content").
         * A token already in the vocabulary is left as it is.
         */
        void add(const nlohmann::json& info);

        /// tokenizer.json and tokenizer_config.json as written to an output (name, contents).
        std::vector<std::pair<std::string, std::string>> serialize() const;

    private:
        void index();

        std::string m_dir;
        nlohmann::json m_tokenizer;
        // Small: kept in file order.
        nlohmann::ordered_json m_config;
        bool m_has_config = false;
        std::unordered_map<std::string, std::int64_t> m_vocab;
    };

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        inline std::string read_text(const std::string& path)
        {
            std::ifstream in(path, std::ios::binary);
            if (!in)
            {
                throw io_error(path, "", "cannot open");
            }
            std::stringstream s;
            s << in.rdbuf();
            return s.str();
        }
    }

    inline bool tokenizer_files::present(const std::string& dir)
    {
        return std::filesystem::is_regular_file(std::filesystem::path(dir) / "tokenizer.json");
    }

    inline tokenizer_files tokenizer_files::open(const std::string& dir)
    {
        tokenizer_files t;
        t.m_dir = dir;
        const std::string path = (std::filesystem::path(dir) / "tokenizer.json").string();
        if (!present(dir))
        {
            throw io_error(path, "", "missing: building a merged vocabulary needs the fast tokenizer file (tokenizer.json)");
        }
        t.m_tokenizer = nlohmann::json::parse(detail::read_text(path), nullptr, false);
        if (t.m_tokenizer.is_discarded() || !t.m_tokenizer.is_object() || !t.m_tokenizer.contains("model") || !t.m_tokenizer["model"].is_object())
        {
            throw io_error(path, "", "not a tokenizer.json (no \"model\" object)");
        }
        const std::string config = (std::filesystem::path(dir) / "tokenizer_config.json").string();
        if (std::filesystem::is_regular_file(config))
        {
            t.m_config = nlohmann::ordered_json::parse(detail::read_text(config), nullptr, false);
            if (t.m_config.is_discarded() || !t.m_config.is_object())
            {
                throw io_error(config, "", "not a JSON object");
            }
            t.m_has_config = true;
        }
        t.index();
        return t;
    }

    inline void tokenizer_files::index()
    {
        const std::string path = (std::filesystem::path(m_dir) / "tokenizer.json").string();
        m_vocab.clear();
        const nlohmann::json& vocab = m_tokenizer["model"].value("vocab", nlohmann::json::object());
        if (vocab.is_object())
        {
            for (const auto& [token, id] : vocab.items())
            {
                if (!id.is_number_integer())
                {
                    throw io_error(path, "", "model.vocab: the id of token '" + token + "' is not an integer");
                }
                m_vocab[token] = id.get<std::int64_t>();
            }
        }
        else if (vocab.is_array())
        {
            // Unigram: [piece, score] pairs, the id being the position.
            for (std::size_t i = 0; i < vocab.size(); ++i)
            {
                if (!vocab[i].is_array() || vocab[i].empty() || !vocab[i][0].is_string())
                {
                    throw io_error(path, "", "model.vocab: entry " + std::to_string(i) + " is not a [piece, score] pair");
                }
                m_vocab.emplace(vocab[i][0].get<std::string>(), static_cast<std::int64_t>(i));
            }
        }
        else
        {
            throw io_error(path, "", "model.vocab is neither an object nor a list");
        }
        if (m_tokenizer.contains("added_tokens"))
        {
            for (const auto& a : m_tokenizer["added_tokens"])
            {
                if (!a.is_object() || !a.contains("content") || !a["content"].is_string() || !a.contains("id") || !a["id"].is_number_integer())
                {
                    throw io_error(path, "", "added_tokens: an entry lacks a string content or an integer id");
                }
                m_vocab[a["content"].get<std::string>()] = a["id"].get<std::int64_t>();
            }
        }
    }

    inline std::map<std::int64_t, nlohmann::json> tokenizer_files::added_tokens() const
    {
        std::map<std::int64_t, nlohmann::json> out;
        if (m_tokenizer.contains("added_tokens"))
        {
            for (const auto& a : m_tokenizer["added_tokens"])
            {
                out.emplace(a["id"].get<std::int64_t>(), a);
            }
        }
        return out;
    }

    inline void tokenizer_files::truncate(std::int64_t n)
    {
        std::vector<std::string> dropped;
        for (const auto& [token, id] : m_vocab)
        {
            if (id >= n)
            {
                dropped.push_back(token);
            }
        }
        if (dropped.empty())
        {
            return;
        }
        nlohmann::json& model = m_tokenizer["model"];
        if (model.value("type", std::string()) != "BPE")
        {
            throw io_error((std::filesystem::path(m_dir) / "tokenizer.json").string(), "",
                           "lists tokens past the model's " + std::to_string(n) + " embedding rows; removing them is supported for BPE tokenizers only");
        }
        auto& added = m_tokenizer["added_tokens"];
        nlohmann::json kept = nlohmann::json::array();
        for (const auto& a : added)
        {
            if (a["id"].get<std::int64_t>() < n)
            {
                kept.push_back(a);
            }
        }
        added = std::move(kept);
        const std::unordered_set<std::string> gone(dropped.begin(), dropped.end());
        for (const auto& t : dropped)
        {
            model["vocab"].erase(t);
        }
        if (model.contains("merges") && model["merges"].is_array())
        {
            nlohmann::json merges = nlohmann::json::array();
            for (const auto& m : model["merges"])
            {
                // "a b" (older files) or ["a", "b"]
                std::vector<std::string> parts;
                if (m.is_string())
                {
                    const std::string s = m.get<std::string>();
                    const auto space = s.find(' ');
                    parts = {s.substr(0, space), space == std::string::npos ? std::string() : s.substr(space + 1)};
                }
                else
                {
                    for (const auto& p : m)
                    {
                        parts.push_back(p.get<std::string>());
                    }
                }
                bool keep = true;
                for (const auto& p : parts)
                {
                    keep = keep && gone.count(p) == 0;
                }
                if (keep)
                {
                    merges.push_back(m);
                }
            }
            model["merges"] = std::move(merges);
        }
        if (m_has_config && m_config.contains("added_tokens_decoder"))
        {
            auto& decoder = m_config["added_tokens_decoder"];
            nlohmann::ordered_json kept_decoder = nlohmann::ordered_json::object();
            for (const auto& [id, info] : decoder.items())
            {
                if (std::stoll(id) < n)
                {
                    kept_decoder[id] = info;
                }
            }
            decoder = std::move(kept_decoder);
        }
        index();
    }

    inline void tokenizer_files::add(const nlohmann::json& info)
    {
        const std::string content = info.at("content").get<std::string>();
        if (contains(content))
        {
            return;
        }
        // The next id after every id in use (transformers gives len(vocab) for a dense vocabulary).
        std::int64_t id = 0;
        for (const auto& [_, i] : m_vocab)
        {
            id = std::max(id, i + 1);
        }
        nlohmann::json entry = {{"id", id},
                                {"content", content},
                                {"single_word", info.value("single_word", false)},
                                {"lstrip", info.value("lstrip", false)},
                                {"rstrip", info.value("rstrip", false)},
                                {"normalized", info.value("normalized", !info.value("special", false))},
                                {"special", info.value("special", false)}};
        m_tokenizer["added_tokens"].push_back(entry);
        if (m_has_config && m_config.contains("added_tokens_decoder"))
        {
            nlohmann::ordered_json decoder_entry = nlohmann::ordered_json::parse(entry.dump());
            decoder_entry.erase("id");
            m_config["added_tokens_decoder"][std::to_string(id)] = decoder_entry;
        }
        m_vocab[content] = id;
    }

    inline std::vector<std::pair<std::string, std::string>> tokenizer_files::serialize() const
    {
        std::vector<std::pair<std::string, std::string>> out;
        out.emplace_back("tokenizer.json", m_tokenizer.dump(2) + "\n");
        if (m_has_config)
        {
            out.emplace_back("tokenizer_config.json", m_config.dump(2) + "\n");
        }
        return out;
    }
}

#endif
