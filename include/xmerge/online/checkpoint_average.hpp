/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_ONLINE_CHECKPOINT_AVERAGE_HPP
#define XMERGE_ONLINE_CHECKPOINT_AVERAGE_HPP

#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "running_average.hpp"

namespace xmerge
{
    /// Whether a checkpoint metric is better when lower (a loss) or higher (a step count).
    enum class metric_kind
    {
        loss,
        step
    };

    /**
     * Weight of a checkpoint in a metrics-weighted average: metric^-penalty
     * for a loss, metric^penalty for a step. penalty = 0 gives uniform
     * weights; larger values favour better checkpoints more strongly.
     * Throws parameter_error unless metric > 0 and penalty >= 0 are finite.
     */
    inline double metric_weight(double metric, double penalty, metric_kind kind);

    /**
     * Weighted average of a stream of checkpoints, accumulated in place:
     * after add(x_1, w_1) ... add(x_n, w_n) the averages hold
     * sum_i w_i x_i / sum_i w_i. Only the running average is kept, as
     * avg <- avg + w_n / (w_1 + ... + w_n) * (x_n - avg), so memory does
     * not grow with the stream. The first add() copies.
     */
    class checkpoint_average
    {
    public:
        explicit checkpoint_average(std::vector<tensor_ref> averages, eval_options options = {})
            : m_average(std::move(averages), options)
        {
        }

        /// Adds a checkpoint with weight w > 0 (1 for a uniform average).
        void add(const std::vector<const_tensor_ref>& checkpoint, double weight = 1.0);

        /// Adds a checkpoint weighted by metric_weight(metric, penalty, kind).
        void add(const std::vector<const_tensor_ref>& checkpoint, double metric, double penalty, metric_kind kind)
        {
            add(checkpoint, metric_weight(metric, penalty, kind));
        }

        std::size_t count() const noexcept { return m_count; }
        double total_weight() const noexcept { return m_total; }

    private:
        running_average m_average;
        std::size_t m_count = 0;
        double m_total = 0.0;
    };

    /********************
     * Implementation   *
     ********************/

    inline double metric_weight(double metric, double penalty, metric_kind kind)
    {
        if (!(std::isfinite(metric) && metric > 0.0))
        {
            throw parameter_error("", "metric", "must be positive and finite, got " + std::to_string(metric));
        }
        if (!(std::isfinite(penalty) && penalty >= 0.0))
        {
            throw parameter_error("", "penalty", "must be non-negative and finite, got " + std::to_string(penalty));
        }
        const double w = std::pow(metric, kind == metric_kind::loss ? -penalty : penalty);
        if (!(std::isfinite(w) && w > 0.0))
        {
            throw parameter_error("", "penalty", "metric " + std::to_string(metric) + " ^ " + std::to_string(penalty) + " is not a usable weight");
        }
        return w;
    }

    inline void checkpoint_average::add(const std::vector<const_tensor_ref>& checkpoint, double weight)
    {
        if (!(std::isfinite(weight) && weight > 0.0))
        {
            throw parameter_error("", "weight", "must be positive and finite, got " + std::to_string(weight));
        }
        const double total = m_total + weight;
        m_average.blend(checkpoint, m_count == 0 ? 1.0 : weight / total);
        m_total = total;
        ++m_count;
    }
}

#endif
