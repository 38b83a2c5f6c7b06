/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_ONLINE_LAWA_HPP
#define XMERGE_ONLINE_LAWA_HPP

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../ops/input.hpp"
#include "tensor_copies.hpp"

namespace xmerge
{
    /**
     * Latest weight averaging (LAWA; Kaddour 2022, Sanyal et al. 2023): the
     * uniform mean of the last k snapshots, one taken every nu steps.
     *
     * update() is called once per training step; steps nu, 2 nu, ... copy
     * the parameters into a ring buffer of k snapshots (float32, or bfloat16
     * / float16 to halve its memory, each value rounded once), overwriting
     * the oldest. average() writes (1 / m) sum of the m = min(k, taken)
     * snapshots held, in one pass reading each snapshot once.
     */
    class lawa
    {
    public:
        /// `like`: the parameters (shapes and names only); k >= 1 snapshots, one every `every` >= 1 steps.
        lawa(const std::vector<const_tensor_ref>& like, std::size_t k, std::size_t every = 1, dtype storage = dtype::float32,
             eval_options options = {});

        /// One training step; returns true when it took a snapshot.
        bool update(const std::vector<const_tensor_ref>& params);
        /// Takes a snapshot now, outside the schedule.
        void snapshot(const std::vector<const_tensor_ref>& params);
        /// The mean of the snapshots held; throws parameter_error when none was taken.
        void average(const std::vector<tensor_ref>& outs) const;

        /// Snapshots held (at most k).
        std::size_t size() const noexcept { return m_held; }
        std::size_t capacity() const noexcept { return m_ring.size(); }
        std::size_t steps() const noexcept { return m_steps; }
        /// The snapshot taken `age` snapshots ago (0: the latest).
        const std::vector<tensor_ref>& held(std::size_t age) const;

    private:
        std::vector<tensor_copies> m_ring;
        std::size_t m_every;
        eval_options m_options;
        std::size_t m_next = 0;
        std::size_t m_held = 0;
        std::size_t m_steps = 0;
    };

    /********************
     * Implementation   *
     ********************/

    inline lawa::lawa(const std::vector<const_tensor_ref>& like, std::size_t k, std::size_t every, dtype storage, eval_options options)
        : m_every(every)
        , m_options(options)
    {
        if (k == 0)
        {
            throw parameter_error("", "k", "LAWA needs at least one snapshot");
        }
        if (every == 0)
        {
            throw parameter_error("", "every", "the snapshot interval must be at least one step");
        }
        m_ring.reserve(k);
        for (std::size_t i = 0; i < k; ++i)
        {
            m_ring.emplace_back(like, storage);
        }
    }

    inline bool lawa::update(const std::vector<const_tensor_ref>& params)
    {
        detail::check_parameter_set(m_ring.front().refs(), params);
        ++m_steps;
        if (m_steps % m_every != 0)
        {
            return false;
        }
        snapshot(params);
        return true;
    }

    inline void lawa::snapshot(const std::vector<const_tensor_ref>& params)
    {
        m_ring[m_next].assign(params, m_options);
        m_next = (m_next + 1) % m_ring.size();
        m_held = std::min(m_held + 1, m_ring.size());
    }

    inline const std::vector<tensor_ref>& lawa::held(std::size_t age) const
    {
        if (age >= m_held)
        {
            throw parameter_error("", "age", std::to_string(m_held) + " snapshots are held, none is " + std::to_string(age) + " old");
        }
        return m_ring[(m_next + m_ring.size() - 1 - age) % m_ring.size()].refs();
    }

    inline void lawa::average(const std::vector<tensor_ref>& outs) const
    {
        if (m_held == 0)
        {
            throw parameter_error("", "snapshots", "no snapshot was taken yet");
        }
        std::vector<const tensor_copies*> sets;
        for (std::size_t age = m_held; age-- > 0;)
        {
            sets.push_back(&m_ring[(m_next + m_ring.size() - 1 - age) % m_ring.size()]);
        }
        detail::combine(sets, std::vector<double>(sets.size(), 1.0 / static_cast<double>(sets.size())), outs, m_options);
    }
}

#endif
