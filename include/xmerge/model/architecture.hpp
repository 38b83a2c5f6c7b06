/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MODEL_ARCHITECTURE_HPP
#define XMERGE_MODEL_ARCHITECTURE_HPP

#include <string>
#include <vector>

/**
 * @file
 * The few architecture facts a whole-model merge needs beyond tensor names,
 * taken from mergekit's architecture tables: which tensors are indexed by
 * token (input embeddings and output heads, whose rows follow the
 * tokenizer), and which input embedding an output head is tied to when a
 * checkpoint leaves the head out (`tie_word_embeddings`).
 *
 * Names match as dotted suffixes, so a model nested under a prefix
 * (`language_model.lm_head.weight` in a LLaVA checkpoint) is recognised.
 */

namespace xmerge
{
    /// Whether `name` is a tensor with one row per token (vocabulary axis 0).
    inline bool is_vocabulary_tensor(const std::string& name);

    /**
     * The input embeddings an output head `name` shares its weights with
     * when the checkpoint is tied, most specific first, under the same
     * prefix as `name`; empty when `name` is not an output head.
     */
    inline std::vector<std::string> tied_embeddings(const std::string& name);

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        // `name` is `suffix`, or ends with "." + suffix; the part before is returned in prefix.
        inline bool dotted_suffix(const std::string& name, const std::string& suffix, std::string& prefix)
        {
            if (name == suffix)
            {
                prefix.clear();
                return true;
            }
            if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0
                && name[name.size() - suffix.size() - 1] == '.')
            {
                prefix = name.substr(0, name.size() - suffix.size());
                return true;
            }
            return false;
        }

        struct tied_head
        {
            const char* head;
            std::vector<const char*> embeddings;
        };

        inline const std::vector<tied_head>& tied_heads()
        {
            // Output heads and the input embeddings they are tied to (mergekit's
            // `tied_names`), relative to the head's prefix: LLaVA's legacy
            // `language_model.lm_head.weight` ties to `language_model.model.embed_tokens.weight`.
            static const std::vector<tied_head> table = {
                {"lm_head.weight",
                 {"model.embed_tokens.weight", "model.language_model.embed_tokens.weight", "transformer.wte.weight",
                  "wte.weight", "backbone.embeddings.weight", "shared.weight", "embed_tokens.weight"}},
                {"output.weight", {"model.tok_embeddings.weight"}},
                {"cls.predictions.decoder.weight", {"bert.embeddings.word_embeddings.weight"}},
                {"lm_head.decoder.weight", {"roberta.embeddings.word_embeddings.weight"}},
                {"vocab_projector.weight", {"distilbert.embeddings.word_embeddings.weight"}},
                {"embed_out.weight", {"gpt_neox.embed_in.weight"}},
            };
            return table;
        }
    }

    inline bool is_vocabulary_tensor(const std::string& name)
    {
        // Tensors mergekit's tables give a vocabulary axis, by their last components.
        static const char* const names[] = {
            "embed_tokens.weight", "lm_head.weight", "lm_head.bias", "wte.weight", "tok_embeddings.weight", "output.weight",
            "word_embeddings.weight", "embed_in.weight", "embed_out.weight", "shared.weight", "backbone.embeddings.weight",
            "cls.predictions.decoder.weight", "cls.predictions.bias", "lm_head.decoder.weight", "lm_head.linear.weight", "lm_head.linear.bias",
            "vocab_projector.weight", "vocab_projector.bias", "transformer.output_layer.weight"};
        std::string prefix;
        for (const char* n : names)
        {
            if (detail::dotted_suffix(name, n, prefix))
            {
                return true;
            }
        }
        return false;
    }

    inline std::vector<std::string> tied_embeddings(const std::string& name)
    {
        std::vector<std::string> out;
        std::string prefix;
        for (const auto& h : detail::tied_heads())
        {
            if (detail::dotted_suffix(name, h.head, prefix))
            {
                for (const char* e : h.embeddings)
                {
                    out.push_back(prefix + e);
                }
                break;
            }
        }
        return out;
    }
}

#endif
