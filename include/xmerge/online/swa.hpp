/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_ONLINE_SWA_HPP
#define XMERGE_ONLINE_SWA_HPP

#include <cstddef>
#include <utility>
#include <vector>

#include "running_average.hpp"

namespace xmerge
{
    /**
     * Stochastic weight averaging: the running mean of every parameter set
     * passed to update(), in place. The n-th update (counting from 0) does
     * avg <- avg + (x - avg) / (n + 1); the first copies x, so the buffers
     * need no initialisation.
     */
    class swa
    {
    public:
        explicit swa(std::vector<tensor_ref> averages, eval_options options = {})
            : m_average(std::move(averages), options)
        {
        }

        void update(const std::vector<const_tensor_ref>& params)
        {
            m_average.blend(params, 1.0 / static_cast<double>(m_count + 1));
            ++m_count;
        }

        /// Parameter sets averaged so far.
        std::size_t count() const noexcept { return m_count; }

    private:
        running_average m_average;
        std::size_t m_count = 0;
    };
}

#endif
