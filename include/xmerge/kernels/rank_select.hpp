/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_KERNELS_RANK_SELECT_HPP
#define XMERGE_KERNELS_RANK_SELECT_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "rank_band.hpp"

/**
 * @file
 * The exact selection inside a band: among the candidates the band pass
 * collected (per task), the one at a given position of the magnitude
 * ranking. Linear time on average (introselect); the scalar twin sorts.
 */

namespace xmerge::kernels
{
    /**
     * The candidate at `position` (0: the first-ranked) among tasks[0, count),
     * where the offsets of task t count from element t * task_size. Requires
     * position < the candidates' total.
     */
    inline rank_key select_ranked(const band_candidates* const* tasks, std::size_t count, std::size_t task_size, std::size_t position);

    namespace scalar
    {
        inline rank_key select_ranked(const band_candidates* const* tasks, std::size_t count, std::size_t task_size, std::size_t position);
    }

    namespace detail
    {
        /// The candidates as keys, in `keys` (whose memory is reused from call to call).
        template <class Key, class Make>
        void gather(const band_candidates* const* tasks, std::size_t count, std::size_t task_size, std::vector<Key>& keys, Make&& make)
        {
            std::size_t total = 0;
            for (std::size_t t = 0; t < count; ++t)
            {
                total += tasks[t]->size;
            }
            keys.clear();
            keys.reserve(total);
            for (std::size_t t = 0; t < count; ++t)
            {
                const band_candidates& c = *tasks[t];
                for (std::size_t x = 0; x < c.size; ++x)
                {
                    keys.push_back(make(c.bits[x], t * task_size + static_cast<std::uint32_t>(c.offsets[x])));
                }
            }
        }
    }

    /********************
     * Implementation   *
     ********************/

    inline rank_key select_ranked(const band_candidates* const* tasks, std::size_t count, std::size_t task_size, std::size_t position)
    {
        const auto at = static_cast<std::ptrdiff_t>(position);
        if (static_cast<std::uint64_t>(count) * task_size <= 0xFFFFFFFFULL)
        {
            // One 64-bit number per candidate selects about twice as fast as a struct. The buffer is
            // kept per thread: selections recur with every evaluation, and fresh pages cost more than the work.
            static thread_local std::vector<std::uint64_t> keys;
            detail::gather(tasks, count, task_size, keys, [](std::int32_t bits, std::uint64_t index) { return packed_rank(bits, index); });
            std::nth_element(keys.begin(), keys.begin() + at, keys.end(), std::greater<>());
            const rank_key chosen = unpack_rank(keys[position]);
            if (keys.capacity() > (std::size_t{1} << 21))
            {
                std::vector<std::uint64_t>().swap(keys);  // keep at most 16 MiB per thread
            }
            return chosen;
        }
        std::vector<rank_key> keys;
        detail::gather(tasks, count, task_size, keys, [](std::int32_t bits, std::uint64_t index) { return rank_key{bits, index}; });
        std::nth_element(keys.begin(), keys.begin() + at, keys.end(), ranks_before);
        return keys[position];
    }

    namespace scalar
    {
        inline rank_key select_ranked(const band_candidates* const* tasks, std::size_t count, std::size_t task_size, std::size_t position)
        {
            std::vector<rank_key> keys;
            kernels::detail::gather(tasks, count, task_size, keys, [](std::int32_t bits, std::uint64_t index) { return rank_key{bits, index}; });
            std::sort(keys.begin(), keys.end(), ranks_before);
            return keys[position];
        }
    }
}

#endif
