/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_SEARCH_SOUP_HPP
#define XMERGE_SEARCH_SOUP_HPP

#include <algorithm>
#include <cstddef>
#include <numeric>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "objective.hpp"
#include "workspace.hpp"

/**
 * @file
 * Model soups (Wortsman et al., ICML 2022): averages of fine-tunes of one
 * model, the uniform one and the greedy one chosen on held-out data.
 */

namespace xmerge
{
    /// What a greedy soup tried and kept.
    struct soup_result
    {
        /// Each model alone, in model order (coefficients: one weight per model, one-hot).
        std::vector<evaluated_point> ingredients;
        /// Models by their own score, best first (the first of equals first).
        std::vector<std::size_t> order;
        /// The soups tried, in order (coefficients: one weight per model, 1 / size on members).
        std::vector<evaluated_point> trials;
        /// accepted[i]: trials[i] became the soup.
        std::vector<bool> accepted;
        /// Models in the final soup, in the order they were added.
        std::vector<std::size_t> soup;
        /// The final soup's point (its weights and score).
        evaluated_point final_soup;
    };

    /**
     * The uniform soup (the mean of all models; uniform_soup() is its
     * expression for one tensor), written into `workspace`
     * and scored. coefficients = 1 / K per model.
     */
    inline evaluated_point score_uniform_soup(const std::vector<parameter_list>& models, const std::vector<tensor_ref>& workspace, const objective& f,
                                              const eval_options& options = {});

    /**
     * The greedy soup: score every model alone, sort them by that score
     * (best first), start the soup with the best, then try each next model
     * and keep it when the mean of the soup with it scores at least as well
     * as the soup without it (ties keep it, as in the paper). K + (K - 1)
     * scores in all. Afterwards the workspace holds the final soup.
     */
    inline soup_result greedy_soup(const std::vector<parameter_list>& models, const std::vector<tensor_ref>& workspace, const objective& f,
                                   const eval_options& options = {});

    namespace detail
    {
        inline std::vector<const parameter_list*> pointers_to(const std::vector<parameter_list>& models)
        {
            if (models.empty())
            {
                throw parameter_error("", "models", "needs at least one model");
            }
            std::vector<const parameter_list*> out;
            for (const auto& m : models)
            {
                out.push_back(&m);
            }
            return out;
        }

        /// Weight 1 / |members| on each member, 0 elsewhere.
        inline std::vector<double> uniform_weights(std::size_t models, const std::vector<std::size_t>& members)
        {
            std::vector<double> w(models, 0.0);
            for (std::size_t m : members)
            {
                w[m] = 1.0 / static_cast<double>(members.size());
            }
            return w;
        }
    }

    /********************
     * Implementation   *
     ********************/

    inline evaluated_point score_uniform_soup(const std::vector<parameter_list>& models, const std::vector<tensor_ref>& workspace, const objective& f,
                                              const eval_options& options)
    {
        const detail::candidate_writer writer(workspace, detail::pointers_to(models), options);
        const std::vector<double> w(models.size(), 1.0 / static_cast<double>(models.size()));
        writer.write_mix(w);
        return writer.score_candidate(f, w);
    }

    inline soup_result greedy_soup(const std::vector<parameter_list>& models, const std::vector<tensor_ref>& workspace, const objective& f,
                                   const eval_options& options)
    {
        const detail::candidate_writer writer(workspace, detail::pointers_to(models), options);
        const std::size_t k = models.size();
        soup_result r;
        for (std::size_t m = 0; m < k; ++m)
        {
            const auto w = detail::uniform_weights(k, {m});
            writer.write_mix(w);
            r.ingredients.push_back(writer.score_candidate(f, w));
        }
        r.order.resize(k);
        std::iota(r.order.begin(), r.order.end(), std::size_t{0});
        std::stable_sort(r.order.begin(), r.order.end(),
                         [&](std::size_t x, std::size_t y) { return r.ingredients[x].result.value > r.ingredients[y].result.value; });

        r.soup = {r.order[0]};
        r.final_soup = r.ingredients[r.order[0]];
        for (std::size_t i = 1; i < k; ++i)
        {
            std::vector<std::size_t> members = r.soup;
            members.push_back(r.order[i]);
            const auto w = detail::uniform_weights(k, members);
            writer.write_mix(w);
            r.trials.push_back(writer.score_candidate(f, w));
            const bool keep = r.trials.back().result.value >= r.final_soup.result.value;
            r.accepted.push_back(keep);
            if (keep)
            {
                r.soup = std::move(members);
                r.final_soup = r.trials.back();
            }
        }
        if (r.trials.empty() || !r.accepted.back())
        {
            writer.write_mix(r.final_soup.coefficients);
        }
        return r;
    }
}

#endif
