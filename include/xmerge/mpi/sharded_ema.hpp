/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MPI_SHARDED_EMA_HPP
#define XMERGE_MPI_SHARDED_EMA_HPP

#include <cstddef>
#include <vector>

#include <mpi.h>

#include "../online/ema.hpp"
#include "sharded_average.hpp"

namespace xmerge::mpi
{
    /**
     * Exponential moving average of parameters, avg <- beta * avg + (1 - beta) * x,
     * with the float32 average split across the ranks of `comm` (each keeps
     * about 1/N of it). The same updates as xmerge::ema on one process, at
     * 4/N bytes of state per parameter; gather() assembles the average.
     *
     * Every call is collective with average_source::rank_mean, where x is
     * the mean of the ranks' parameters; with the default
     * average_source::replicated, update() is local and only the
     * constructor and gather() are collective.
     */
    class sharded_ema
    {
    public:
        /// Collective; the average starts as a copy of `params`. Throws parameter_error for beta outside [0, 1].
        sharded_ema(const std::vector<const_tensor_ref>& params, double beta, MPI_Comm comm, sharded_options options = {})
            : m_state(params, comm, options)
            , m_beta(beta)
        {
            xmerge::detail::check_unit_interval("beta", beta);
            m_state.blend(params, 1.0);
        }

        void update(const std::vector<const_tensor_ref>& params) { update(params, m_beta); }
        /// One update with a beta for this step only (warm-up schedules).
        void update(const std::vector<const_tensor_ref>& params, double beta)
        {
            xmerge::detail::check_unit_interval("beta", beta);
            m_state.blend(params, 1.0 - beta);
            ++m_steps;
        }
        /// Restarts the average from `params`.
        void reset(const std::vector<const_tensor_ref>& params)
        {
            m_state.blend(params, 1.0);
            m_steps = 0;
        }
        /// Collective: the whole average into `out` on every rank.
        void gather(const std::vector<tensor_ref>& out) const { m_state.gather(out); }

        double beta() const noexcept { return m_beta; }
        std::size_t steps() const noexcept { return m_steps; }
        const sharded_average& state() const noexcept { return m_state; }

    private:
        sharded_average m_state;
        double m_beta;
        std::size_t m_steps = 0;
    };
}

#endif
