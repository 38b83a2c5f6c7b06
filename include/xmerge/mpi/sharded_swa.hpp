/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MPI_SHARDED_SWA_HPP
#define XMERGE_MPI_SHARDED_SWA_HPP

#include <cstddef>
#include <vector>

#include <mpi.h>

#include "sharded_average.hpp"

namespace xmerge::mpi
{
    /**
     * Stochastic weight averaging, the running mean of every parameter set
     * passed to update() (the n-th, from 0, does avg <- avg + (x - avg) / (n + 1)),
     * with the float32 mean split across the ranks of `comm`. The same
     * updates as xmerge::swa on one process; collective as sharded_ema.
     */
    class sharded_swa
    {
    public:
        /// Collective.
        sharded_swa(const std::vector<const_tensor_ref>& shapes, MPI_Comm comm, sharded_options options = {})
            : m_state(shapes, comm, options)
        {
        }

        void update(const std::vector<const_tensor_ref>& params)
        {
            m_state.blend(params, 1.0 / static_cast<double>(m_count + 1));
            ++m_count;
        }
        /// Collective: the whole mean into `out` on every rank.
        void gather(const std::vector<tensor_ref>& out) const { m_state.gather(out); }

        /// Parameter sets averaged so far.
        std::size_t count() const noexcept { return m_count; }
        const sharded_average& state() const noexcept { return m_state; }

    private:
        sharded_average m_state;
        std::size_t m_count = 0;
    };
}

#endif
