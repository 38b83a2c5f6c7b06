/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MODEL_MODEL_HPP
#define XMERGE_MODEL_MODEL_HPP

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../core/tensor_ref.hpp"
#include "../io/safetensors.hpp"
#include "../io/shard_index.hpp"

/**
 * @file
 * A model: a named collection of tensors, read lazily from one safetensors
 * file, a set of shards, or memory the caller owns.
 */

namespace xmerge
{
    /// One tensor of a model: its name, dtype, shape and where its bytes are.
    struct model_tensor
    {
        std::string name;
        /// safetensors dtype name ("BF16", "I64", ...).
        std::string dtype;
        shape_type shape;
        /// First byte; for a file, inside its memory mapping (not read until used).
        const std::uint8_t* data = nullptr;
        std::size_t bytes = 0;
        /// The file holding it; null for memory.
        const io::safetensors_file* file = nullptr;

        /// True for F32, BF16 and F16, the dtypes merges compute with.
        bool is_arithmetic() const noexcept { return io::is_arithmetic(dtype); }
        /// Reference for the engine (arithmetic dtypes only; throws io_error otherwise).
        const_tensor_ref ref() const;
        /// Where it comes from, for messages: the file path or "memory".
        std::string origin() const { return file ? file->path() : std::string("memory"); }
    };

    /**
     * A named collection of tensors.
     *
     * Opening a checkpoint maps its files and reads only the headers; tensor
     * bytes are paged in when a merge reads them and can be dropped again
     * with release(), so a model of any size costs little resident memory.
     * In-memory tensors are referenced, not copied: their memory must outlive
     * the model. A model is cheap to copy (files are shared).
     */
    class model
    {
    public:
        /// An empty in-memory model named `name` (used in messages).
        explicit model(std::string name = "memory");

        /**
         * Opens a checkpoint: a .safetensors file, a shard index, or a
         * directory holding either (see io::locate_checkpoint). Every shard
         * is validated; a tensor listed in the index must be in its shard, a
         * tensor may not appear in two shards.
         */
        static model open(const std::string& path);

        /// Adds a F32, BF16 or F16 tensor held in memory, named `name`.
        void add(const std::string& name, const const_tensor_ref& tensor);
        /// Adds any tensor held in memory as raw bytes of a safetensors dtype.
        void add_raw(const std::string& name, const std::string& dtype, const shape_type& shape, const void* bytes);

        /// The path it was opened from, or the name given.
        const std::string& name() const noexcept { return m_name; }
        /// The directory of the checkpoint (for its config and tokenizer files); empty for memory.
        const std::string& directory() const noexcept { return m_directory; }
        /// Tensors in file order (shard by shard).
        const std::vector<model_tensor>& tensors() const noexcept { return m_tensors; }
        std::size_t size() const noexcept { return m_tensors.size(); }
        bool contains(const std::string& name) const noexcept { return m_index.count(name) != 0; }
        /// Null when absent.
        const model_tensor* find(const std::string& name) const noexcept;
        /// Throws io_error naming the model when absent.
        const model_tensor& at(const std::string& name) const;
        /// Sum of the tensors' byte sizes.
        std::size_t total_bytes() const noexcept { return m_total_bytes; }
        /// `__metadata__` of the files (merged; the first file wins on conflicts).
        const std::map<std::string, std::string>& metadata() const noexcept { return m_metadata; }
        /// The safetensors files it reads.
        std::vector<std::string> files() const;

        /// Lets the kernel drop a tensor's file pages from this process (no-op for memory).
        void release(const model_tensor& t) const noexcept;

        /// Throws io_error if one of its files shrank while read or changed since opened (io::safetensors_file::check_unchanged).
        void check_unchanged() const;

    private:
        void insert(model_tensor t);

        std::string m_name;
        std::string m_directory;
        std::vector<std::shared_ptr<const io::safetensors_file>> m_files;
        std::vector<model_tensor> m_tensors;
        std::unordered_map<std::string, std::size_t> m_index;
        std::map<std::string, std::string> m_metadata;
        std::size_t m_total_bytes = 0;
    };

    /********************
     * Implementation   *
     ********************/

    inline const_tensor_ref model_tensor::ref() const
    {
        if (file != nullptr)
        {
            return file->tensor(name);
        }
        xmerge::dtype type;
        if (!io::to_dtype(dtype, type))
        {
            throw io_error(origin(), name, "dtype " + dtype + " cannot be used in arithmetic (F32, BF16 or F16 can)");
        }
        return const_tensor_ref(data, type, shape, name);
    }

    inline model::model(std::string name) : m_name(std::move(name))
    {
    }

    inline model model::open(const std::string& path)
    {
        io::checkpoint_location loc = io::locate_checkpoint(path);
        model m(path);
        const std::filesystem::path p(path);
        m.m_directory = std::filesystem::is_directory(p) ? p.string() : p.parent_path().string();
        for (const std::string& file : loc.files)
        {
            auto f = std::make_shared<const io::safetensors_file>(file);
            for (const auto& [k, v] : f->metadata())
            {
                m.m_metadata.emplace(k, v);
            }
            for (const auto& info : f->tensors())
            {
                if (!loc.index_path.empty())
                {
                    const auto it = loc.index.weight_map.find(info.name);
                    if (it == loc.index.weight_map.end())
                    {
                        throw io_error(file, info.name, "is in this shard but not in the index " + loc.index_path);
                    }
                    if ((std::filesystem::path(loc.index_path).parent_path() / it->second).string() != file)
                    {
                        continue;  // the index places it elsewhere; that shard is checked to hold it
                    }
                }
                if (m.contains(info.name))
                {
                    throw io_error(file, info.name, "also appears in " + m.at(info.name).origin());
                }
                model_tensor t;
                t.name = info.name;
                t.dtype = info.dtype;
                t.shape = info.shape;
                t.data = f->raw(info.name);
                t.bytes = info.bytes();
                t.file = f.get();
                m.insert(std::move(t));
            }
            m.m_files.push_back(std::move(f));
        }
        for (const auto& [name, file] : loc.index.weight_map)
        {
            if (!m.contains(name))
            {
                throw io_error(loc.index_path, name, "is listed in the index but missing from shard " + file);
            }
        }
        return m;
    }

    inline void model::insert(model_tensor t)
    {
        m_total_bytes += t.bytes;
        m_index.emplace(t.name, m_tensors.size());
        m_tensors.push_back(std::move(t));
    }

    inline void model::add(const std::string& name, const const_tensor_ref& tensor)
    {
        add_raw(name, io::safetensors_name(tensor.type()), tensor.shape(), tensor.data());
    }

    inline void model::add_raw(const std::string& name, const std::string& dtype, const shape_type& shape, const void* bytes)
    {
        if (name.empty())
        {
            throw io_error(m_name, name, "a tensor needs a name");
        }
        if (contains(name))
        {
            throw io_error(m_name, name, "added twice");
        }
        std::size_t size = 0;
        if (!io::storage_bytes(dtype, numel(shape), size))
        {
            throw io_error(m_name, name, "dtype '" + dtype + "' is unknown or shape " + to_string(shape) + " does not fill whole bytes");
        }
        if (bytes == nullptr && size != 0)
        {
            throw io_error(m_name, name, "null data for a tensor of shape " + to_string(shape));
        }
        model_tensor t;
        t.name = name;
        t.dtype = dtype;
        t.shape = shape;
        t.data = static_cast<const std::uint8_t*>(bytes);
        t.bytes = size;
        insert(std::move(t));
    }

    inline const model_tensor* model::find(const std::string& name) const noexcept
    {
        const auto it = m_index.find(name);
        return it == m_index.end() ? nullptr : &m_tensors[it->second];
    }

    inline const model_tensor& model::at(const std::string& name) const
    {
        const model_tensor* t = find(name);
        if (t == nullptr)
        {
            throw io_error(m_name, name, "no such tensor in this model");
        }
        return *t;
    }

    inline std::vector<std::string> model::files() const
    {
        std::vector<std::string> out;
        for (const auto& f : m_files)
        {
            out.push_back(f->path());
        }
        return out;
    }

    inline void model::check_unchanged() const
    {
        for (const auto& f : m_files)
        {
            f->check_unchanged();
        }
    }

    inline void model::release(const model_tensor& t) const noexcept
    {
        if (t.file != nullptr)
        {
            t.file->release(t.name);
        }
    }
}

#endif
