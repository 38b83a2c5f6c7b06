/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_SEARCH_LINE_SEARCH_HPP
#define XMERGE_SEARCH_LINE_SEARCH_HPP

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "objective.hpp"
#include "workspace.hpp"

/**
 * @file
 * Candidates on the line through two models, (1 - t) from + t to: the
 * interpolation sweep, and the choice of lambda for every merge of the form
 * base + lambda * delta.
 */

namespace xmerge
{
    /// 0, 0.1, ..., 1: the usual grid for lambda.
    inline std::vector<double> default_lambda_grid();

    /**
     * Scores (1 - t) from + t to for every t of `grid` (any finite values,
     * extrapolation included), written into `workspace`; afterwards the
     * workspace holds the best candidate. points[i].coefficients = {grid[i]}.
     *
     * Task arithmetic, TIES, DARE and Breadcrumbs all give base + lambda *
     * delta with a delta that does not depend on lambda, so their lambda is
     * chosen exactly by a line search from the base to the merge evaluated
     * once at lambda = 1: one merge, then one cheap pass per lambda.
     *
     * Throws parameter_error for an empty or non-finite grid and for models
     * that do not match the workspace (see candidate_writer).
     */
    inline search_result line_search(const parameter_list& from, const parameter_list& to, const std::vector<double>& grid,
                                     const std::vector<tensor_ref>& workspace, const objective& f, const eval_options& options = {});

    namespace detail
    {
        inline void check_grid(const std::vector<double>& grid, const char* parameter)
        {
            if (grid.empty())
            {
                throw parameter_error("", parameter, "is empty");
            }
            for (double t : grid)
            {
                if (!std::isfinite(t))
                {
                    throw parameter_error("", parameter, "holds a value that is not finite");
                }
            }
        }
    }

    /********************
     * Implementation   *
     ********************/

    inline std::vector<double> default_lambda_grid()
    {
        std::vector<double> grid;
        for (int i = 0; i <= 10; ++i)
        {
            grid.push_back(i / 10.0);
        }
        return grid;
    }

    inline search_result line_search(const parameter_list& from, const parameter_list& to, const std::vector<double>& grid,
                                     const std::vector<tensor_ref>& workspace, const objective& f, const eval_options& options)
    {
        detail::check_grid(grid, "grid");
        const detail::candidate_writer writer(workspace, {&from, &to}, options);
        search_result r;
        r.points.reserve(grid.size());
        for (double t : grid)
        {
            writer.write_mix({1.0 - t, t});
            r.points.push_back(writer.score_candidate(f, {t}));
        }
        r.best_index = detail::best_of(r.points);
        if (r.best_index + 1 != r.points.size())
        {
            const double t = grid[r.best_index];
            writer.write_mix({1.0 - t, t});
        }
        return r;
    }
}

#endif
