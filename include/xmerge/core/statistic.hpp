/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_CORE_STATISTIC_HPP
#define XMERGE_CORE_STATISTIC_HPP

#include <algorithm>
#include <cstddef>
#include <vector>

#include "arena.hpp"
#include "parallel.hpp"

namespace xmerge::detail
{
    /**
     * How one tensor is cut for evaluation: fixed chunks (the unit of the
     * fused pass) grouped into fixed tasks (the unit of parallel work and of
     * partial results). Neither depends on the thread count.
     */
    struct pass_layout
    {
        std::size_t size = 0;
        std::size_t chunk_size = 0;
        std::size_t chunks_per_task = 0;
        /// Parallelism of the evaluation, for statistics with work of their own
        /// in begin_pass or end_pass (sorting rows, say); see detail::run_tasks.
        std::size_t threads = 1;
        executor* exec = nullptr;

        std::size_t task_size() const noexcept { return chunk_size * chunks_per_task; }
        std::size_t tasks() const noexcept { return (size + task_size() - 1) / task_size(); }
        std::size_t chunks() const noexcept { return (size + chunk_size - 1) / chunk_size; }
        std::size_t task_begin(std::size_t t) const noexcept { return t * task_size(); }
        std::size_t task_end(std::size_t t) const noexcept { return std::min(size, (t + 1) * task_size()); }
    };

    /**
     * A per-tensor quantity computed before the element-wise pass.
     *
     * The engine runs passes over the tensor until begin_pass() returns false:
     * each pass calls accumulate() once for every chunk (concurrently for
     * different tasks, in order within a task), then end_pass() once. A
     * statistic keeps one partial result per task and combines them in task
     * order in end_pass(), which makes it independent of the thread count.
     * The end_pass() calls of the statistics of one pass may run concurrently
     * with each other.
     * Multi-pass statistics (a selection refining a threshold) simply ask
     * for another pass.
     */
    class statistic
    {
    public:
        virtual ~statistic() = default;
        /// Elements of the tensor the statistic reads.
        virtual std::size_t size() const noexcept = 0;
        /// Prepares a pass; false when the value is already known.
        virtual bool begin_pass(const pass_layout& layout) = 0;
        /// Feeds elements [begin, begin + n) of task `task`.
        virtual void accumulate(std::size_t task, std::size_t begin, std::size_t n, arena& a) = 0;
        /// Combines the tasks' partial results.
        virtual void end_pass() = 0;
    };

    /**
     * The statistics of one expression, by level: a statistic at level L reads
     * only statistics of levels below L, so each level is computed after the
     * previous one, and statistics of one level share passes over memory.
     */
    class statistics_registry
    {
    public:
        void add(statistic* s, std::size_t level)
        {
            if (m_levels.size() < level)
            {
                m_levels.resize(level);
            }
            m_levels[level - 1].push_back(s);
        }

        std::size_t levels() const noexcept { return m_levels.size(); }
        const std::vector<statistic*>& level(std::size_t l) const { return m_levels[l - 1]; }
        bool empty() const noexcept { return m_levels.empty(); }

    private:
        std::vector<std::vector<statistic*>> m_levels;
    };
}

#endif
