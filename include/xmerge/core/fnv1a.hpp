/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_CORE_FNV1A_HPP
#define XMERGE_CORE_FNV1A_HPP

#include <cstddef>
#include <cstdint>

namespace xmerge::detail
{
    /**
     * 64-bit FNV-1a, fed in pieces. Keys that must be the same on every
     * platform and in every process (cache directory names, digests compared
     * across ranks) use it instead of std::hash.
     */
    class fnv1a
    {
    public:
        void bytes(const void* data, std::size_t n) noexcept
        {
            const auto* p = static_cast<const unsigned char*>(data);
            for (std::size_t i = 0; i < n; ++i)
            {
                m_h = (m_h ^ p[i]) * 0x100000001b3ull;
            }
        }

        std::uint64_t value() const noexcept { return m_h; }

    private:
        std::uint64_t m_h = 0xcbf29ce484222325ull;
    };
}

#endif
