/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_IO_OUTPUT_FILE_HPP
#define XMERGE_IO_OUTPUT_FILE_HPP

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "mapped_file.hpp"

namespace xmerge::io
{
    namespace detail
    {
        /// "<pid>-<n>": a name part no other writer of this machine is using now.
        inline std::string unique_suffix();
        /// Creates or truncates `path` and writes `n` bytes; io_error with the system's reason on failure.
        inline void write_whole_file(const std::string& path, const void* data, std::size_t n);
    }

    /**
     * A new file of a size known up front, writable in place.
     *
     * Where the platform has mmap, the file is created, its blocks reserved
     * (so a full disk is an error here, not a crash when a page is written
     * back) and mapped shared: what is written lands in the page cache and is
     * written back by the kernel, so a file larger than memory costs no
     * anonymous memory. Elsewhere the bytes are buffered and written by close().
     *
     * The file is removed by the destructor unless close() succeeded.
     */
    class output_file
    {
    public:
        output_file() = default;
        output_file(std::string path, std::size_t size);
        ~output_file();
        output_file(output_file&& other) noexcept;
        output_file& operator=(output_file&& other) noexcept;
        output_file(const output_file&) = delete;
        output_file& operator=(const output_file&) = delete;

        std::uint8_t* data() noexcept { return m_data; }
        std::size_t size() const noexcept { return m_size; }
        const std::string& path() const noexcept { return m_path; }

        /// Starts writing [offset, offset + n) back and lets this process drop those pages.
        void flush_range(std::size_t offset, std::size_t n) noexcept;

        /// Unmaps (or writes the buffer), optionally syncs to the device, closes.
        void close(bool sync);

    private:
        void discard() noexcept;

        std::string m_path;
        std::uint8_t* m_data = nullptr;
        std::size_t m_size = 0;
        int m_fd = -1;
        bool m_open = false;
        std::vector<std::uint8_t> m_buffer;  // without mmap
    };

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        inline std::string unique_suffix()
        {
            static std::atomic<unsigned long> counter{0};
#if XMERGE_HAS_MMAP
            const long pid = static_cast<long>(::getpid());
#else
            const long pid = 0;
#endif
            return std::to_string(pid) + "-" + std::to_string(counter.fetch_add(1));
        }
    }

    namespace detail
    {
        inline void write_whole_file(const std::string& path, const void* data, std::size_t n)
        {
            std::FILE* f = std::fopen(path.c_str(), "wb");
            if (f == nullptr)
            {
                throw io_error(path, "", std::string("cannot create: ") + std::strerror(errno));
            }
            const bool written = n == 0 || std::fwrite(data, 1, n, f) == n;
            const int e = errno;
            const bool flushed = std::fflush(f) == 0;
            const int fe = errno;
            const bool closed = std::fclose(f) == 0;
            if (!written || !flushed || !closed)
            {
                throw io_error(path, "", std::string("cannot write: ") + std::strerror(!written ? e : !flushed ? fe : errno));
            }
        }
    }

    inline output_file::output_file(std::string path, std::size_t size) : m_path(std::move(path)), m_size(size)
    {
#if XMERGE_HAS_MMAP
        m_fd = ::open(m_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (m_fd < 0)
        {
            throw io_error(m_path, "", std::string("cannot create: ") + std::strerror(errno));
        }
        m_open = true;
        if (m_size > 0)
        {
            // Reserve the blocks now: writing to a mapping of a file the disk cannot hold raises SIGBUS.
            const int rc = ::posix_fallocate(m_fd, 0, static_cast<off_t>(m_size));
            if (rc != 0 && ::ftruncate(m_fd, static_cast<off_t>(m_size)) != 0)
            {
                const int e = errno;
                discard();
                throw io_error(m_path, "", "cannot reserve " + std::to_string(size) + " bytes: " + std::strerror(rc != 0 ? rc : e));
            }
            if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL)
            {
                discard();
                throw io_error(m_path, "", "cannot reserve " + std::to_string(size) + " bytes: " + std::strerror(rc));
            }
            void* p = ::mmap(nullptr, m_size, PROT_READ | PROT_WRITE, MAP_SHARED, m_fd, 0);
            if (p == MAP_FAILED)
            {
                const int e = errno;
                discard();
                throw io_error(m_path, "", std::string("cannot map for writing: ") + std::strerror(e));
            }
            m_data = static_cast<std::uint8_t*>(p);
        }
#else
        m_buffer.resize(m_size);
        m_data = m_buffer.data();
        m_open = true;
#endif
    }

    inline output_file::~output_file()
    {
        discard();
    }

    inline output_file::output_file(output_file&& other) noexcept
        : m_path(std::move(other.m_path))
        , m_data(std::exchange(other.m_data, nullptr))
        , m_size(std::exchange(other.m_size, 0))
        , m_fd(std::exchange(other.m_fd, -1))
        , m_open(std::exchange(other.m_open, false))
        , m_buffer(std::move(other.m_buffer))
    {
    }

    inline output_file& output_file::operator=(output_file&& other) noexcept
    {
        if (this != &other)
        {
            discard();
            m_path = std::move(other.m_path);
            m_data = std::exchange(other.m_data, nullptr);
            m_size = std::exchange(other.m_size, 0);
            m_fd = std::exchange(other.m_fd, -1);
            m_open = std::exchange(other.m_open, false);
            m_buffer = std::move(other.m_buffer);
        }
        return *this;
    }

    inline void output_file::flush_range(std::size_t offset, std::size_t n) noexcept
    {
#if XMERGE_HAS_MMAP
        if (m_data == nullptr || n == 0)
        {
            return;
        }
#if defined(__linux__)
        // Start writeback early so dirty pages do not pile up on large outputs.
        ::sync_file_range(m_fd, static_cast<off_t>(offset), static_cast<off_t>(n), SYNC_FILE_RANGE_WRITE);
#endif
        // On a shared file mapping this only unmaps: the data stays in the page cache.
        const auto [p, len] = detail::page_range(m_data, m_size, offset, n);
        ::madvise(p, len, MADV_DONTNEED);
#else
        (void)offset;
        (void)n;
#endif
    }

    inline void output_file::close(bool sync)
    {
        if (!m_open)
        {
            throw io_error(m_path, "", "closed twice");
        }
#if XMERGE_HAS_MMAP
        if (m_data != nullptr)
        {
            if (sync && ::msync(m_data, m_size, MS_SYNC) != 0)
            {
                throw io_error(m_path, "", std::string("cannot sync: ") + std::strerror(errno));
            }
            ::munmap(m_data, m_size);
            m_data = nullptr;
        }
        if (sync && ::fsync(m_fd) != 0)
        {
            throw io_error(m_path, "", std::string("cannot sync: ") + std::strerror(errno));
        }
        if (::close(m_fd) != 0)
        {
            const int e = errno;
            m_fd = -1;
            throw io_error(m_path, "", std::string("cannot close: ") + std::strerror(e));
        }
        m_fd = -1;
#else
        (void)sync;
        detail::write_whole_file(m_path, m_buffer.data(), m_buffer.size());
        m_buffer.clear();
        m_data = nullptr;
#endif
        m_open = false;
    }

    inline void output_file::discard() noexcept
    {
#if XMERGE_HAS_MMAP
        if (m_data != nullptr)
        {
            ::munmap(m_data, m_size);
            m_data = nullptr;
        }
        if (m_fd >= 0)
        {
            ::close(m_fd);
            m_fd = -1;
        }
#endif
        if (m_open)
        {
            std::remove(m_path.c_str());
            m_open = false;
        }
    }
}

#endif
