/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_SEARCH_INTERPOLATION_HPP
#define XMERGE_SEARCH_INTERPOLATION_HPP

#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "line_search.hpp"
#include "objective.hpp"

/**
 * @file
 * The straight line between two models (linear mode connectivity): scores
 * along it and the barrier, the largest excess of the curve over the chord
 * joining its ends.
 */

namespace xmerge
{
    /// Whether larger values of a curve are better (accuracy, a negated loss) or worse (a loss).
    enum class curve_orientation
    {
        higher_is_better,
        lower_is_better
    };

    /**
     * The barrier of a curve v(a) sampled at strictly increasing `alphas`:
     * with the chord c(a) = v(a_first) + (a - a_first) / (a_last - a_first)
     * (v(a_last) - v(a_first)),
     *
     *     lower_is_better:   max_a [v(a) - c(a)]   (for a loss L and a in [0, 1]:
     *                                                max_a [L(a) - ((1 - a) L(0) + a L(1))])
     *     higher_is_better:  max_a [c(a) - v(a)]
     *
     * so a positive barrier is always a bump against the better direction;
     * it is at least 0 (the ends lie on the chord). Throws parameter_error
     * for fewer than two points, counts that differ, alphas not strictly
     * increasing or values that are not finite.
     */
    inline double barrier(const std::vector<double>& alphas, const std::vector<double>& values,
                          curve_orientation orientation = curve_orientation::higher_is_better);

    /// How an interpolation sweep samples the line.
    struct interpolation_options
    {
        /// Evenly spaced points on [0, 1], ends included (when `alphas` is empty); at least 2.
        std::size_t points = 11;
        /// The interpolation factors to use instead, strictly increasing.
        std::vector<double> alphas;
        eval_options eval;
    };

    /// The scores along the line and the barrier of their values.
    struct interpolation_result
    {
        /// points[i].coefficients = {alpha_i}; alpha = 0 is model a, 1 is model b.
        std::vector<evaluated_point> points;
        /// barrier() of the values (higher is better).
        double barrier = 0.0;

        std::vector<double> alphas() const;
        std::vector<double> values() const;
        /// Entry i of every point's details (a per-task score or a metric), along the line.
        std::vector<double> detail(std::size_t i) const;
    };

    /**
     * Scores (1 - alpha) a + alpha b along [0, 1] (11 points by default),
     * written into `workspace`, and the barrier of the score. Afterwards
     * the workspace holds the best candidate. For the barrier of a metric
     * the objective returns in its details (a loss next to an accuracy),
     * call barrier(r.alphas(), r.detail(i), orientation).
     */
    inline interpolation_result interpolation_sweep(const parameter_list& a, const parameter_list& b, const std::vector<tensor_ref>& workspace,
                                                    const objective& f, const interpolation_options& options = {});

    namespace detail
    {
        inline void check_alphas(const std::vector<double>& alphas)
        {
            detail::check_grid(alphas, "alphas");
            for (std::size_t i = 1; i < alphas.size(); ++i)
            {
                if (!(alphas[i] > alphas[i - 1]))
                {
                    throw parameter_error("", "alphas", "must be strictly increasing");
                }
            }
        }
    }

    /********************
     * Implementation   *
     ********************/

    inline double barrier(const std::vector<double>& alphas, const std::vector<double>& values, curve_orientation orientation)
    {
        if (alphas.size() < 2 || alphas.size() != values.size())
        {
            throw parameter_error("", "alphas", "a barrier needs at least two points and one value per point, got " + std::to_string(alphas.size())
                                                    + " points and " + std::to_string(values.size()) + " values");
        }
        detail::check_alphas(alphas);
        detail::check_grid(values, "values");
        const double a0 = alphas.front(), a1 = alphas.back();
        const double v0 = values.front(), v1 = values.back();
        const double sign = orientation == curve_orientation::lower_is_better ? 1.0 : -1.0;
        double worst = 0.0;
        for (std::size_t i = 0; i < alphas.size(); ++i)
        {
            const double chord = v0 + (alphas[i] - a0) / (a1 - a0) * (v1 - v0);
            worst = std::max(worst, sign * (values[i] - chord));
        }
        return worst;
    }

    inline std::vector<double> interpolation_result::alphas() const
    {
        std::vector<double> out;
        for (const auto& p : points)
        {
            out.push_back(p.coefficients.at(0));
        }
        return out;
    }

    inline std::vector<double> interpolation_result::values() const
    {
        std::vector<double> out;
        for (const auto& p : points)
        {
            out.push_back(p.result.value);
        }
        return out;
    }

    inline std::vector<double> interpolation_result::detail(std::size_t i) const
    {
        std::vector<double> out;
        for (const auto& p : points)
        {
            if (i >= p.result.details.size())
            {
                throw parameter_error("", "detail", "the objective returned " + std::to_string(p.result.details.size()) + " details, asked for entry "
                                                        + std::to_string(i));
            }
            out.push_back(p.result.details[i]);
        }
        return out;
    }

    inline interpolation_result interpolation_sweep(const parameter_list& a, const parameter_list& b, const std::vector<tensor_ref>& workspace,
                                                    const objective& f, const interpolation_options& options)
    {
        std::vector<double> alphas = options.alphas;
        if (alphas.empty())
        {
            if (options.points < 2)
            {
                throw parameter_error("", "points", "an interpolation sweep needs at least 2 points, got " + std::to_string(options.points));
            }
            for (std::size_t i = 0; i < options.points; ++i)
            {
                alphas.push_back(static_cast<double>(i) / static_cast<double>(options.points - 1));
            }
        }
        if (alphas.size() < 2)
        {
            throw parameter_error("", "alphas", "an interpolation sweep needs at least 2 points");
        }
        detail::check_alphas(alphas);
        interpolation_result r;
        r.points = line_search(a, b, alphas, workspace, f, options.eval).points;
        r.barrier = xmerge::barrier(alphas, r.values());
        return r;
    }
}

#endif
