/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_IO_SAFETENSORS_HPP
#define XMERGE_IO_SAFETENSORS_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../core/tensor_ref.hpp"
#include "mapped_file.hpp"

/**
 * @file
 * Reading safetensors files: an 8-byte little-endian header length, a JSON
 * header mapping tensor names to dtype, shape and byte range, then the
 * tensor bytes. Tensors are served zero-copy from a memory mapping.
 */

namespace xmerge::io
{
    /// Largest header accepted (the reference implementation's limit).
    constexpr std::size_t max_header_size = 100u * 1024u * 1024u;

    /// Where a tensor lies in a safetensors file and what it holds.
    struct tensor_info
    {
        std::string name;
        std::string dtype;  ///< safetensors dtype name: "F32", "BF16", "I64", ...
        shape_type shape;
        std::size_t begin = 0;  ///< byte offset in the data section
        std::size_t end = 0;

        std::size_t bytes() const noexcept { return end - begin; }
    };

    /// Bytes per element of a safetensors dtype name; 0 when unknown.
    inline std::size_t dtype_size(const std::string& dtype) noexcept;

    /// The engine dtype of a safetensors dtype name, if it has one (F32, BF16, F16).
    inline bool to_dtype(const std::string& name, dtype& out) noexcept;

    /// The safetensors name of an engine dtype.
    inline const char* safetensors_name(dtype t) noexcept;

    /**
     * An open, validated safetensors file.
     *
     * Opening checks the whole header: its length against the file, valid
     * JSON, known dtypes, shape x dtype size equal to each byte range, and
     * byte ranges that exactly tile the data section (no overlap, gap or
     * trailing bytes). Any violation throws io_error naming the file and,
     * where one is at fault, the tensor. No tensor byte is read on open.
     */
    class safetensors_file
    {
    public:
        explicit safetensors_file(std::string path);

        const std::string& path() const noexcept { return m_file.path(); }
        /// Tensors in data-offset order.
        const std::vector<tensor_info>& tensors() const noexcept { return m_tensors; }
        const std::map<std::string, std::string>& metadata() const noexcept { return m_metadata; }

        bool contains(const std::string& name) const noexcept { return m_index.count(name) != 0; }
        /// Throws io_error when the tensor is absent.
        const tensor_info& info(const std::string& name) const;

        /// Zero-copy reference to a F32, BF16 or F16 tensor, named after it.
        const_tensor_ref tensor(const std::string& name) const;
        /// The bytes of any tensor.
        const std::uint8_t* raw(const std::string& name) const;

        const mapped_file& file() const noexcept { return m_file; }
        /// Offset of the data section in the file.
        std::size_t data_offset() const noexcept { return m_data_offset; }

    private:
        void parse_header();
        [[noreturn]] void fail(const std::string& tensor, const std::string& reason) const;

        mapped_file m_file;
        std::size_t m_data_offset = 0;
        const std::uint8_t* m_data = nullptr;  // data section (aligned copy when the file's is not)
        std::vector<std::uint64_t> m_aligned_copy;
        std::vector<tensor_info> m_tensors;
        std::unordered_map<std::string, std::size_t> m_index;
        std::map<std::string, std::string> m_metadata;
    };

    /********************
     * Implementation   *
     ********************/

    inline std::size_t dtype_size(const std::string& d) noexcept
    {
        static const std::pair<const char*, std::size_t> sizes[] = {
            {"BOOL", 1}, {"U8", 1}, {"I8", 1}, {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"F8_E8M0", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2},
            {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4}, {"F64", 8}, {"I64", 8}, {"U64", 8}, {"C64", 8}};
        for (const auto& [name, size] : sizes)
        {
            if (d == name)
            {
                return size;
            }
        }
        return 0;
    }

    inline bool to_dtype(const std::string& name, dtype& out) noexcept
    {
        if (name == "F32")
        {
            out = dtype::float32;
        }
        else if (name == "BF16")
        {
            out = dtype::bfloat16;
        }
        else if (name == "F16")
        {
            out = dtype::float16;
        }
        else
        {
            return false;
        }
        return true;
    }

    inline const char* safetensors_name(dtype t) noexcept
    {
        switch (t)
        {
            case dtype::float32:
                return "F32";
            case dtype::bfloat16:
                return "BF16";
            case dtype::float16:
                return "F16";
        }
        return "F32";
    }

    inline safetensors_file::safetensors_file(std::string path) : m_file(std::move(path))
    {
        parse_header();
    }

    inline void safetensors_file::fail(const std::string& tensor, const std::string& reason) const
    {
        throw io_error(m_file.path(), tensor, reason);
    }

    inline const tensor_info& safetensors_file::info(const std::string& name) const
    {
        const auto it = m_index.find(name);
        if (it == m_index.end())
        {
            fail(name, "no such tensor");
        }
        return m_tensors[it->second];
    }

    inline const_tensor_ref safetensors_file::tensor(const std::string& name) const
    {
        const tensor_info& t = info(name);
        dtype type;
        if (!to_dtype(t.dtype, type))
        {
            fail(name, "dtype " + t.dtype + " cannot be used in arithmetic (F32, BF16 or F16 can)");
        }
        return const_tensor_ref(m_data + t.begin, type, t.shape, name);
    }

    inline const std::uint8_t* safetensors_file::raw(const std::string& name) const
    {
        return m_data + info(name).begin;
    }

    namespace detail
    {
        inline bool checked_mul(std::size_t a, std::size_t b, std::size_t& out) noexcept
        {
            if (a != 0 && b > std::numeric_limits<std::size_t>::max() / a)
            {
                return false;
            }
            out = a * b;
            return true;
        }

        inline bool as_size(const nlohmann::ordered_json& j, std::size_t& out) noexcept
        {
            if (j.is_number_unsigned())
            {
                const auto v = j.get<std::uint64_t>();
                if (v > std::numeric_limits<std::size_t>::max())
                {
                    return false;
                }
                out = static_cast<std::size_t>(v);
                return true;
            }
            if (j.is_number_integer())
            {
                const auto v = j.get<std::int64_t>();
                if (v < 0)
                {
                    return false;
                }
                out = static_cast<std::size_t>(v);
                return true;
            }
            return false;
        }
    }

    inline void safetensors_file::parse_header()
    {
        const std::size_t file_size = m_file.size();
        if (file_size < 8)
        {
            fail("", "file is " + std::to_string(file_size) + " bytes, too short for a safetensors header");
        }
        std::uint64_t header_size = 0;
        for (int i = 7; i >= 0; --i)
        {
            header_size = (header_size << 8) | m_file.data()[i];
        }
        if (header_size > max_header_size)
        {
            fail("", "header length " + std::to_string(header_size) + " exceeds the limit of " + std::to_string(max_header_size) + " bytes");
        }
        if (header_size > file_size - 8)
        {
            fail("", "header length " + std::to_string(header_size) + " exceeds the " + std::to_string(file_size - 8) + " bytes after the length field");
        }
        m_data_offset = 8 + static_cast<std::size_t>(header_size);
        const std::size_t data_size = file_size - m_data_offset;

        nlohmann::ordered_json header;
        try
        {
            const char* text = reinterpret_cast<const char*>(m_file.data() + 8);
            header = nlohmann::ordered_json::parse(text, text + header_size);
        }
        catch (const nlohmann::json::exception& e)
        {
            fail("", std::string("header is not valid JSON: ") + e.what());
        }
        if (!header.is_object())
        {
            fail("", "header is not a JSON object");
        }

        for (auto it = header.begin(); it != header.end(); ++it)
        {
            const std::string& name = it.key();
            const auto& value = it.value();
            if (name == "__metadata__")
            {
                if (!value.is_object())
                {
                    fail("", "__metadata__ is not an object of strings");
                }
                for (auto m = value.begin(); m != value.end(); ++m)
                {
                    if (!m.value().is_string())
                    {
                        fail("", "__metadata__ entry '" + m.key() + "' is not a string");
                    }
                    m_metadata[m.key()] = m.value().get<std::string>();
                }
                continue;
            }
            if (!value.is_object())
            {
                fail(name, "header entry is not an object");
            }
            tensor_info t;
            t.name = name;
            const auto dt = value.find("dtype");
            if (dt == value.end() || !dt->is_string())
            {
                fail(name, "missing or non-string dtype");
            }
            t.dtype = dt->get<std::string>();
            const std::size_t elem = dtype_size(t.dtype);
            if (elem == 0)
            {
                fail(name, "unknown dtype '" + t.dtype + "'");
            }
            const auto sh = value.find("shape");
            if (sh == value.end() || !sh->is_array())
            {
                fail(name, "missing or non-array shape");
            }
            std::size_t count = 1;
            for (const auto& d : *sh)
            {
                std::size_t extent = 0;
                if (!detail::as_size(d, extent))
                {
                    fail(name, "shape holds a value that is not a non-negative integer");
                }
                t.shape.push_back(extent);
                if (!detail::checked_mul(count, extent, count))
                {
                    fail(name, "element count overflows");
                }
            }
            const auto off = value.find("data_offsets");
            if (off == value.end() || !off->is_array() || off->size() != 2 || !detail::as_size((*off)[0], t.begin)
                || !detail::as_size((*off)[1], t.end))
            {
                fail(name, "data_offsets must be two non-negative integers");
            }
            if (t.end < t.begin)
            {
                fail(name, "data_offsets end " + std::to_string(t.end) + " is before begin " + std::to_string(t.begin));
            }
            std::size_t bytes = 0;
            if (!detail::checked_mul(count, elem, bytes) || bytes != t.end - t.begin)
            {
                fail(name, "shape " + to_string(t.shape) + " of " + t.dtype + " needs " + std::to_string(count) + " x " + std::to_string(elem)
                               + " bytes but data_offsets span " + std::to_string(t.end - t.begin));
            }
            if (t.end > data_size)
            {
                fail(name, "data_offsets end " + std::to_string(t.end) + " is past the " + std::to_string(data_size) + " bytes of data");
            }
            m_tensors.push_back(std::move(t));
        }

        std::stable_sort(m_tensors.begin(), m_tensors.end(), [](const tensor_info& a, const tensor_info& b) { return a.begin < b.begin; });
        std::size_t expected = 0;
        for (std::size_t i = 0; i < m_tensors.size(); ++i)
        {
            const tensor_info& t = m_tensors[i];
            if (t.begin < expected)
            {
                fail(t.name, "byte range [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + ") overlaps tensor '" + m_tensors[i - 1].name + "'");
            }
            if (t.begin > expected)
            {
                fail(t.name, "gap of " + std::to_string(t.begin - expected) + " bytes before this tensor's data");
            }
            expected = t.end;
            m_index.emplace(t.name, i);
        }
        if (expected != data_size)
        {
            fail("", std::to_string(data_size - expected) + " bytes after the last tensor are not claimed by the header");
        }

        m_data = m_file.data() + m_data_offset;
        if (reinterpret_cast<std::uintptr_t>(m_data) % 8 != 0 && data_size > 0)
        {
            // Headers are normally padded so tensors are aligned; keep typed access valid when they are not.
            m_aligned_copy.resize((data_size + 7) / 8);
            std::memcpy(m_aligned_copy.data(), m_data, data_size);
            m_data = reinterpret_cast<const std::uint8_t*>(m_aligned_copy.data());
        }
    }
}

#endif
