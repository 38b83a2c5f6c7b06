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
#include "mapping_guard.hpp"

namespace xmerge::io
{
    namespace detail
    {
#if XMERGE_HAS_MMAP
        inline long long mtime_ns(const struct stat& st) noexcept
        {
#if defined(__APPLE__)
            return static_cast<long long>(st.st_mtimespec.tv_sec) * 1000000000LL + st.st_mtimespec.tv_nsec;
#else
            return static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
#endif
        }
        inline const char* file_kind(mode_t mode) noexcept
        {
            return S_ISFIFO(mode) ? "a FIFO" : S_ISDIR(mode) ? "a directory" : S_ISCHR(mode) || S_ISBLK(mode) ? "a device" : S_ISSOCK(mode) ? "a socket" : "not a plain file";
        }
#endif
    }

    namespace detail
    {
        /// Throws io_error unless `path` is a regular file (checked without opening: a FIFO would block).
        inline void require_regular_file(const std::string& path)
        {
#if XMERGE_HAS_MMAP
            struct stat st;
            if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
            {
                throw io_error(path, "", std::string("is ") + file_kind(st.st_mode) + ", not a regular file");
            }
#else
            (void)path;
#endif
        }
    }

    /**
     * A whole file, read-only, memory-mapped where the platform allows
     * (read into memory otherwise). Pages are loaded on first touch, so
     * opening a large checkpoint costs nothing until tensors are read.
     *
     * A file that shrinks while mapped does not kill the process: reads past
     * its new end return zeros and are recorded (fault_offset()), and
     * changed() compares the file now with the file as opened, so that a
     * reader can refuse a result computed from a file that changed.
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

        /// Offset of the first read that found the file shorter than when opened, or -1.
        long long fault_offset() const noexcept { return detail::mapping_fault_offset(m_guard); }
        /// Why the file at path() is not the one opened (replaced, resized or modified since), or "" when it is.
        std::string changed() const;

    private:
        void release() noexcept;

        std::string m_path;
        const std::uint8_t* m_data = nullptr;
        std::size_t m_size = 0;
        bool m_mapped = false;
        int m_guard = -1;
        std::vector<std::uint8_t> m_buffer;  // when not mapped
        // Identity of the file as opened.
        unsigned long long m_device = 0, m_inode = 0;
        long long m_mtime_ns = 0;
    };

    /********************
     * Implementation   *
     ********************/

    inline mapped_file::mapped_file(std::string path) : m_path(std::move(path))
    {
#if XMERGE_HAS_MMAP
        // Non-blocking: opening a FIFO for reading would otherwise wait for a writer forever.
        const int fd = ::open(m_path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
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
            throw io_error(m_path, "", std::string("is ") + detail::file_kind(st.st_mode) + ", not a regular file");
        }
        m_size = static_cast<std::size_t>(st.st_size);
        m_device = static_cast<unsigned long long>(st.st_dev);
        m_inode = static_cast<unsigned long long>(st.st_ino);
        m_mtime_ns = detail::mtime_ns(st);
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
            m_guard = detail::guard_mapping(m_data, m_size);
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
        , m_guard(std::exchange(other.m_guard, -1))
        , m_buffer(std::move(other.m_buffer))
        , m_device(other.m_device)
        , m_inode(other.m_inode)
        , m_mtime_ns(other.m_mtime_ns)
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
            m_guard = std::exchange(other.m_guard, -1);
            m_buffer = std::move(other.m_buffer);
            m_device = other.m_device;
            m_inode = other.m_inode;
            m_mtime_ns = other.m_mtime_ns;
        }
        return *this;
    }

    inline void mapped_file::release() noexcept
    {
#if XMERGE_HAS_MMAP
        detail::unguard_mapping(m_guard);
        m_guard = -1;
        if (m_mapped)
        {
            ::munmap(const_cast<std::uint8_t*>(m_data), m_size);
        }
#endif
        m_mapped = false;
        m_data = nullptr;
        m_size = 0;
    }

    inline std::string mapped_file::changed() const
    {
#if XMERGE_HAS_MMAP
        struct stat st;
        if (::stat(m_path.c_str(), &st) != 0)
        {
            return std::string("was removed or became unreadable (") + std::strerror(errno) + ")";
        }
        if (static_cast<unsigned long long>(st.st_dev) != m_device || static_cast<unsigned long long>(st.st_ino) != m_inode)
        {
            return "was replaced by another file";
        }
        if (static_cast<std::size_t>(st.st_size) != m_size)
        {
            return "changed size from " + std::to_string(m_size) + " to " + std::to_string(st.st_size) + " bytes";
        }
        if (detail::mtime_ns(st) != m_mtime_ns)
        {
            return "was modified";
        }
#endif
        return {};
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
