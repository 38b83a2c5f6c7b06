/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_RECIPE_OUTPUT_FILES_HPP
#define XMERGE_RECIPE_OUTPUT_FILES_HPP

#include <algorithm>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "../core/dtype.hpp"
#include "../io/companion_files.hpp"
#include "../io/model_config.hpp"
#include "../model/architecture.hpp"
#include "../model/merge_plan.hpp"
#include "../model/merge_spec.hpp"
#include "bind.hpp"
#include "model_card.hpp"
#include "recipe.hpp"

/**
 * @file
 * The files of a recipe merge's output besides its tensors, as mergekit
 * writes them:
 *
 * - the reference model's other top-level files (tokenizer, generation
 *   settings, processor configs), tokenizer files left out on request;
 * - `config.json` with the output dtype (`torch_dtype` / `dtype`), the layer
 *   count of a layer-stacking merge, the vocabulary size of a merged
 *   vocabulary, and `tie_word_embeddings: false` when the output has an
 *   output head the tied reference lacked;
 * - the merged tokenizer, when the recipe builds one;
 * - `README.md`, a model card with the method, the models and the recipe;
 * - `mergekit_config.yml`, the recipe.
 */

namespace xmerge
{
    struct output_file_options
    {
        /// Copy the reference's tokenizer files (mergekit's --copy-tokenizer).
        bool copy_tokenizer = true;
        /// Write README.md (mergekit's --write-model-card).
        bool model_card = true;
        /// dtype the merged tensors are written in, when one was chosen (recipe or command line).
        std::optional<dtype> out_dtype;
        /// The recipe as the user wrote it.
        std::string recipe_text;
        /// Title of the model card (the output directory's name).
        std::string name;
    };

    /**
     * Adds the output's non-tensor files to options.files (copied) and
     * options.file_contents (written). Returns notes for the user.
     */
    inline std::vector<std::string> add_output_files(const recipe& r, const recipe_merge& bound, const merge_plan& plan, const output_file_options& o,
                                                     merge_options& options);

    /********************
     * Implementation   *
     ********************/

    inline std::vector<std::string> add_output_files(const recipe& r, const recipe_merge& bound, const merge_plan& plan, const output_file_options& o,
                                                     merge_options& options)
    {
        namespace fs = std::filesystem;
        std::vector<std::string> notes;
        const model& reference = bound.reference();
        const merged_vocabulary* vocabulary = bound.vocabulary();
        for (const auto& name : io::companion_files(reference.name()))
        {
            const bool tokenizer = io::is_tokenizer_file(name);
            if (name == "config.json" || (name == "README.md" && o.model_card) || (tokenizer && (!o.copy_tokenizer || vocabulary)))
            {
                continue;
            }
            options.files.emplace_back((fs::path(reference.name()) / name).string(), name);
        }

        const fs::path config_path = fs::path(reference.name()) / "config.json";
        if (fs::is_directory(reference.name()) && fs::is_regular_file(config_path))
        {
            io::model_config config = io::model_config::open(config_path.string());
            if (o.out_dtype)
            {
                config.set_dtype(*o.out_dtype);
            }
            if (!bound.spec().slices.empty())
            {
                config.set_layer_count(plan.layers);
            }
            if (bound.spec().vocabulary)
            {
                config.set_vocab_size(bound.spec().vocabulary->rows);
            }
            for (const auto& t : plan.tensors)
            {
                if (!tied_embeddings(t.name).empty() && reference.find(t.name) == nullptr && config.tied_embeddings().value_or(false))
                {
                    config.set_tied_embeddings(false);
                    notes.push_back("config.json: tie_word_embeddings set to false; the output has its own '" + t.name + "' (from models that are not tied)");
                }
            }
            options.file_contents.emplace_back("config.json", config.dump());
        }

        if (vocabulary)
        {
            for (auto& [name, contents] : vocabulary->tokenizer.serialize())
            {
                options.file_contents.emplace_back(name, contents);
            }
            // The tokenizer's other files; a slow tokenizer's vocabulary would no longer match.
            const fs::path dir(vocabulary->tokenizer_directory);
            for (const char* name : {"special_tokens_map.json", "chat_template.jinja", "chat_template.json"})
            {
                if (fs::is_regular_file(dir / name))
                {
                    options.files.emplace_back((dir / name).string(), name);
                }
            }
            for (const auto& note : vocabulary->notes)
            {
                notes.push_back(note);
            }
        }

        if (o.model_card)
        {
            options.file_contents.emplace_back("README.md", model_card(r, o.recipe_text, o.name));
        }
        options.file_contents.emplace_back("mergekit_config.yml", o.recipe_text);
        return notes;
    }
}

#endif
