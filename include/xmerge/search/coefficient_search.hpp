/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_SEARCH_COEFFICIENT_SEARCH_HPP
#define XMERGE_SEARCH_COEFFICIENT_SEARCH_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../core/tensor_ref.hpp"
#include "../methods/task_arithmetic.hpp"
#include "../ops/any.hpp"
#include "../ops/input.hpp"
#include "../ops/list.hpp"
#include "line_search.hpp"
#include "objective.hpp"
#include "workspace.hpp"

/**
 * @file
 * Merge coefficients chosen by their score on held-out data: a grid over
 * one coefficient, and random search followed by coordinate refinement over
 * many (one per model, or per model and layer group), within a budget of
 * evaluations.
 */

namespace xmerge
{
    /**
     * Builds the candidate's tensor `tensor` (an index into the workspace)
     * for the given coefficients. The expression's inputs must stay valid
     * while the search runs and may not share memory with the workspace.
     */
    using candidate_builder = std::function<any_expression(std::size_t tensor, const std::vector<double>& coefficients)>;

    /**
     * Scores the candidate build(t, {g}) for every g of `grid` (for
     * instance a TIES or DARE density, which the candidate depends on
     * non-linearly; for lambda prefer line_search, which merges once).
     * points[i].coefficients = {grid[i]}; afterwards the workspace holds the
     * best candidate.
     */
    inline search_result grid_search(const candidate_builder& build, const std::vector<double>& grid, const std::vector<tensor_ref>& workspace,
                                     const objective& f, const eval_options& options = {});

    /// Random search, then coordinate refinement, within a budget of evaluations.
    struct coefficient_search_options
    {
        /// The first point scored; its size is the number of coefficients (at least 1).
        std::vector<double> initial;
        /// Every coefficient stays in [lower, upper].
        double lower = 0.0;
        double upper = 1.0;
        /// Evaluations in all, the initial point included.
        std::size_t budget = 60;
        /// Of which uniform random points in the box (fewer when the budget is smaller).
        std::size_t random_points = 20;
        /// First step of the coordinate refinement; halved after a round without gain.
        double step = 0.1;
        /// The refinement stops when the step falls below this (or the budget is spent).
        double min_step = 0.0125;
        /// Seed of the random points (the same on every platform).
        std::uint64_t seed = 0;
        eval_options eval;
    };

    /**
     * Maximizes the objective over coefficient vectors: scores `initial`,
     * then up to `random_points` uniform random points, then, from the best
     * so far, tries each coordinate +step then -step (clamped to the box)
     * and moves on the first gain; a round over all coordinates without gain
     * halves the step. Every evaluated point is in the result, in order;
     * afterwards the workspace holds the best. Throws parameter_error for an
     * empty initial point, a budget of 0, bounds that are not finite or
     * ordered, or an initial point outside them, and a step that is not positive.
     */
    inline search_result coefficient_search(const candidate_builder& build, const std::vector<tensor_ref>& workspace, const objective& f,
                                            const coefficient_search_options& options);

    /**
     * Task arithmetic with one coefficient per (tensor group, model): the
     * candidate's tensor t is base_t + sum_k c[groups[t] K + k] (x_{k,t} -
     * base_t). With `groups` empty every tensor is in group 0 (one
     * coefficient per model); layer_groups() gives one group per layer.
     * The builder refers to `models` and `base`, which must outlive it.
     */
    inline candidate_builder task_arithmetic_builder(const std::vector<parameter_list>& models, const parameter_list& base,
                                                     std::vector<std::size_t> groups = {});

    /**
     * One group per layer: tensors whose names agree up to the last '.'
     * ("fc1.weight" and "fc1.bias") share a group; groups are numbered in
     * order of first appearance. Writes the group names to `names` when given.
     */
    inline std::vector<std::size_t> layer_groups(const parameter_list& tensors, std::vector<std::string>* names = nullptr);

    namespace detail
    {
        /// Writes build(t, c) for every tensor t, refusing inputs that share memory with the workspace.
        inline void write_built(const candidate_writer& writer, const candidate_builder& build, const std::vector<double>& c);

        /// A uniform double in [0, 1) from 53 bits of the generator (the same on every standard library).
        inline double unit_uniform(std::mt19937_64& gen) { return static_cast<double>(gen() >> 11) * 0x1.0p-53; }

        inline void check_search_options(const coefficient_search_options& o);
    }

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        inline void write_built(const candidate_writer& writer, const candidate_builder& build, const std::vector<double>& c)
        {
            std::vector<any_expression> exprs;
            exprs.reserve(writer.tensors());
            for (std::size_t t = 0; t < writer.tensors(); ++t)
            {
                exprs.push_back(build(t, c));
                exprs.back().for_each_input([&](const const_tensor_ref& in)
                {
                    for (const auto& w : writer.workspace())
                    {
                        if (overlaps(in, w))
                        {
                            throw layout_error(w.name(), "workspace", "a candidate reads '" + in.name() + "', which shares memory with the workspace");
                        }
                    }
                });
            }
            writer.write(exprs);
        }

        inline void check_search_options(const coefficient_search_options& o)
        {
            if (o.initial.empty())
            {
                throw parameter_error("", "initial", "needs at least one coefficient");
            }
            if (o.budget == 0)
            {
                throw parameter_error("", "budget", "must be at least 1");
            }
            if (!(std::isfinite(o.lower) && std::isfinite(o.upper) && o.lower <= o.upper))
            {
                throw parameter_error("", "lower", "bounds must be finite with lower <= upper, got [" + std::to_string(o.lower) + ", " + std::to_string(o.upper) + "]");
            }
            for (double c : o.initial)
            {
                if (!(c >= o.lower && c <= o.upper))
                {
                    throw parameter_error("", "initial", "coefficient " + std::to_string(c) + " lies outside [" + std::to_string(o.lower) + ", "
                                                             + std::to_string(o.upper) + "]");
                }
            }
            if (!(std::isfinite(o.step) && o.step > 0.0) || !(o.min_step > 0.0))
            {
                throw parameter_error("", "step", "step and min_step must be positive");
            }
        }
    }

    inline search_result grid_search(const candidate_builder& build, const std::vector<double>& grid, const std::vector<tensor_ref>& workspace,
                                     const objective& f, const eval_options& options)
    {
        detail::check_grid(grid, "grid");
        const detail::candidate_writer writer(workspace, {}, options);
        search_result r;
        for (double g : grid)
        {
            detail::write_built(writer, build, {g});
            r.points.push_back(writer.score_candidate(f, {g}));
        }
        r.best_index = detail::best_of(r.points);
        if (r.best_index + 1 != r.points.size())
        {
            detail::write_built(writer, build, r.best().coefficients);
        }
        return r;
    }

    inline search_result coefficient_search(const candidate_builder& build, const std::vector<tensor_ref>& workspace, const objective& f,
                                            const coefficient_search_options& o)
    {
        detail::check_search_options(o);
        const detail::candidate_writer writer(workspace, {}, o.eval);
        search_result r;
        auto evaluate_point = [&](const std::vector<double>& c)
        {
            detail::write_built(writer, build, c);
            r.points.push_back(writer.score_candidate(f, c));
            if (r.points.back().result.value > r.points[r.best_index].result.value)
            {
                r.best_index = r.points.size() - 1;
            }
        };
        evaluate_point(o.initial);

        std::mt19937_64 gen(o.seed);
        const std::size_t dims = o.initial.size();
        for (std::size_t i = 0; i < o.random_points && r.points.size() < o.budget; ++i)
        {
            std::vector<double> c(dims);
            for (double& x : c)
            {
                x = o.lower + (o.upper - o.lower) * detail::unit_uniform(gen);
            }
            evaluate_point(c);
        }

        for (double step = o.step; step >= o.min_step && r.points.size() < o.budget; step /= 2.0)
        {
            bool gained = true;
            while (gained && r.points.size() < o.budget)
            {
                gained = false;
                for (std::size_t d = 0; d < dims && r.points.size() < o.budget; ++d)
                {
                    for (double direction : {1.0, -1.0})
                    {
                        std::vector<double> c = r.best().coefficients;
                        c[d] = std::clamp(c[d] + direction * step, o.lower, o.upper);
                        if (c[d] == r.best().coefficients[d] || r.points.size() >= o.budget)
                        {
                            continue;
                        }
                        const std::size_t before = r.best_index;
                        evaluate_point(c);
                        if (r.best_index != before)
                        {
                            gained = true;
                            break;
                        }
                    }
                }
            }
        }
        if (r.best_index + 1 != r.points.size())
        {
            detail::write_built(writer, build, r.best().coefficients);
        }
        return r;
    }

    inline candidate_builder task_arithmetic_builder(const std::vector<parameter_list>& models, const parameter_list& base, std::vector<std::size_t> groups)
    {
        if (models.empty())
        {
            throw parameter_error("", "models", "task arithmetic needs at least one model");
        }
        for (std::size_t k = 0; k < models.size(); ++k)
        {
            if (models[k].size() != base.size())
            {
                throw parameter_error("", "models", "model " + std::to_string(k) + " has " + std::to_string(models[k].size()) + " tensors but the base has "
                                                        + std::to_string(base.size()));
            }
        }
        if (groups.empty())
        {
            groups.assign(base.size(), 0);
        }
        if (groups.size() != base.size())
        {
            throw parameter_error("", "groups", "expected one group per tensor (" + std::to_string(base.size()) + "), got " + std::to_string(groups.size()));
        }
        const std::size_t group_count = *std::max_element(groups.begin(), groups.end()) + 1;
        return [&models, &base, groups = std::move(groups), group_count](std::size_t t, const std::vector<double>& c) -> any_expression
        {
            const std::size_t k = models.size();
            if (c.size() != group_count * k)
            {
                throw parameter_error(base[t].name(), "coefficients", "expected " + std::to_string(group_count * k) + " (groups x models), got "
                                                                          + std::to_string(c.size()));
            }
            expression_list<input_node> xs;
            for (const auto& m : models)
            {
                xs.push_back(input_node(m[t]));
            }
            const auto first = c.begin() + static_cast<std::ptrdiff_t>(groups[t] * k);
            return task_arithmetic(xs, input_node(base[t]), std::vector<double>(first, first + static_cast<std::ptrdiff_t>(k)));
        };
    }

    inline std::vector<std::size_t> layer_groups(const parameter_list& tensors, std::vector<std::string>* names)
    {
        std::map<std::string, std::size_t> index;
        std::vector<std::size_t> groups;
        if (names)
        {
            names->clear();
        }
        for (const auto& t : tensors)
        {
            const std::string& name = t.name();
            const std::size_t dot = name.rfind('.');
            const std::string prefix = dot == std::string::npos ? name : name.substr(0, dot);
            const auto it = index.emplace(prefix, index.size()).first;
            if (names && it->second == names->size())
            {
                names->push_back(prefix);
            }
            groups.push_back(it->second);
        }
        return groups;
    }
}

#endif
