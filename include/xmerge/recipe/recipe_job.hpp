/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_RECIPE_RECIPE_JOB_HPP
#define XMERGE_RECIPE_RECIPE_JOB_HPP

#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../methods/registry.hpp"
#include "../model/merge.hpp"
#include "bind.hpp"
#include "output_files.hpp"
#include "recipe.hpp"

/**
 * @file
 * A recipe file merged into a checkpoint directory, as `xmerge run` (and
 * mergekit-yaml) does it: parse, open the models, build the vocabulary when
 * asked, plan every tensor, then write the tensors with the config,
 * tokenizer, model card and recipe beside them.
 */

namespace xmerge
{
    struct recipe_job_options
    {
        /// Threads, seed, tensor rules, strictness, output sharding; files and progress are filled in here.
        merge_options merge;
        /// Overrides the recipe's dtypes for the merged tensors.
        std::optional<dtype> out_dtype;
        bind_options bind;
        /// Carry the reference model's config, tokenizer and other files (else only the tensors and the recipe).
        bool copy_files = true;
        bool copy_tokenizer = true;
        bool model_card = true;
    };

    /**
     * A recipe checked and planned, ready to run. Everything that can be
     * refused (the recipe, the models, the parameters, the shapes) is
     * refused by the constructor, before anything is written.
     */
    class recipe_job
    {
    public:
        /// Plans merging the recipe at `recipe_path` into `out_dir` (not touched until run()).
        recipe_job(const std::string& recipe_path, const std::string& out_dir, const method_registry& registry, recipe_job_options options = {});

        const recipe& parsed() const noexcept { return m_recipe; }
        const merge_plan& plan() const noexcept { return m_plan; }
        /// How run() merges: threads, output options, and the files written beside the tensors.
        const merge_options& options() const noexcept { return m_options.merge; }
        /// Settings the method does not use, ignored (refused instead with merge_options::strict).
        const std::vector<std::string>& warnings() const noexcept { return m_plan.warnings; }
        /// Things the user may want to know: recipe keys without effect, copied tensors, vocabulary assumptions.
        const std::vector<std::string>& notes() const noexcept { return m_notes; }

        /// Writes the merge (atomically, see run_merge); `progress` is called after each tensor.
        merge_summary run(std::function<void(const merge_progress&)> progress = {});

    private:
        const method_registry& m_registry;
        std::string m_out_dir;
        recipe_job_options m_options;
        std::string m_recipe_text;
        recipe m_recipe;
        std::unique_ptr<recipe_merge> m_bound;
        merge_plan m_plan;
        std::vector<std::string> m_notes;
    };

    /********************
     * Implementation   *
     ********************/

    inline recipe_job::recipe_job(const std::string& recipe_path, const std::string& out_dir, const method_registry& registry, recipe_job_options options)
        : m_registry(registry)
        , m_out_dir(out_dir)
        , m_options(std::move(options))
    {
        m_recipe = load_recipe(recipe_path);
        {
            std::ifstream in(recipe_path, std::ios::binary);
            std::stringstream text;
            text << in.rdbuf();
            m_recipe_text = text.str();
        }
        for (const auto& note : m_recipe.ignored)
        {
            m_notes.push_back("ignoring " + note);
        }
        m_bound = std::make_unique<recipe_merge>(m_recipe, registry, m_options.bind);
        merge_options& merge = m_options.merge;
        merge.out_dtype = m_options.out_dtype ? m_options.out_dtype : m_bound->out_dtype();
        if (merge.output.metadata.empty())
        {
            merge.output.metadata = {{"format", "pt"}, {"merge_method", m_recipe.merge_method}};
        }
        m_plan = plan_merge(m_bound->spec(), registry, merge);
        for (const auto& note : m_plan.notes)
        {
            m_notes.push_back(note);
        }
        if (m_options.copy_files)
        {
            output_file_options files;
            files.copy_tokenizer = m_options.copy_tokenizer;
            files.model_card = m_options.model_card;
            files.out_dtype = merge.out_dtype;
            files.recipe_text = m_recipe_text;
            const std::filesystem::path out(out_dir);
            files.name = out.has_filename() ? out.filename().string() : out.parent_path().filename().string();
            for (const auto& note : add_output_files(m_recipe, *m_bound, m_plan, files, merge))
            {
                m_notes.push_back(note);
            }
        }
        else
        {
            merge.file_contents.emplace_back("mergekit_config.yml", m_recipe_text);
        }
    }

    inline merge_summary recipe_job::run(std::function<void(const merge_progress&)> progress)
    {
        merge_options options = m_options.merge;
        options.progress = std::move(progress);
        return run_merge(m_plan, m_registry, m_out_dir, options);
    }
}

#endif
