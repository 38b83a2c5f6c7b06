/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_CORE_CHUNK_STATISTIC_HPP
#define XMERGE_CORE_CHUNK_STATISTIC_HPP

#include <algorithm>
#include <cstddef>
#include <tuple>
#include <utility>
#include <vector>

#include "arena.hpp"
#include "statistic.hpp"

namespace xmerge::detail
{
    /// One chunk as a statistic's kernel sees it.
    struct chunk_view
    {
        std::size_t task;   ///< the parallel task the chunk belongs to
        std::size_t begin;  ///< index of the chunk's first element in the tensor
        std::size_t size;   ///< elements in the chunk
        arena& scratch;     ///< memory valid until the chunk is done
    };

    /**
     * The statistics phase of any per-tensor quantity computed from chunks:
     * binds its operands (evaluators of tensor expressions, or list
     * evaluators) to every chunk and streams them into a kernel object, which
     * keeps one partial result per task and combines them in task order.
     *
     * A kernel provides
     *   - `using partial = ...;` its per-task state;
     *   - `bool begin_pass(const pass_layout&, std::vector<partial>&)`: sizes
     *     the partials for a pass, or returns false when the value is known;
     *   - `void accumulate(partial&, const chunk_view&, const Bound&... operands)`,
     *     called once per chunk (concurrently for different tasks, in order
     *     within a task) with the operands bound to the chunk;
     *   - `void end_pass(std::vector<partial>&)`: combines the partials;
     *   - optionally `bool wants(const chunk_view&) const`: false for a chunk
     *     the pass skips (a sample), which is then not even bound.
     *
     * Kernels that want raw memory call detail::chunk_values() on an operand;
     * heavy work belongs in a raw-pointer kernel the kernel object calls.
     */
    template <class Kernel, class... Operands>
    class chunk_statistic : public statistic
    {
    public:
        template <class... Nodes>
        chunk_statistic(std::size_t size, Kernel kernel, const Nodes&... nodes) : m_size(size), m_kernel(std::move(kernel)), m_operands(nodes...)
        {
        }

        /// Registers the statistic one level above its operands; returns that level.
        std::size_t collect(statistics_registry& r) { return collect_after(r, 0); }

        std::size_t size() const noexcept override { return m_size; }

        bool begin_pass(const pass_layout& layout) override { return m_kernel.begin_pass(layout, m_partials); }

        void accumulate(std::size_t task, std::size_t begin, std::size_t n, arena& a) override
        {
            const chunk_view chunk{task, begin, n, a};
            if (!wants(m_kernel, chunk, 0))
            {
                return;
            }
            arena::frame frame(a);
            std::apply([&](const auto&... op) { m_kernel.accumulate(m_partials[task], chunk, op.bind(begin, n, a)...); }, m_operands);
        }

        void end_pass() override
        {
            m_kernel.end_pass(m_partials);
            m_partials.clear();
            m_partials.shrink_to_fit();
        }

        Kernel& kernel() noexcept { return m_kernel; }
        const Kernel& kernel() const noexcept { return m_kernel; }
        const std::tuple<Operands...>& operands() const noexcept { return m_operands; }

    protected:
        /// collect() for a statistic that also reads statistics of level `dependencies` (its own scalar parameters).
        std::size_t collect_after(statistics_registry& r, std::size_t dependencies)
        {
            std::size_t level = dependencies;
            std::apply([&](auto&... op) { ((level = std::max(level, op.collect(r))), ...); }, m_operands);
            r.add(this, level + 1);
            return level + 1;
        }

    private:
        template <class K>
        static auto wants(const K& k, const chunk_view& chunk, int) -> decltype(k.wants(chunk))
        {
            return k.wants(chunk);
        }
        template <class K>
        static bool wants(const K&, const chunk_view&, long)
        {
            return true;
        }

        std::size_t m_size;
        Kernel m_kernel;
        std::tuple<Operands...> m_operands;
        std::vector<typename Kernel::partial> m_partials;
    };
}

#endif
