/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_CORE_ARENA_HPP
#define XMERGE_CORE_ARENA_HPP

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#include <xsimd/xsimd.hpp>

namespace xmerge::detail
{
    /**
     * Per-thread scratch memory for evaluating one chunk at a time: a stack
     * of chunk-sized float32 buffers and a stack of small objects (the
     * per-chunk state of nodes with a run-time number of children).
     *
     * Everything taken inside a frame returns to the arena when the frame
     * ends. Memory is allocated on first use and reused for every chunk of
     * an evaluation, so the steady state allocates nothing.
     */
    class arena
    {
    public:
        explicit arena(std::size_t chunk_size) : m_chunk_size(chunk_size) {}

        std::size_t chunk_size() const noexcept { return m_chunk_size; }

        /// Scratch taken within a scope; released when the frame is destroyed.
        class frame
        {
        public:
            explicit frame(arena& a) noexcept : m_arena(a), m_buffers(a.m_top), m_block(a.m_block), m_offset(a.m_offset), m_memo(a.m_memo.size()) {}
            ~frame()
            {
                m_arena.m_top = m_buffers;
                m_arena.m_block = m_block;
                m_arena.m_offset = m_offset;
                m_arena.m_memo.resize(m_memo);
            }
            frame(const frame&) = delete;
            frame& operator=(const frame&) = delete;

        private:
            arena& m_arena;
            std::size_t m_buffers;
            std::size_t m_block;
            std::size_t m_offset;
            std::size_t m_memo;
        };

        /// A buffer of chunk_size() floats, 64-byte aligned, valid until the enclosing frame ends.
        float* buffer()
        {
            if (m_top == m_buffers.size())
            {
                m_buffers.emplace_back(m_chunk_size);
            }
            return m_buffers[m_top++].data();
        }

        /// Uninitialised room for n objects of a trivially destructible T, valid until the enclosing frame ends.
        template <class T>
        T* allocate(std::size_t n)
        {
            static_assert(std::is_trivially_destructible<T>::value, "arena objects are never destroyed");
            return static_cast<T*>(allocate_bytes(n * sizeof(T), alignof(T)));
        }

        /** @name Values of a chunk computed once and read by several nodes
         *  An entry lives until the frame it was made in ends.
         */
        ///@{
        /// The values remembered under (key, begin), or null.
        const float* recall(const void* key, std::size_t begin) const noexcept
        {
            for (const auto& m : m_memo)
            {
                if (m.key == key && m.begin == begin)
                {
                    return m.values;
                }
            }
            return nullptr;
        }

        void remember(const void* key, std::size_t begin, const float* values) { m_memo.push_back({key, begin, values}); }
        ///@}

    private:
        static constexpr std::size_t block_size = 16384;

        struct memo
        {
            const void* key;
            std::size_t begin;
            const float* values;
        };

        void* allocate_bytes(std::size_t bytes, std::size_t align)
        {
            for (;;)
            {
                if (m_block < m_blocks.size())
                {
                    const std::size_t capacity = m_blocks[m_block].size;
                    const std::size_t start = (m_offset + align - 1) / align * align;
                    if (start + bytes <= capacity)
                    {
                        m_offset = start + bytes;
                        return m_blocks[m_block].data.get() + start;
                    }
                    ++m_block;
                    m_offset = 0;
                    continue;
                }
                const std::size_t size = bytes + align > block_size ? bytes + align : block_size;
                m_blocks.push_back({std::unique_ptr<unsigned char[]>(new unsigned char[size]), size});
            }
        }

        struct block
        {
            std::unique_ptr<unsigned char[]> data;
            std::size_t size;
        };

        using float_buffer = std::vector<float, xsimd::aligned_allocator<float, 64>>;

        std::size_t m_chunk_size;
        std::size_t m_top = 0;
        std::vector<float_buffer> m_buffers;  // moving a buffer keeps its data pointer
        std::size_t m_block = 0;
        std::size_t m_offset = 0;
        std::vector<block> m_blocks;
        std::vector<memo> m_memo;
    };
}

#endif
