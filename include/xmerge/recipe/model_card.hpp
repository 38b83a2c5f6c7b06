/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_RECIPE_MODEL_CARD_HPP
#define XMERGE_RECIPE_MODEL_CARD_HPP

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "recipe.hpp"

/**
 * @file
 * The model card (README.md) of a merged model: Hugging Face metadata
 * (the Hub models it was made from, tags), the method, the base, the models
 * and the recipe, as mergekit writes one.
 */

namespace xmerge
{
    /// README.md for a merge made from recipe `r`, whose text is `recipe_text`, titled `name`.
    inline std::string model_card(const recipe& r, const std::string& recipe_text, const std::string& name);

    /// Whether a model reference looks like a Hugging Face Hub id ("org/name") rather than a local path.
    inline bool is_hub_id(const std::string& reference);

    /********************
     * Implementation   *
     ********************/

    inline bool is_hub_id(const std::string& reference)
    {
        return !reference.empty() && reference[0] != '/' && reference[0] != '.' && reference[0] != '~'
               && std::count(reference.begin(), reference.end(), '/') == 1 && !std::filesystem::exists(reference);
    }

    inline std::string model_card(const recipe& r, const std::string& recipe_text, const std::string& name)
    {
        std::vector<std::string> models;
        auto add = [&](const std::string& m)
        {
            if (!m.empty() && std::find(models.begin(), models.end(), m) == models.end())
            {
                models.push_back(m);
            }
        };
        add(r.base_model);
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
        std::string card = "---\nbase_model:";
        bool any_hub = false;
        for (const auto& m : models)
        {
            if (is_hub_id(m))
            {
                card += "\n- " + m;
                any_hub = true;
            }
        }
        card += any_hub ? "\n" : " []\n";
        card += "library_name: transformers\ntags:\n- xmerge\n- mergekit\n- merge\n---\n";
        card += "# " + (name.empty() ? std::string("merged model") : name) + "\n\n";
        card += "This model is a merge of pre-trained language models, made with xmerge from a mergekit recipe.\n\n";
        card += "## Method\n\n`" + r.merge_method + "`";
        card += r.base_model.empty() ? std::string(".") : ", with `" + r.base_model + "` as the base model.";
        card += r.slices.empty() ? "\n" : " The output layers are stacked from layer ranges of the models (slices).\n";
        card += "\n## Models\n\n";
        for (const auto& m : models)
        {
            if (m != r.base_model)
            {
                card += "- `" + m + "`\n";
            }
        }
        card += "\n## Recipe\n\n```yaml\n" + recipe_text;
        if (!recipe_text.empty() && recipe_text.back() != '\n')
        {
            card += "\n";
        }
        card += "```\n";
        return card;
    }
}

#endif
