/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_IO_MAPPED_FILE_HPP
#define XMERGE_IO_MAPPED_FILE_HPP

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define XMERGE_HAS_MMAP 1
#else
#define XMERGE_HAS_MMAP 0
#endif

#include "../core/error.hpp"

namespace xmerge::io
{
    /**
     * A whole file, read-only, memory-mapped where the platform allows
     * (read into memory otherwise). Pages are loaded on first touch, so
     * opening a large checkpoint costs nothing until tensors are read.
     *
     * The mapping assumes the file is not truncated while mapped.
     */
    class mapped_file
    {
    public:
        mapped_file() = default;
        explicit mapped_file(std::string path);
        ~mapped_file();
        mapped_file(mapped_file&& other) noexcept;
        mapped_file& operator=(mapped_file&& other) noexcept;
        mapped_file(const mapped_file&) = delete;
        mapped_file& operator=(const mapped_file&) = delete;

        const std::uint8_t* data() const noexcept { return m_data; }
        std::size_t size() const noexcept { return m_size; }
        const std::string& path() const noexcept { return m_path; }

        /// Hints that [offset, offset + n) will be read once, front to back.
        void advise_sequential(std::size_t offset, std::size_t n) const noexcept;
        /// Hints that [offset, offset + n) is no longer needed in memory.
        void advise_done(std::size_t offset, std::size_t n) const noexcept;

    private:
        void release() noexcept;

        std::string m_path;
        const std::uint8_t* m_data = nullptr;
        std::size_t m_size = 0;
        bool m_mapped = false;
        std::vector<std::uint8_t> m_buffer;  // when not mapped
    };

    /********************
     * Implementation   *
     ********************/

    inline mapped_file::mapped_file(std::string path) : m_path(std::move(path))
    {
#if XMERGE_HAS_MMAP
        const int fd = ::open(m_path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0)
        {
            throw io_error(m_path, "", std::string("cannot open: ") + std::strerror(errno));
        }
        struct stat st;
        if (::fstat(fd, &st) != 0)
        {
            const int e = errno;
            ::close(fd);
            throw io_error(m_path, "", std::string("cannot stat: ") + std::strerror(e));
        }
        if (!S_ISREG(st.st_mode))
        {
            ::close(fd);
            throw io_error(m_path, "", "not a regular file");
        }
        m_size = static_cast<std::size_t>(st.st_size);
        if (m_size > 0)
        {
            void* p = ::mmap(nullptr, m_size, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED)
            {
                const int e = errno;
                ::close(fd);
                throw io_error(m_path, "", std::string("cannot map: ") + std::strerror(e));
            }
            m_data = static_cast<const std::uint8_t*>(p);
            m_mapped = true;
        }
        ::close(fd);
#else
        std::ifstream in(m_path, std::ios::binary | std::ios::ate);
        if (!in)
        {
            throw io_error(m_path, "", "cannot open");
        }
        m_size = static_cast<std::size_t>(in.tellg());
        m_buffer.resize(m_size);
        in.seekg(0);
        if (m_size > 0 && !in.read(reinterpret_cast<char*>(m_buffer.data()), static_cast<std::streamsize>(m_size)))
        {
            throw io_error(m_path, "", "cannot read");
        }
        m_data = m_buffer.data();
#endif
    }

    inline mapped_file::~mapped_file()
    {
        release();
    }

    inline mapped_file::mapped_file(mapped_file&& other) noexcept
        : m_path(std::move(other.m_path))
        , m_data(std::exchange(other.m_data, nullptr))
        , m_size(std::exchange(other.m_size, 0))
        , m_mapped(std::exchange(other.m_mapped, false))
        , m_buffer(std::move(other.m_buffer))
    {
    }

    inline mapped_file& mapped_file::operator=(mapped_file&& other) noexcept
    {
        if (this != &other)
        {
            release();
            m_path = std::move(other.m_path);
            m_data = std::exchange(other.m_data, nullptr);
            m_size = std::exchange(other.m_size, 0);
            m_mapped = std::exchange(other.m_mapped, false);
            m_buffer = std::move(other.m_buffer);
        }
        return *this;
    }

    inline void mapped_file::release() noexcept
    {
#if XMERGE_HAS_MMAP
        if (m_mapped)
        {
            ::munmap(const_cast<std::uint8_t*>(m_data), m_size);
        }
#endif
        m_mapped = false;
        m_data = nullptr;
        m_size = 0;
    }

    namespace detail
    {
#if XMERGE_HAS_MMAP
        // Page-aligned sub-range of a mapping, for madvise.
        inline std::pair<void*, std::size_t> page_range(const std::uint8_t* base, std::size_t size, std::size_t offset, std::size_t n) noexcept
        {
            const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
            offset = std::min(offset, size);
            n = std::min(n, size - offset);
            const std::size_t start = offset / page * page;
            return {const_cast<std::uint8_t*>(base) + start, offset + n - start};
        }
#endif
    }

    inline void mapped_file::advise_sequential(std::size_t offset, std::size_t n) const noexcept
    {
#if XMERGE_HAS_MMAP
        if (m_mapped && n > 0)
        {
            const auto [p, len] = detail::page_range(m_data, m_size, offset, n);
            ::madvise(p, len, MADV_SEQUENTIAL);
            ::madvise(p, len, MADV_WILLNEED);
        }
#else
        (void)offset;
        (void)n;
#endif
    }

    inline void mapped_file::advise_done(std::size_t offset, std::size_t n) const noexcept
    {
#if XMERGE_HAS_MMAP
        if (m_mapped && n > 0)
        {
            const auto [p, len] = detail::page_range(m_data, m_size, offset, n);
            ::madvise(p, len, MADV_DONTNEED);
        }
#else
        (void)offset;
        (void)n;
#endif
    }
}

#endif
