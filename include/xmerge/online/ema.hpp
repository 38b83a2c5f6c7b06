/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_ONLINE_EMA_HPP
#define XMERGE_ONLINE_EMA_HPP

#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "running_average.hpp"

namespace xmerge
{
    /**
     * Exponential moving average of parameters, updated in place:
     * avg <- beta * avg + (1 - beta) * x, over all tensors at once.
     *
     * The caller owns the average buffers (initialise them with a copy of
     * the parameters, or call reset()). Throws parameter_error for beta
     * outside [0, 1] and on count or shape mismatches.
     */
    class ema
    {
    public:
        ema(std::vector<tensor_ref> averages, double beta, eval_options options = {});

        /// One update with the configured beta.
        void update(const std::vector<const_tensor_ref>& params) { update(params, m_beta); }
        /// One update with a beta for this step only (for warm-up schedules).
        void update(const std::vector<const_tensor_ref>& params, double beta);
        /// Copies params into the averages.
        void reset(const std::vector<const_tensor_ref>& params);

        double beta() const noexcept { return m_beta; }
        std::size_t steps() const noexcept { return m_steps; }

    private:
        running_average m_average;
        double m_beta;
        std::size_t m_steps = 0;
    };

    namespace detail
    {
        inline void check_unit_interval(const char* parameter, double v)
        {
            if (!(v >= 0.0 && v <= 1.0))
            {
                throw parameter_error("", parameter, "must be in [0, 1], got " + std::to_string(v));
            }
        }
    }

    /********************
     * Implementation   *
     ********************/

    inline ema::ema(std::vector<tensor_ref> averages, double beta, eval_options options)
        : m_average(std::move(averages), options)
        , m_beta(beta)
    {
        detail::check_unit_interval("beta", beta);
    }

    inline void ema::update(const std::vector<const_tensor_ref>& params, double beta)
    {
        detail::check_unit_interval("beta", beta);
        m_average.blend(params, 1.0 - beta);
        ++m_steps;
    }

    inline void ema::reset(const std::vector<const_tensor_ref>& params)
    {
        m_average.blend(params, 1.0);
        m_steps = 0;
    }
}

#endif
