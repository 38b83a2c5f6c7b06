/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_CORE_ARENA_HPP
#define XMERGE_CORE_ARENA_HPP

#include <cstddef>
#include <vector>

#include <xsimd/xsimd.hpp>

namespace xmerge::detail
{
    /**
     * Per-thread stack of chunk-sized float32 buffers.
     *
     * Evaluators take temporaries from a frame; the buffers return to the
     * arena when the frame ends, so a tree of any shape needs only as many
     * buffers as its deepest live path. Buffers are allocated on first use
     * and then reused for every chunk of the evaluation.
     */
    class arena
    {
    public:
        explicit arena(std::size_t chunk_size) : m_chunk_size(chunk_size) {}

        std::size_t chunk_size() const noexcept { return m_chunk_size; }

        /// Buffers taken within a scope; released when the frame is destroyed.
        class frame
        {
        public:
            explicit frame(arena& a) noexcept : m_arena(a), m_mark(a.m_top) {}
            ~frame() { m_arena.m_top = m_mark; }
            frame(const frame&) = delete;
            frame& operator=(const frame&) = delete;

            /// A buffer of chunk_size() floats (64-byte aligned), valid until the frame ends.
            float* acquire() { return m_arena.push(); }

        private:
            arena& m_arena;
            std::size_t m_mark;
        };

    private:
        using buffer = std::vector<float, xsimd::aligned_allocator<float, 64>>;

        float* push()
        {
            if (m_top == m_buffers.size())
            {
                m_buffers.emplace_back(m_chunk_size);
            }
            return m_buffers[m_top++].data();
        }

        std::size_t m_chunk_size;
        std::size_t m_top = 0;
        std::vector<buffer> m_buffers;  // moving a buffer keeps its data pointer
    };
}

#endif
