/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_IO_SAFETENSORS_WRITER_HPP
#define XMERGE_IO_SAFETENSORS_WRITER_HPP

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../core/tensor_ref.hpp"
#include "output_file.hpp"
#include "safetensors.hpp"

/**
 * @file
 * Writing one safetensors file: the layout (header and byte ranges) is
 * fixed first from the tensors' names, dtypes and shapes; tensor bytes are
 * then produced one tensor at a time straight into the file.
 */

namespace xmerge::io
{
    /**
     * Assigns byte ranges to `tensors` (name, dtype, shape) and returns the
     * file's first bytes: the 8-byte length and the JSON header, padded with
     * spaces so that the data section starts 8-byte aligned.
     *
     * Tensors keep their order, except that wider dtypes are placed first so
     * that every tensor is aligned to its element size. Throws io_error
     * (naming `origin`) for an empty, reserved or repeated name, an unknown
     * dtype, or a shape whose byte count overflows.
     */
    inline std::string layout_header(std::vector<tensor_info>& tensors, const std::map<std::string, std::string>& metadata, const std::string& origin = {});

    namespace detail
    {
        /// Bytes of tensor `t`'s data; io_error naming `origin` and the tensor for an unknown dtype or an overflowing shape.
        inline std::size_t checked_tensor_bytes(const tensor_info& t, const std::string& origin);
    }

    /// Options of safetensors_writer.
    struct writer_options
    {
        /// Write to "<path>.partial-<pid>-<n>" and rename to path on commit().
        bool temporary_name = true;
        /// Flush data and metadata to the device before commit() returns.
        bool sync = false;
    };

    /**
     * One safetensors file written tensor by tensor, in any order.
     *
     * Each tensor's bytes are written in place (data(), tensor()) or copied
     * (write()), then marked with finish(), which also starts writing them
     * back and releases them from this process. commit() checks that every
     * tensor was finished and makes the file appear under its name; a writer
     * destroyed before commit() leaves no file behind.
     */
    class safetensors_writer
    {
    public:
        safetensors_writer(std::string path, std::vector<tensor_info> tensors, const std::map<std::string, std::string>& metadata = {},
                           writer_options options = {});

        safetensors_writer(safetensors_writer&&) = default;
        safetensors_writer& operator=(safetensors_writer&&) = default;

        const std::string& path() const noexcept { return m_path; }
        /// Layout in file order, with byte ranges.
        const std::vector<tensor_info>& tensors() const noexcept { return m_tensors; }
        bool contains(const std::string& name) const noexcept { return m_index.count(name) != 0; }
        const tensor_info& info(const std::string& name) const;
        /// Total file size in bytes.
        std::size_t size() const noexcept { return m_file.size(); }

        /// Writable bytes of a tensor.
        std::uint8_t* data(const std::string& name);
        /// Writable reference to a F32, BF16 or F16 tensor, for evaluate().
        tensor_ref tensor(const std::string& name);
        /// Copies exactly info(name).bytes() bytes.
        void write(const std::string& name, const void* bytes, std::size_t n);
        /// Marks the tensor complete.
        void finish(const std::string& name);

        /// Throws io_error naming the first unfinished tensor, else closes and renames into place.
        void commit();
        bool committed() const noexcept { return m_committed; }

    private:
        std::size_t index_of(const std::string& name) const;

        std::string m_path;
        writer_options m_options;
        std::vector<tensor_info> m_tensors;
        std::unordered_map<std::string, std::size_t> m_index;
        std::vector<bool> m_finished;
        std::size_t m_data_offset = 0;
        output_file m_file;
        bool m_committed = false;
    };

    /// Writes in-memory tensors to a safetensors file in one call (tests, small files).
    inline void save_safetensors(const std::string& path, const std::vector<std::pair<tensor_info, const void*>>& tensors,
                                 const std::map<std::string, std::string>& metadata = {}, writer_options options = {});

    /// Writes F32/BF16/F16 tensor references to a safetensors file, named after the references.
    inline void save_safetensors(const std::string& path, const std::vector<const_tensor_ref>& tensors,
                                 const std::map<std::string, std::string>& metadata = {}, writer_options options = {});

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        inline std::size_t checked_tensor_bytes(const tensor_info& t, const std::string& origin)
        {
            std::size_t count = 1;
            for (std::size_t extent : t.shape)
            {
                if (!detail::checked_mul(count, extent, count))
                {
                    throw io_error(origin, t.name, "element count of shape " + to_string(t.shape) + " overflows");
                }
            }
            std::size_t bytes = 0;
            if (!storage_bytes(t.dtype, count, bytes))
            {
                throw io_error(origin, t.name, "dtype '" + t.dtype + "' is unknown or shape " + to_string(t.shape) + " does not fill whole bytes");
            }
            return bytes;
        }
    }

    inline std::string layout_header(std::vector<tensor_info>& tensors, const std::map<std::string, std::string>& metadata, const std::string& origin)
    {
        std::stable_sort(tensors.begin(), tensors.end(), [](const tensor_info& a, const tensor_info& b) { return dtype_bits(a.dtype) > dtype_bits(b.dtype); });
        nlohmann::ordered_json header = nlohmann::ordered_json::object();
        if (!metadata.empty())
        {
            header["__metadata__"] = metadata;
        }
        std::size_t offset = 0;
        for (auto& t : tensors)
        {
            if (t.name.empty() || t.name == "__metadata__")
            {
                throw io_error(origin, t.name, "is not a valid tensor name");
            }
            if (header.contains(t.name))
            {
                throw io_error(origin, t.name, "appears twice in the layout");
            }
            t.begin = offset;
            t.end = offset + detail::checked_tensor_bytes(t, origin);
            offset = t.end;
            header[t.name] = {{"dtype", t.dtype}, {"shape", std::vector<std::size_t>(t.shape.begin(), t.shape.end())}, {"data_offsets", {t.begin, t.end}}};
        }
        std::string text = header.dump();
        text.append((8 - text.size() % 8) % 8, ' ');
        std::string out(8, '\0');
        std::uint64_t n = text.size();
        for (int i = 0; i < 8; ++i)
        {
            out[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xffu);
        }
        if (text.size() > max_header_size)
        {
            throw io_error(origin, "", "header of " + std::to_string(text.size()) + " bytes exceeds the format's limit of " + std::to_string(max_header_size));
        }
        return out + text;
    }

    inline safetensors_writer::safetensors_writer(std::string path, std::vector<tensor_info> tensors, const std::map<std::string, std::string>& metadata,
                                                  writer_options options)
        : m_path(std::move(path))
        , m_options(options)
        , m_tensors(std::move(tensors))
    {
        const std::string header = layout_header(m_tensors, metadata, m_path);
        m_data_offset = header.size();
        const std::size_t data_size = m_tensors.empty() ? 0 : m_tensors.back().end;
        for (std::size_t i = 0; i < m_tensors.size(); ++i)
        {
            m_index.emplace(m_tensors[i].name, i);
        }
        m_finished.assign(m_tensors.size(), false);
        const std::string target = m_options.temporary_name ? m_path + ".partial-" + detail::unique_suffix() : m_path;
        m_file = output_file(target, m_data_offset + data_size);
        std::memcpy(m_file.data(), header.data(), header.size());
    }

    inline std::size_t safetensors_writer::index_of(const std::string& name) const
    {
        const auto it = m_index.find(name);
        if (it == m_index.end())
        {
            throw io_error(m_path, name, "is not part of this file's layout");
        }
        if (m_committed)
        {
            throw io_error(m_path, name, "written after commit");
        }
        return it->second;
    }

    inline const tensor_info& safetensors_writer::info(const std::string& name) const
    {
        return m_tensors[index_of(name)];
    }

    inline std::uint8_t* safetensors_writer::data(const std::string& name)
    {
        return m_file.data() + m_data_offset + m_tensors[index_of(name)].begin;
    }

    inline tensor_ref safetensors_writer::tensor(const std::string& name)
    {
        const tensor_info& t = m_tensors[index_of(name)];
        dtype type;
        if (!to_dtype(t.dtype, type))
        {
            throw io_error(m_path, name, "dtype " + t.dtype + " cannot be written by arithmetic (F32, BF16 or F16 can)");
        }
        return tensor_ref(m_file.data() + m_data_offset + t.begin, type, t.shape, name);
    }

    inline void safetensors_writer::write(const std::string& name, const void* bytes, std::size_t n)
    {
        const tensor_info& t = m_tensors[index_of(name)];
        if (n != t.bytes())
        {
            throw io_error(m_path, name, "got " + std::to_string(n) + " bytes for a tensor of " + std::to_string(t.bytes()));
        }
        if (n > 0)
        {
            std::memcpy(m_file.data() + m_data_offset + t.begin, bytes, n);
        }
    }

    inline void safetensors_writer::finish(const std::string& name)
    {
        const std::size_t i = index_of(name);
        m_finished[i] = true;
        m_file.flush_range(m_data_offset + m_tensors[i].begin, m_tensors[i].bytes());
    }

    inline void safetensors_writer::commit()
    {
        if (m_committed)
        {
            throw io_error(m_path, "", "committed twice");
        }
        for (std::size_t i = 0; i < m_tensors.size(); ++i)
        {
            if (!m_finished[i])
            {
                throw io_error(m_path, m_tensors[i].name, "was never written; the file is incomplete and was not saved");
            }
        }
        const std::string written = m_file.path();
        m_file.close(m_options.sync);
        if (m_options.temporary_name && std::rename(written.c_str(), m_path.c_str()) != 0)
        {
            const int e = errno;
            std::remove(written.c_str());
            throw io_error(m_path, "", std::string("cannot rename the finished file into place: ") + std::strerror(e));
        }
        m_committed = true;
    }

    inline void save_safetensors(const std::string& path, const std::vector<std::pair<tensor_info, const void*>>& tensors,
                                 const std::map<std::string, std::string>& metadata, writer_options options)
    {
        std::vector<tensor_info> layout;
        for (const auto& [info, _] : tensors)
        {
            layout.push_back(info);
        }
        safetensors_writer w(path, std::move(layout), metadata, options);
        for (const auto& [info, bytes] : tensors)
        {
            w.write(info.name, bytes, w.info(info.name).bytes());
            w.finish(info.name);
        }
        w.commit();
    }

    inline void save_safetensors(const std::string& path, const std::vector<const_tensor_ref>& tensors, const std::map<std::string, std::string>& metadata,
                                 writer_options options)
    {
        std::vector<std::pair<tensor_info, const void*>> list;
        for (const auto& t : tensors)
        {
            tensor_info info;
            info.name = t.name();
            info.dtype = safetensors_name(t.type());
            info.shape = t.shape();
            list.emplace_back(std::move(info), t.data());
        }
        save_safetensors(path, list, metadata, options);
    }
}

#endif
