/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LORA_FOLD_CACHE_HPP
#define XMERGE_LORA_FOLD_CACHE_HPP

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <system_error>
#include <utility>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../core/fnv1a.hpp"
#include "../io/companion_files.hpp"
#include "../io/safetensors.hpp"
#include "../model/merge.hpp"
#include "../model/model.hpp"
#include "adapter.hpp"
#include "fold_model.hpp"

/**
 * @file
 * `model+adapter` references made into checkpoints: each distinct pair is
 * folded once, through the streaming fold, into a directory of a cache, and
 * merged from there like any model (what mergekit does with its LoRA merge
 * cache). A temporary cache is removed with the object; a named one keeps
 * its folds for later runs.
 */

namespace xmerge::lora
{
    /// How a fold_cache folds.
    struct fold_cache_options
    {
        /// dtype of the folded F32/BF16/F16 tensors (float32, as mergekit folds by default; nullopt: the base's).
        std::optional<dtype> out_dtype = dtype::float32;
        /// Threads of each fold (0: every hardware thread).
        std::size_t threads = 0;
        /// Called after each tensor of a fold.
        std::function<void(const merge_progress&)> progress;
    };

    /**
     * Folded models, one directory per (model, adapter, dtype).
     *
     * The directory of a pair is named from the two paths and a hash of their
     * absolute paths, the dtype and the sizes and modification times of the
     * model's and the adapter's files, so a changed input folds anew. Each
     * fold is committed atomically (fold_adapter), so a directory present in
     * the cache is complete. The folded checkpoint carries the base's
     * companion files (config, tokenizer), for merges that copy them.
     */
    class fold_cache
    {
    public:
        /**
         * A cache in `directory`. With `temporary`, the directory must not
         * exist yet; it is created on the first fold and removed, with
         * everything in it, by the destructor.
         */
        fold_cache(std::string directory, bool temporary, fold_cache_options options = {});
        fold_cache(const fold_cache&) = delete;
        fold_cache& operator=(const fold_cache&) = delete;
        ~fold_cache();

        /**
         * The checkpoint directory of `model_path` with the adapter at
         * `adapter_path` folded in, folding it now unless the cache holds it.
         * Throws io_error naming the adapter file and tensor for an adapter
         * that does not fit the model.
         */
        std::string folded(const std::string& model_path, const std::string& adapter_path);

        /// Folds made by this object (not those found in the cache).
        std::size_t folds() const noexcept { return m_folds; }
        const std::string& directory() const noexcept { return m_directory; }

    private:
        std::string entry_name(const std::string& model_path, const std::string& adapter_path) const;

        std::string m_directory;
        bool m_temporary;
        fold_cache_options m_options;
        std::size_t m_folds = 0;
        std::map<std::string, std::string> m_done;
    };

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        // With its terminating NUL, so that ("ab", "c") and ("a", "bc") differ.
        inline void hash_text(xmerge::detail::fnv1a& h, const std::string& s) noexcept { h.bytes(s.c_str(), s.size() + 1); }

        /// Size and modification time of every regular file directly in `path` (or of `path` itself).
        inline void hash_files(xmerge::detail::fnv1a& h, const std::filesystem::path& path)
        {
            namespace fs = std::filesystem;
            std::error_code ec;
            auto stamp = [&h](const fs::path& p)
            {
                std::error_code e;
                const auto size = fs::file_size(p, e);
                const auto time = fs::last_write_time(p, e).time_since_epoch().count();
                xmerge::lora::detail::hash_text(h, p.filename().string());
                h.bytes(&size, sizeof size);
                h.bytes(&time, sizeof time);
            };
            if (!fs::is_directory(path, ec))
            {
                stamp(path);
                return;
            }
            std::map<std::string, fs::path> files;  // sorted: the hash must not depend on directory order
            for (const auto& e : fs::directory_iterator(path, ec))
            {
                if (e.is_regular_file(ec))
                {
                    files.emplace(e.path().filename().string(), e.path());
                }
            }
            for (const auto& [name, p] : files)
            {
                stamp(p);
            }
        }

        inline std::string path_label(const std::string& path)
        {
            std::string s = std::filesystem::path(path).lexically_normal().filename().string();
            if (s.empty())
            {
                s = std::filesystem::path(path).lexically_normal().parent_path().filename().string();
            }
            for (char& c : s)
            {
                const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
                c = plain ? c : '_';
            }
            return s.empty() ? std::string("model") : s;
        }
    }

    inline fold_cache::fold_cache(std::string directory, bool temporary, fold_cache_options options)
        : m_directory(std::move(directory))
        , m_temporary(temporary)
        , m_options(std::move(options))
    {
        std::error_code ec;
        if (m_temporary && std::filesystem::exists(m_directory, ec))
        {
            throw io_error(m_directory, "", "the temporary directory for folded adapters exists already");
        }
    }

    inline fold_cache::~fold_cache()
    {
        if (m_temporary)
        {
            std::error_code ec;
            std::filesystem::remove_all(m_directory, ec);
        }
    }

    inline std::string fold_cache::entry_name(const std::string& model_path, const std::string& adapter_path) const
    {
        namespace fs = std::filesystem;
        std::error_code ec;
        xmerge::detail::fnv1a h;
        for (const std::string* p : {&model_path, &adapter_path})
        {
            const fs::path absolute = fs::weakly_canonical(fs::absolute(*p), ec);
            xmerge::lora::detail::hash_text(h, absolute.string());
            xmerge::lora::detail::hash_files(h, absolute);
        }
        xmerge::lora::detail::hash_text(h, m_options.out_dtype ? std::string(io::safetensors_name(*m_options.out_dtype)) : "base");
        char hex[17];
        std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h.value()));
        return xmerge::lora::detail::path_label(model_path) + "+" + xmerge::lora::detail::path_label(adapter_path) + "-" + hex;
    }

    inline std::string fold_cache::folded(const std::string& model_path, const std::string& adapter_path)
    {
        namespace fs = std::filesystem;
        const std::string name = entry_name(model_path, adapter_path);
        const auto known = m_done.find(name);
        if (known != m_done.end())
        {
            return known->second;
        }
        const std::string out = (fs::path(m_directory) / name).string();
        std::error_code ec;
        if (!fs::exists(out, ec))
        {
            const model base = model::open(model_path);
            const adapter a = adapter::open(adapter_path);
            merge_options o;
            o.threads = m_options.threads;
            o.out_dtype = m_options.out_dtype;
            o.progress = m_options.progress;
            o.output.metadata = base.metadata();
            for (const std::string& file : io::companion_files(model_path))
            {
                o.files.emplace_back((fs::path(model_path) / file).string(), file);
            }
            fs::create_directories(m_directory, ec);
            if (ec)
            {
                throw io_error(m_directory, "", "cannot create the directory for folded adapters: " + ec.message());
            }
            xmerge::lora::fold_adapter(base, a, out, o);
            ++m_folds;
        }
        m_done.emplace(name, out);
        return out;
    }
}

#endif
