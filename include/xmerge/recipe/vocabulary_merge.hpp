/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_RECIPE_VOCABULARY_MERGE_HPP
#define XMERGE_RECIPE_VOCABULARY_MERGE_HPP

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../io/model_config.hpp"
#include "../io/tokenizer.hpp"
#include "../model/model.hpp"
#include "../model/vocabulary.hpp"
#include "recipe.hpp"

/**
 * @file
 * The output tokenizer of a recipe with `tokenizer_source` (or `tokenizer`)
 * and the layout of every model's token rows on it, as mergekit builds them:
 *
 * - `base`: the base model's tokenizer (the first model's without a base),
 *   without tokens past its embedding rows;
 * - a model path: that model's tokenizer;
 * - `union`: the base's tokenizer, then the added tokens of the other
 *   models in the recipe's order (first seen wins, tokens past a model's
 *   embedding rows skipped). Supported when every model's vocabulary is the
 *   base's plus added tokens, as for a fine-tune that added chat tokens;
 *   vocabularies that differ otherwise are refused.
 *
 * A model without a tokenizer.json is taken to share the base's vocabulary,
 * as mergekit does. A model's row count is its config.json `vocab_size`
 * (else its tokenizer's size).
 */

namespace xmerge
{
    /// The output tokenizer and where each model's tokens sit in it.
    struct merged_vocabulary
    {
        io::tokenizer_files tokenizer;
        std::shared_ptr<vocabulary_alignment> alignment;
        /// Directory whose other tokenizer files (special_tokens_map.json, ...) go with the output.
        std::string tokenizer_directory;
        /// Things the user may want to know (models assumed to share the base's vocabulary).
        std::vector<std::string> notes;
    };

    /**
     * Builds the output vocabulary.
     *
     * `models` are the recipe's models in its order (the base where it is
     * listed, or last when it is not); `base` is the recipe's base (null
     * without one); `open` opens another checkpoint by path (a tokenizer
     * source or a token rule's model). Throws parameter_error or io_error
     * naming the model and the token for what is not supported.
     */
    inline merged_vocabulary merge_vocabularies(const recipe_tokenizer& config, const model* base, const std::vector<const model*>& models,
                                                const std::function<const model*(const std::string&, const std::string&)>& open);

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        // Embedding rows of a checkpoint: config.json's vocab_size, if it says.
        inline std::optional<std::size_t> configured_rows(const model& m)
        {
            const auto path = std::filesystem::path(m.directory()) / "config.json";
            if (m.directory().empty() || !std::filesystem::is_regular_file(path))
            {
                return std::nullopt;
            }
            return io::model_config::open(path.string()).vocab_size();
        }
    }

    inline merged_vocabulary merge_vocabularies(const recipe_tokenizer& config, const model* base, const std::vector<const model*>& models,
                                                const std::function<const model*(const std::string&, const std::string&)>& open)
    {
        if (models.empty())
        {
            throw parameter_error("", "tokenizer_source", "no models");
        }
        merged_vocabulary out;
        const model* reference = base ? base : models.front();
        if (reference->directory().empty() || !io::tokenizer_files::present(reference->directory()))
        {
            throw io_error(reference->directory().empty() ? reference->name() : reference->directory() + "/tokenizer.json", "",
                           "the base model needs a tokenizer.json to build the merged vocabulary (tokenizer_source)");
        }

        // Each model's vocabulary, limited to its embedding rows.
        struct vocabulary
        {
            std::optional<io::tokenizer_files> tokenizer;  // empty: the base's
            std::size_t rows = 0;
        };
        std::map<const model*, vocabulary> vocab;
        auto load = [&](const model* m)
        {
            if (vocab.count(m))
            {
                return;
            }
            vocabulary v;
            if (!m->directory().empty() && io::tokenizer_files::present(m->directory()))
            {
                v.tokenizer = io::tokenizer_files::open(m->directory());
            }
            else if (m != reference)
            {
                out.notes.push_back("model '" + m->name() + "' has no tokenizer.json; its vocabulary is taken to be the base's, as mergekit does");
            }
            const auto rows = detail::configured_rows(*m);
            v.rows = rows ? *rows : (v.tokenizer ? v.tokenizer->size() : 0);
            vocab.emplace(m, std::move(v));
        };
        load(reference);
        vocabulary& ref_vocab = vocab.at(reference);
        // The base's tokens past its embedding rows are padding entries it never uses.
        ref_vocab.tokenizer->truncate(static_cast<std::int64_t>(ref_vocab.rows));
        for (const model* m : models)
        {
            load(m);
            if (!vocab.at(m).tokenizer)
            {
                vocab.at(m).rows = vocab.at(m).rows ? vocab.at(m).rows : ref_vocab.rows;
            }
        }
        auto tokens_of = [&](const model* m) -> const io::tokenizer_files& { return vocab.at(m).tokenizer ? *vocab.at(m).tokenizer : *ref_vocab.tokenizer; };

        // The output tokenizer.
        if (config.source == "base")
        {
            out.tokenizer = *ref_vocab.tokenizer;
            out.tokenizer_directory = reference->directory();
        }
        else if (config.source == "union")
        {
            out.tokenizer = *ref_vocab.tokenizer;
            out.tokenizer_directory = reference->directory();
            for (const model* m : models)
            {
                const auto& v = vocab.at(m);
                if (m == reference || !v.tokenizer)
                {
                    continue;
                }
                const auto added = v.tokenizer->added_tokens();
                for (const auto& [token, id] : v.tokenizer->vocabulary())
                {
                    if (id < static_cast<std::int64_t>(v.rows) && !out.tokenizer.contains(token) && added.count(id) == 0)
                    {
                        throw parameter_error("", "tokenizer_source",
                                              "union: model '" + m->name() + "' has token '" + token + "' (id " + std::to_string(id)
                                                  + ") in its own vocabulary, which the base lacks; merging vocabularies is supported when every model has the base's "
                                                    "vocabulary plus added tokens; use tokenizer_source: base or a model");
                    }
                }
            }
            // Added tokens in the recipe's order of the models, each model's by id; the first seen wins.
            for (const model* m : models)
            {
                const auto& v = vocab.at(m);
                if (m == reference || !v.tokenizer)
                {
                    continue;
                }
                for (const auto& [id, info] : v.tokenizer->added_tokens())
                {
                    if (id < static_cast<std::int64_t>(v.rows))
                    {
                        out.tokenizer.add(info);
                    }
                }
            }
        }
        else
        {
            const model* source = open(config.source, "tokenizer_source");
            if (source->directory().empty() || !io::tokenizer_files::present(source->directory()))
            {
                throw io_error(source->name(), "", "has no tokenizer.json to use as tokenizer_source");
            }
            out.tokenizer = io::tokenizer_files::open(source->directory());
            out.tokenizer_directory = source->directory();
        }
        for (const auto& [token, _] : config.tokens)
        {
            out.tokenizer.add({{"content", token}});
        }

        // The output token ids must be 0..n-1: each is a row.
        auto a = std::make_shared<vocabulary_alignment>();
        a->tokens = out.tokenizer.size();
        std::vector<const std::string*> by_id(a->tokens, nullptr);
        for (const auto& [token, id] : out.tokenizer.vocabulary())
        {
            if (id < 0 || static_cast<std::size_t>(id) >= a->tokens || by_id[static_cast<std::size_t>(id)] != nullptr)
            {
                throw io_error(out.tokenizer_directory + "/tokenizer.json", "",
                               "token ids are not 0.." + std::to_string(a->tokens - 1) + " (token '" + token + "' has id " + std::to_string(id)
                                   + "); such vocabularies cannot be laid out on embedding rows");
            }
            by_id[static_cast<std::size_t>(id)] = &token;
        }
        a->rows = a->tokens;
        if (config.pad_to_multiple_of > 0 && a->rows % config.pad_to_multiple_of != 0)
        {
            a->rows += config.pad_to_multiple_of - a->rows % config.pad_to_multiple_of;
        }
        a->base = base;
        a->order = models;
        auto place = [&](const model* m)
        {
            load(m);
            const auto& v = vocab.at(m);
            const auto& tokens = tokens_of(m).vocabulary();
            std::vector<std::int64_t> rows(a->tokens, -1);
            for (std::size_t id = 0; id < a->tokens; ++id)
            {
                const auto it = tokens.find(*by_id[id]);
                if (it != tokens.end() && it->second < static_cast<std::int64_t>(v.rows))
                {
                    rows[id] = it->second;
                }
            }
            a->rows_of[m] = std::move(rows);
        };
        for (const model* m : models)
        {
            place(m);
        }
        for (const auto& [token, rule] : config.tokens)
        {
            token_fill f;
            f.force = rule.force;
            if (rule.source == recipe_token::kind::zero)
            {
                f.what = token_fill::kind::zero;
            }
            else
            {
                f.source = open(rule.model, "source of token '" + token + "'");
                if (!a->rows_of.count(f.source))
                {
                    throw parameter_error("", "tokenizer.tokens", "token '" + token + "' is to take its row from '" + rule.model + "', which is not a model of the merge");
                }
                if (rule.source == recipe_token::kind::model)
                {
                    f.what = token_fill::kind::model;
                }
                else
                {
                    f.what = token_fill::kind::row;
                    if (rule.token_id)
                    {
                        f.row = *rule.token_id;
                    }
                    else
                    {
                        const auto& tokens = tokens_of(f.source).vocabulary();
                        const auto it = tokens.find(rule.token);
                        if (it == tokens.end())
                        {
                            throw parameter_error("", "tokenizer.tokens", "token '" + rule.token + "' is not in the vocabulary of '" + rule.model + "'");
                        }
                        f.row = it->second;
                    }
                }
            }
            a->configured[out.tokenizer.vocabulary().at(token)] = f;
        }
        out.alignment = std::move(a);
        return out;
    }
}

#endif
