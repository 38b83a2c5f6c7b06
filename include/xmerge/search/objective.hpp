/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_SEARCH_OBJECTIVE_HPP
#define XMERGE_SEARCH_OBJECTIVE_HPP

#include <cmath>
#include <cstddef>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor_ref.hpp"

/**
 * @file
 * What evaluation-driven merges maximize: a user callable that scores the
 * parameters of a candidate, and the record of every candidate it scored.
 */

namespace xmerge
{
    /// A model as the search functions read it: its tensors, each named, in one fixed order.
    using parameter_list = std::vector<const_tensor_ref>;

    /// The outcome of scoring one candidate.
    struct score
    {
        /// What the searches maximize (higher is better).
        double value = 0.0;
        /// Per-task scores or other metrics, as the objective returned them.
        std::vector<double> details;
    };

    /// One candidate a search scored: the coefficients that define it and its score.
    struct evaluated_point
    {
        /// Meaning depends on the search: an interpolation factor, a lambda,
        /// one weight per model, one coefficient per (group, model).
        std::vector<double> coefficients;
        score result;
    };

    /// Every candidate a search scored, in order, and the best of them.
    struct search_result
    {
        std::vector<evaluated_point> points;
        /// Index into points of the best candidate (the first of equals).
        std::size_t best_index = 0;

        const evaluated_point& best() const { return points.at(best_index); }
    };

    /**
     * A scoring function for candidates written into a workspace.
     *
     * Wraps a callable taking `const std::vector<tensor_ref>&` (the
     * workspace holding the candidate) or nothing (when it reads the
     * workspace by other means, e.g. a network whose parameters are the
     * workspace), and returning
     *  - a `double` (the value; details hold it once),
     *  - a `std::vector<double>` of per-task scores (the value is their mean), or
     *  - a `score` (value and details chosen by the callable).
     * Higher is better: return the negated loss to minimize a loss. The
     * searches refuse a value that is not finite (parameter_error naming
     * the candidate).
     */
    class objective
    {
    public:
        template <class F, class = std::enable_if_t<!std::is_same<std::decay_t<F>, objective>::value>>
        objective(F f);

        /// Scores the candidate held by `workspace`.
        score operator()(const std::vector<tensor_ref>& workspace) const;

    private:
        std::function<score(const std::vector<tensor_ref>&)> m_fn;
    };

    namespace detail
    {
        inline score to_score(double v) { return {v, {v}}; }
        inline score to_score(score s) { return s; }
        inline score to_score(std::vector<double> scores);

        /// "[0.1, 0.5]" style text of coefficients, for messages.
        inline std::string coefficients_text(const std::vector<double>& c);
    }

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        inline score to_score(std::vector<double> scores)
        {
            if (scores.empty())
            {
                throw parameter_error("", "objective", "returned no score");
            }
            double sum = 0.0;
            for (double s : scores)
            {
                sum += s;
            }
            return {sum / static_cast<double>(scores.size()), std::move(scores)};
        }

        inline std::string coefficients_text(const std::vector<double>& c)
        {
            std::string s = "[";
            for (std::size_t i = 0; i < c.size(); ++i)
            {
                s += (i ? ", " : "") + std::to_string(c[i]);
            }
            return s + "]";
        }
    }

    template <class F, class>
    inline objective::objective(F f)
    {
        if constexpr (std::is_invocable<F&, const std::vector<tensor_ref>&>::value)
        {
            m_fn = [f = std::move(f)](const std::vector<tensor_ref>& w) mutable { return detail::to_score(f(w)); };
        }
        else
        {
            static_assert(std::is_invocable<F&>::value, "xmerge::objective: the callable must take const std::vector<tensor_ref>& or nothing");
            m_fn = [f = std::move(f)](const std::vector<tensor_ref>&) mutable { return detail::to_score(f()); };
        }
    }

    inline score objective::operator()(const std::vector<tensor_ref>& workspace) const
    {
        return m_fn(workspace);
    }
}

#endif
