/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_IO_CHECKPOINT_WRITER_HPP
#define XMERGE_IO_CHECKPOINT_WRITER_HPP

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor_ref.hpp"
#include "output_file.hpp"
#include "output_lock.hpp"
#include "safetensors.hpp"
#include "safetensors_writer.hpp"
#include "shard_index.hpp"

/**
 * @file
 * Writing a whole checkpoint directory atomically: safetensors shards of a
 * bounded size, the shard index, and any other files (config, tokenizer),
 * built in a hidden sibling directory that is renamed into place at the end.
 */

namespace xmerge::io
{
    /// Options of checkpoint_writer.
    struct checkpoint_options
    {
        /// Largest shard in bytes of tensor data; a tensor larger than this gets a shard of its own.
        std::size_t max_shard_bytes = std::size_t(5) * 1000 * 1000 * 1000;
        /// Shards are "<basename>.safetensors" or "<basename>-0000i-of-0000n.safetensors".
        std::string basename = "model";
        /// `__metadata__` of every shard.
        std::map<std::string, std::string> metadata;
        /// Replace an existing non-empty directory (only once the new one is complete).
        bool overwrite = false;
        /// Flush files and directories to the device before commit() returns.
        bool sync = false;
        /// Told one sentence per leftover of an earlier writer that was removed or restored (see clean_leftovers).
        std::function<void(const std::string&)> on_cleanup;
        /// The steps of commit(), named "staged" (all files written), "moved-aside" (the fallback's previous
        /// version renamed away) and "in-place"; an exception thrown here stops the commit there (fault injection).
        std::function<void(const char*)> on_commit_step;
        /// Replace an existing directory with two renames even where an atomic exchange exists (tests of the fallback).
        bool no_exchange = false;
        /**
         * For a checkpoint written by several processes: the shards (by index,
         * from 0) another process writes into staging_directory(), as
         * shard_layout() places them. This writer neither creates nor checks
         * them; commit() still lists them in the index. Unset: every shard is
         * written here.
         */
        std::function<bool(std::size_t shard)> written_elsewhere;
    };

    /// The shards of a checkpoint, each a list of tensors in order, and the bytes of all tensor data.
    struct shard_layout_result
    {
        std::vector<std::vector<tensor_info>> shards;
        std::size_t tensor_bytes = 0;
    };

    /**
     * How checkpoint_writer splits `tensors` into shards: in the given order,
     * a new shard whenever the next tensor would take the current one past
     * `max_shard_bytes` (as Hugging Face and mergekit do). Throws io_error
     * (naming `origin`) for an unknown dtype or an overflowing shape.
     */
    inline shard_layout_result shard_layout(const std::vector<tensor_info>& tensors, std::size_t max_shard_bytes, const std::string& origin);

    /**
     * Removes the staging directories of every checkpoint_writer of this
     * process that has not committed, and releases their locks, so that the
     * process can end at once (a second Ctrl-C). It waits for a commit in
     * progress to finish its renames. Not async-signal-safe: call it from a
     * thread that waits for signals, not from a signal handler.
     */
    inline void abandon_unfinished_outputs() noexcept;

    /// How many checkpoint_writers of this process have a staging directory and have not committed.
    inline std::size_t unfinished_output_count() noexcept;

    /**
     * A checkpoint directory written tensor by tensor.
     *
     * The layout (which tensor goes to which shard, at which offset) is fixed
     * by the constructor from the tensors' names, dtypes and shapes, in the
     * given order. Everything is written under a staging directory next to
     * `dir`; commit() checks that every tensor was finished, writes the index
     * (for more than one shard) and renames the staging directory to `dir`.
     * Destroying the writer before commit() removes the staging directory, so
     * a failure never leaves a partial checkpoint, and `dir` is untouched.
     *
     * The writer holds output_lock(dir) from construction to commit or
     * destruction: a second writer of the same directory, in this process or
     * another, is refused. Holding it, the constructor first removes what a
     * writer that died left there (clean_leftovers, told to on_cleanup).
     *
     * Without `overwrite`, commit() renames the staging directory to `dir`,
     * which fails if a non-empty `dir` appeared meanwhile (nothing is
     * deleted). With it, an existing `dir` is exchanged with the staging
     * directory in one step (Linux renameat2 RENAME_EXCHANGE) and the old
     * version deleted; where the filesystem cannot exchange, the old version
     * is renamed to `.DIR.old-*` first, and if the process dies before the
     * new one is in place, the next writer (or clean_leftovers) puts it back.
     *
     * The constructor fails early (before any work) when `dir` exists and is
     * not empty without `overwrite`, when another writer holds it, or when
     * its parent cannot be written.
     */
    class checkpoint_writer
    {
    public:
        checkpoint_writer(std::string dir, const std::vector<tensor_info>& tensors, checkpoint_options options = {});
        ~checkpoint_writer();
        checkpoint_writer(const checkpoint_writer&) = delete;
        checkpoint_writer& operator=(const checkpoint_writer&) = delete;

        const std::string& directory() const noexcept { return m_dir; }
        /// Where files land before commit(); other files of the checkpoint can be written here.
        const std::string& staging_directory() const noexcept { return m_staging; }

        std::size_t shard_count() const noexcept { return m_shards.size(); }
        /// File name of the shard holding a tensor.
        const std::string& shard_of(const std::string& name) const;
        /// Bytes of all files written so far (headers and tensor data).
        std::size_t total_bytes() const noexcept { return m_total_bytes; }

        std::uint8_t* data(const std::string& name) { return writer(name).data(name); }
        tensor_ref tensor(const std::string& name) { return writer(name).tensor(name); }
        void write(const std::string& name, const void* bytes, std::size_t n) { writer(name).write(name, bytes, n); }
        void finish(const std::string& name) { writer(name).finish(name); }

        /// Copies a file into the checkpoint under `name` (e.g. "config.json").
        void add_file(const std::string& source, const std::string& name);
        /// Writes a file of the checkpoint from memory.
        void add_file_contents(const std::string& name, const std::string& contents);

        void commit();

    private:
        safetensors_writer& writer(const std::string& name);
        void remove_staging() noexcept;
        void step(const char* name) const;
        /// The same error, naming the file where it would have been in `dir`: the staging directory is gone when the user reads it.
        io_error outside_staging(const io_error& e) const;
        void move_into_place();

        output_lock m_lock;
        std::string m_dir;
        std::string m_staging;
        checkpoint_options m_options;
        std::vector<std::string> m_shard_names;
        std::vector<std::unique_ptr<safetensors_writer>> m_shards;
        std::unordered_map<std::string, std::size_t> m_shard_of;
        std::size_t m_tensor_bytes = 0;
        std::size_t m_total_bytes = 0;
        bool m_committed = false;
    };

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        /// Staging directories of the writers that have not committed, and their locks.
        struct unfinished_outputs
        {
            std::mutex mutex;
            std::vector<std::pair<std::string, std::string>> entries;  // staging directory, lock file
            bool abandoned = false;

            static unfinished_outputs& get()
            {
                static unfinished_outputs* instance = new unfinished_outputs;  // never destroyed: usable during exit
                return *instance;
            }
            void add(const std::string& staging, const std::string& lock)
            {
                std::lock_guard<std::mutex> guard(mutex);
                entries.emplace_back(staging, lock);
            }
            void remove(const std::string& staging) noexcept
            {
                std::lock_guard<std::mutex> guard(mutex);
                entries.erase(std::remove_if(entries.begin(), entries.end(), [&](const auto& e) { return e.first == staging; }), entries.end());
            }
        };

        inline void sync_directory(const std::string& dir)
        {
#if XMERGE_HAS_MMAP
            const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (fd >= 0)
            {
                ::fsync(fd);
                ::close(fd);
            }
#else
            (void)dir;
#endif
        }

        /// Swaps two directories in one step; false (errno set) where the system or filesystem cannot.
        inline bool exchange_directories(const std::string& a, const std::string& b) noexcept
        {
#if defined(__linux__) && defined(RENAME_EXCHANGE)
            return ::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) == 0;
#else
            (void)a;
            (void)b;
            errno = ENOSYS;
            return false;
#endif
        }
    }

    inline std::size_t unfinished_output_count() noexcept
    {
        auto& registry = detail::unfinished_outputs::get();
        std::lock_guard<std::mutex> guard(registry.mutex);
        return registry.entries.size();
    }

    inline void abandon_unfinished_outputs() noexcept
    {
        auto& registry = detail::unfinished_outputs::get();
        std::lock_guard<std::mutex> guard(registry.mutex);
        registry.abandoned = true;  // no commit starts renaming after this
        for (const auto& [staging, lock] : registry.entries)
        {
            std::error_code ec;
            std::filesystem::remove_all(staging, ec);
            std::remove(lock.c_str());
        }
        registry.entries.clear();
    }

    inline shard_layout_result shard_layout(const std::vector<tensor_info>& tensors, std::size_t max_shard_bytes, const std::string& origin)
    {
        shard_layout_result out;
        out.shards.emplace_back();
        std::size_t current = 0;
        for (const auto& t : tensors)
        {
            const std::size_t bytes = detail::checked_tensor_bytes(t, origin);
            if (!out.shards.back().empty() && current + bytes > max_shard_bytes)
            {
                out.shards.emplace_back();
                current = 0;
            }
            out.shards.back().push_back(t);
            current += bytes;
            out.tensor_bytes += bytes;
        }
        return out;
    }

    inline checkpoint_writer::checkpoint_writer(std::string dir, const std::vector<tensor_info>& tensors, checkpoint_options options)
        : m_dir(std::move(dir))
        , m_options(std::move(options))
    {
        namespace fs = std::filesystem;
        if (m_dir.empty())
        {
            throw io_error(m_dir, "", "empty output directory name");
        }
        if (m_options.max_shard_bytes == 0)
        {
            throw parameter_error("", "max_shard_bytes", "must be positive");
        }
        const fs::path target = detail::output_target(m_dir);
        std::error_code ec;
        const fs::path parent = target.parent_path();
        if (!fs::is_directory(parent, ec))
        {
            fs::create_directories(parent, ec);
            if (ec)
            {
                throw io_error(parent.string(), "", "cannot create the output's parent directory: " + ec.message());
            }
        }
        m_lock = output_lock(m_dir);
        for (const auto& note : clean_leftovers(m_dir))
        {
            if (m_options.on_cleanup)
            {
                m_options.on_cleanup(note);
            }
        }
        if (fs::exists(target, ec))
        {
            if (!fs::is_directory(target, ec))
            {
                throw io_error(m_dir, "", "exists and is not a directory");
            }
            if (!fs::is_empty(target, ec) && !m_options.overwrite)
            {
                throw io_error(m_dir, "", "exists and is not empty; choose another output directory or allow overwriting");
            }
        }
        m_dir = target.string();
        m_staging = detail::output_sibling(target, ".partial-" + detail::unique_suffix());
        if (!fs::create_directory(m_staging, ec) || ec)
        {
            throw io_error(m_staging, "", "cannot create the staging directory: " + (ec ? ec.message() : std::string("it exists")));
        }
        detail::unfinished_outputs::get().add(m_staging, m_lock.path());

        try
        {
            shard_layout_result layout = shard_layout(tensors, m_options.max_shard_bytes, m_dir);
            const auto& groups = layout.shards;
            m_tensor_bytes = layout.tensor_bytes;
            writer_options wo;
            wo.temporary_name = false;  // the whole directory is renamed instead
            wo.sync = m_options.sync;
            for (std::size_t i = 0; i < groups.size(); ++i)
            {
                const std::string name = shard_file_name(i + 1, groups.size(), m_options.basename);
                m_shard_names.push_back(name);
                if (m_options.written_elsewhere && m_options.written_elsewhere(i))
                {
                    m_shards.push_back(nullptr);
                }
                else
                {
                    m_shards.push_back(std::make_unique<safetensors_writer>((fs::path(m_staging) / name).string(), groups[i], m_options.metadata, wo));
                    m_total_bytes += m_shards.back()->size();
                }
                for (const auto& t : groups[i])
                {
                    if (!m_shard_of.emplace(t.name, i).second)
                    {
                        throw io_error(m_dir, t.name, "appears twice among the output tensors");
                    }
                }
            }
        }
        catch (const io_error& e)
        {
            m_shards.clear();
            remove_staging();
            throw outside_staging(e);
        }
        catch (...)
        {
            m_shards.clear();
            remove_staging();
            throw;
        }
    }

    inline io_error checkpoint_writer::outside_staging(const io_error& e) const
    {
        const std::string& f = e.file();
        if (f.compare(0, m_staging.size(), m_staging) != 0)
        {
            return e;
        }
        return io_error(m_dir + f.substr(m_staging.size()), e.tensor(), e.reason() + " (while writing it in " + m_staging + ", now removed)");
    }

    inline checkpoint_writer::~checkpoint_writer()
    {
        if (!m_committed)
        {
            m_shards.clear();
            remove_staging();
        }
    }

    inline void checkpoint_writer::remove_staging() noexcept
    {
        std::error_code ec;
        std::filesystem::remove_all(m_staging, ec);
        detail::unfinished_outputs::get().remove(m_staging);
        m_lock.release();
    }

    inline void checkpoint_writer::step(const char* name) const
    {
        if (m_options.on_commit_step)
        {
            m_options.on_commit_step(name);
        }
    }

    inline safetensors_writer& checkpoint_writer::writer(const std::string& name)
    {
        const auto it = m_shard_of.find(name);
        if (it == m_shard_of.end())
        {
            throw io_error(m_dir, name, "is not part of this checkpoint's layout");
        }
        if (!m_shards[it->second])
        {
            throw io_error(m_dir, name, "belongs to a shard another process writes");
        }
        return *m_shards[it->second];
    }

    inline const std::string& checkpoint_writer::shard_of(const std::string& name) const
    {
        const auto it = m_shard_of.find(name);
        if (it == m_shard_of.end())
        {
            throw io_error(m_dir, name, "is not part of this checkpoint's layout");
        }
        return m_shard_names[it->second];
    }

    inline void checkpoint_writer::add_file(const std::string& source, const std::string& name)
    {
        namespace fs = std::filesystem;
        if (!detail::is_safe_relative(name))
        {
            throw io_error(source, "", "'" + name + "' is not a file name inside the checkpoint");
        }
        const fs::path dest = fs::path(m_staging) / name;
        std::error_code ec;
        fs::create_directories(dest.parent_path(), ec);
        detail::require_regular_file(source);
        fs::copy_file(source, dest, fs::copy_options::overwrite_existing, ec);
        if (ec)
        {
            throw io_error(source, "", "cannot copy into the checkpoint as " + (fs::path(m_dir) / name).string() + ": " + ec.message());
        }
        m_total_bytes += static_cast<std::size_t>(fs::file_size(dest, ec));
    }

    inline void checkpoint_writer::add_file_contents(const std::string& name, const std::string& contents)
    {
        namespace fs = std::filesystem;
        if (!detail::is_safe_relative(name))
        {
            throw io_error(m_dir, "", "'" + name + "' is not a file name inside the checkpoint");
        }
        const fs::path dest = fs::path(m_staging) / name;
        std::error_code ec;
        fs::create_directories(dest.parent_path(), ec);
        try
        {
            detail::write_whole_file(dest.string(), contents.data(), contents.size());
        }
        catch (const io_error& e)
        {
            throw outside_staging(e);
        }
        m_total_bytes += contents.size();
    }

    inline void checkpoint_writer::commit()
    {
        namespace fs = std::filesystem;
        if (m_committed)
        {
            throw io_error(m_dir, "", "committed twice");
        }
        try
        {
            for (auto& s : m_shards)
            {
                if (s)
                {
                    s->commit();
                }
            }
        }
        catch (const io_error& e)
        {
            throw outside_staging(e);
        }
        if (m_shards.size() > 1)
        {
            shard_index index;
            index.total_size = m_tensor_bytes;
            for (const auto& [name, i] : m_shard_of)
            {
                index.weight_map[name] = m_shard_names[i];
            }
            const std::string index_path = (fs::path(m_staging) / (m_options.basename + ".safetensors.index.json")).string();
            write_shard_index(index_path, index);
            std::error_code size_ec;
            m_total_bytes += static_cast<std::size_t>(fs::file_size(index_path, size_ec));
        }
        if (m_options.sync)
        {
            detail::sync_directory(m_staging);
        }

        step("staged");
        move_into_place();
        m_committed = true;
        detail::unfinished_outputs::get().remove(m_staging);
        m_lock.release();
        if (m_options.sync)
        {
            detail::sync_directory(fs::path(m_dir).parent_path().string());
        }
    }

    inline void checkpoint_writer::move_into_place()
    {
        namespace fs = std::filesystem;
        // A signal thread abandoning outputs waits until the directories are consistent.
        std::lock_guard<std::mutex> guard(detail::unfinished_outputs::get().mutex);
        if (detail::unfinished_outputs::get().abandoned)
        {
            throw io_error(m_dir, "", "the process is ending; the finished output was discarded");
        }
        // Without overwrite, rename() replaces at most an empty directory and fails on anything else.
        if (::rename(m_staging.c_str(), m_dir.c_str()) == 0)
        {
            step("in-place");
            return;
        }
        const int e = errno;
        if ((e != ENOTEMPTY && e != EEXIST) || !m_options.overwrite)
        {
            throw io_error(m_dir, "", (e == ENOTEMPTY || e == EEXIST ? std::string("appeared and is not empty while the merge ran; it was left as it is")
                                                                     : std::string("cannot rename the finished checkpoint into place: ") + std::strerror(e))
                                          + " (the finished output is discarded)");
        }
        if (!m_options.no_exchange && detail::exchange_directories(m_staging, m_dir))
        {
            // The staging name now holds the previous version.
            step("in-place");
            std::error_code ec;
            fs::remove_all(m_staging, ec);
            return;
        }
        // No atomic exchange here: move the old version aside; clean_leftovers restores it if we stop in between.
        const std::string old = detail::output_sibling(fs::path(m_dir), ".old-" + detail::unique_suffix());
        if (::rename(m_dir.c_str(), old.c_str()) != 0)
        {
            throw io_error(m_dir, "", std::string("cannot move the existing directory aside: ") + std::strerror(errno));
        }
        step("moved-aside");
        if (::rename(m_staging.c_str(), m_dir.c_str()) != 0)
        {
            const int err = errno;
            ::rename(old.c_str(), m_dir.c_str());
            throw io_error(m_dir, "", std::string("cannot rename the finished checkpoint into place: ") + std::strerror(err));
        }
        step("in-place");
        std::error_code ec;
        fs::remove_all(old, ec);
    }
}

#endif
