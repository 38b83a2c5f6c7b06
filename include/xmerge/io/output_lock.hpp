/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_IO_OUTPUT_LOCK_HPP
#define XMERGE_IO_OUTPUT_LOCK_HPP

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "mapped_file.hpp"

#if XMERGE_HAS_MMAP
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>
#endif

/**
 * @file
 * Who owns a checkpoint directory being written, and what a writer that
 * died left behind.
 *
 * Writing `DIR` involves hidden siblings in its parent directory:
 * `.DIR.lock` (held with flock(2) by the live writer), `.DIR.partial-<pid>-<n>`
 * (the staging directory) and, where the filesystem cannot exchange two
 * directories atomically, `.DIR.old-<pid>-<n>` (the previous contents while
 * --overwrite swaps them). Only the lock's holder creates or removes any of
 * them, so whoever holds the lock knows every other sibling is a leftover.
 * The command line also folds MODEL+ADAPTER references into
 * `.DIR.adapters-<pid>` before it takes the lock; those are leftovers once
 * process <pid> is gone.
 */

namespace xmerge::io
{
    /**
     * An exclusive lock on writing a checkpoint directory: flock(2) on
     * `.DIR.lock` next to it, released (and the file removed) by release() or
     * the destructor, and by the kernel when the process dies in any way.
     * Taking a lock another live process holds fails at once with io_error.
     */
    class output_lock
    {
    public:
        output_lock() = default;
        /// `dir` is the checkpoint directory (it need not exist).
        explicit output_lock(const std::string& dir);
        ~output_lock() { release(); }
        output_lock(output_lock&& other) noexcept : m_path(std::move(other.m_path)), m_fd(std::exchange(other.m_fd, -1)) {}
        output_lock& operator=(output_lock&& other) noexcept;
        output_lock(const output_lock&) = delete;
        output_lock& operator=(const output_lock&) = delete;

        bool held() const noexcept { return m_fd >= 0; }
        const std::string& path() const noexcept { return m_path; }
        /// Removes the lock file and unlocks; nothing if not held.
        void release() noexcept;

    private:
        std::string m_path;
        int m_fd = -1;
    };

    /**
     * Removes what writers of `dir` that are gone left next to it: staging
     * directories are deleted; a previous version moved aside by an
     * interrupted overwrite is put back when `dir` is missing, deleted
     * otherwise; folded adapters (`.DIR.adapters-<pid>`) are deleted when
     * process <pid> no longer exists. The caller must hold output_lock(dir).
     * Returns one sentence per action, for the user.
     */
    inline std::vector<std::string> clean_leftovers(const std::string& dir);

    namespace detail
    {
        /// The absolute, normalized path of a checkpoint directory (no trailing separator).
        inline std::filesystem::path output_target(const std::string& dir);
        /// Path of a hidden sibling of `target`: parent/.NAME<suffix>.
        inline std::string output_sibling(const std::filesystem::path& target, const std::string& suffix);
        /// Siblings of `target` named `.NAME<infix>...`, sorted.
        inline std::vector<std::filesystem::path> output_siblings(const std::filesystem::path& target, const std::string& infix);
        /// Bytes of regular files under `p` (0 where unreadable).
        inline std::uintmax_t tree_bytes(const std::filesystem::path& p) noexcept;
        /// Whether the process whose id ends `p`'s name (`...-<pid>`) has exited (false when unsure).
        inline bool owner_exited(const std::filesystem::path& p) noexcept;
    }

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        inline std::filesystem::path output_target(const std::string& dir)
        {
            namespace fs = std::filesystem;
            fs::path target = fs::absolute(fs::path(dir)).lexically_normal();
            if (!target.has_filename())
            {
                target = target.parent_path();
            }
            return target;
        }

        inline std::string output_sibling(const std::filesystem::path& target, const std::string& suffix)
        {
            return (target.parent_path() / ("." + target.filename().string() + suffix)).string();
        }

        inline std::vector<std::filesystem::path> output_siblings(const std::filesystem::path& target, const std::string& infix)
        {
            namespace fs = std::filesystem;
            const std::string prefix = "." + target.filename().string() + infix;
            std::vector<fs::path> out;
            std::error_code ec;
            for (fs::directory_iterator it(target.parent_path(), ec), end; !ec && it != end; it.increment(ec))
            {
                const std::string name = it->path().filename().string();
                if (name.size() > prefix.size() && name.compare(0, prefix.size(), prefix) == 0)
                {
                    out.push_back(it->path());
                }
            }
            std::sort(out.begin(), out.end());
            return out;
        }

        inline std::uintmax_t tree_bytes(const std::filesystem::path& p) noexcept
        {
            namespace fs = std::filesystem;
            std::uintmax_t total = 0;
            std::error_code ec;
            for (fs::recursive_directory_iterator it(p, ec), end; !ec && it != end; it.increment(ec))
            {
                std::error_code size_ec;
                if (it->is_regular_file(size_ec))
                {
                    const auto n = it->file_size(size_ec);
                    total += size_ec ? 0 : n;
                }
            }
            return total;
        }

        inline bool owner_exited(const std::filesystem::path& p) noexcept
        {
#if XMERGE_HAS_MMAP
            const std::string name = p.filename().string();
            const auto dash = name.rfind('-');
            if (dash == std::string::npos || dash + 1 == name.size() || name.find_first_not_of("0123456789", dash + 1) != std::string::npos
                || name.size() - dash > 10)
            {
                return false;
            }
            const long pid = std::stol(name.substr(dash + 1));
            // kill(pid, 0) fails with ESRCH only when no such process exists (EPERM: it exists, someone else's).
            return pid > 0 && pid != static_cast<long>(::getpid()) && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
#else
            (void)p;
            return false;
#endif
        }
    }

    inline output_lock::output_lock(const std::string& dir) : m_path(detail::output_sibling(detail::output_target(dir), ".lock"))
    {
#if XMERGE_HAS_MMAP
        // The file may be unlinked by its previous holder between open and flock: retry until the
        // locked file is the one the name points to.
        for (int attempt = 0; attempt < 100; ++attempt)
        {
            const int fd = ::open(m_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
            if (fd < 0)
            {
                throw io_error(m_path, "", std::string("cannot create the output's lock file: ") + std::strerror(errno));
            }
            if (::flock(fd, LOCK_EX | LOCK_NB) != 0)
            {
                const int e = errno;
                ::close(fd);
                if (e == EWOULDBLOCK)
                {
                    throw io_error(dir, "", "another process is writing this output directory (it holds " + m_path
                                                + "); wait for it to finish or choose another output directory");
                }
                throw io_error(m_path, "", std::string("cannot lock: ") + std::strerror(e));
            }
            struct stat held, named;
            if (::fstat(fd, &held) == 0 && ::stat(m_path.c_str(), &named) == 0 && held.st_dev == named.st_dev && held.st_ino == named.st_ino)
            {
                m_fd = fd;
                return;
            }
            ::close(fd);
        }
        throw io_error(m_path, "", "cannot lock: the lock file keeps being replaced");
#else
        m_fd = 0;
#endif
    }

    inline output_lock& output_lock::operator=(output_lock&& other) noexcept
    {
        if (this != &other)
        {
            release();
            m_path = std::move(other.m_path);
            m_fd = std::exchange(other.m_fd, -1);
        }
        return *this;
    }

    inline void output_lock::release() noexcept
    {
        if (m_fd < 0)
        {
            return;
        }
#if XMERGE_HAS_MMAP
        // Unlinked while still locked: a process that opened the old file re-checks and retries.
        ::unlink(m_path.c_str());
        ::close(m_fd);
#endif
        m_fd = -1;
    }

    inline std::vector<std::string> clean_leftovers(const std::string& dir)
    {
        namespace fs = std::filesystem;
        const fs::path target = detail::output_target(dir);
        std::vector<std::string> report;
        auto megabytes = [](std::uintmax_t n) { return std::to_string(n / 1000000) + " MB"; };

        for (const auto& p : detail::output_siblings(target, ".partial-"))
        {
            const auto bytes = detail::tree_bytes(p);
            std::error_code ec;
            fs::remove_all(p, ec);
            report.push_back(ec ? "cannot remove the unfinished output " + p.string() + ": " + ec.message()
                                : "removed " + p.string() + " (" + megabytes(bytes) + "), the unfinished output of a run that ended without cleaning up");
        }
        for (const auto& p : detail::output_siblings(target, ".adapters-"))
        {
            if (!detail::owner_exited(p))
            {
                continue;
            }
            const auto bytes = detail::tree_bytes(p);
            std::error_code ec;
            fs::remove_all(p, ec);
            report.push_back(ec ? "cannot remove the folded adapters " + p.string() + ": " + ec.message()
                                : "removed " + p.string() + " (" + megabytes(bytes) + "), adapters folded by a run that ended without cleaning up");
        }
        for (const auto& p : detail::output_siblings(target, ".old-"))
        {
            std::error_code ec;
            const bool missing = !fs::exists(target, ec) || (fs::is_directory(target, ec) && fs::is_empty(target, ec));
            if (missing)
            {
                // An overwrite stopped between its two renames: the previous version is the only one.
                fs::remove(target, ec);
                fs::rename(p, target, ec);
                report.push_back(ec ? "cannot restore " + target.string() + " from " + p.string() + ": " + ec.message()
                                    : "restored " + target.string() + " from " + p.string() + ", left by an overwrite that did not finish");
            }
            else
            {
                const auto bytes = detail::tree_bytes(p);
                fs::remove_all(p, ec);
                report.push_back(ec ? "cannot remove " + p.string() + ": " + ec.message()
                                    : "removed " + p.string() + " (" + megabytes(bytes) + "), a replaced version left by an overwrite that did not finish");
            }
        }
        return report;
    }
}

#endif
