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
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
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

    /// Everything a safetensors header says, validated against the file size.
    struct safetensors_header
    {
        /// Tensors in data-offset order.
        std::vector<tensor_info> tensors;
        std::map<std::string, std::string> metadata;
        /// Offset of the data section in the file (8 + header length).
        std::size_t data_offset = 0;
        std::size_t data_size = 0;
    };

    /// Bits per element of a safetensors dtype name (4 for F4, 6 for F6_*); 0 when unknown.
    inline std::size_t dtype_bits(const std::string& dtype) noexcept;

    /// Bytes per element of a safetensors dtype name; 0 when unknown or narrower than a byte.
    inline std::size_t dtype_size(const std::string& dtype) noexcept;

    /// Bytes taken by `count` elements of `dtype`; false when unknown, on overflow, or when
    /// a sub-byte dtype does not end on a byte boundary.
    inline bool storage_bytes(const std::string& dtype, std::size_t count, std::size_t& bytes) noexcept;

    /// The engine dtype of a safetensors dtype name, if it has one (F32, BF16, F16).
    inline bool to_dtype(const std::string& name, dtype& out) noexcept;

    /// True for the dtypes the engine computes with: F32, BF16, F16.
    inline bool is_arithmetic(const std::string& name) noexcept;

    /// The safetensors name of an engine dtype.
    inline const char* safetensors_name(dtype t) noexcept;

    /**
     * Parses and validates the header of a whole safetensors file held in
     * `bytes` (only the header is read; the size bounds the byte ranges).
     *
     * Checks: the length field against the size and max_header_size, valid
     * UTF-8 JSON holding an object, a string-to-string `__metadata__`, for
     * every tensor a known dtype, non-negative integer shape and offsets,
     * shape x dtype size equal to its byte range, and byte ranges that tile
     * the data section exactly (no overlap, gap or unclaimed trailing bytes).
     * Any violation throws io_error naming `origin` and the tensor at fault.
     */
    inline safetensors_header parse_header(const std::uint8_t* bytes, std::size_t size, const std::string& origin);

    /**
     * An open, validated safetensors file.
     *
     * Opening maps the file and checks the whole header (see parse_header).
     * No tensor byte is read on open; pages are loaded as tensors are used.
     */
    class safetensors_file
    {
    public:
        explicit safetensors_file(std::string path);

        const std::string& path() const noexcept { return m_file.path(); }
        /// Tensors in data-offset order.
        const std::vector<tensor_info>& tensors() const noexcept { return m_header.tensors; }
        /// The `__metadata__` entries.
        const std::map<std::string, std::string>& metadata() const noexcept { return m_header.metadata; }

        bool contains(const std::string& name) const noexcept { return m_index.count(name) != 0; }
        /// Throws io_error when the tensor is absent.
        const tensor_info& info(const std::string& name) const;

        /// Zero-copy reference to a F32, BF16 or F16 tensor, named after it.
        const_tensor_ref tensor(const std::string& name) const;
        /// The bytes of any tensor (info(name).bytes() of them).
        const std::uint8_t* raw(const std::string& name) const;

        /// Lets the kernel drop the tensor's pages from this process (they stay in the page cache).
        void release(const std::string& name) const noexcept;

        /**
         * Throws io_error, naming the file and the tensor, if a read found the
         * file shorter than when it was opened (the bytes read were not the
         * file's); with `identity`, also if the file on disk is no longer the
         * one opened (replaced, resized or modified). Reading a changed file
         * never crashes; this says whether what was read can be trusted.
         */
        void check_unchanged(bool identity = true) const;

        const mapped_file& file() const noexcept { return m_file; }
        /// Offset of the data section in the file.
        std::size_t data_offset() const noexcept { return m_header.data_offset; }

    private:
        [[noreturn]] void fail(const std::string& tensor, const std::string& reason) const;

        mapped_file m_file;
        safetensors_header m_header;
        const std::uint8_t* m_data = nullptr;
        std::unordered_map<std::string, std::size_t> m_index;
        // Tensors that a non-conforming writer left misaligned for their element type get an
        // aligned copy on first typed access (never the whole file).
        mutable std::mutex m_copies_mutex;
        mutable std::unordered_map<std::string, std::unique_ptr<std::uint64_t[]>> m_copies;
    };

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        struct dtype_entry
        {
            const char* name;
            std::size_t bits;
        };

        // Every dtype of the safetensors format.
        inline const dtype_entry* find_dtype(const std::string& d) noexcept
        {
            static const dtype_entry table[] = {{"BOOL", 8},     {"U8", 8},          {"I8", 8},          {"F8_E5M2", 8},  {"F8_E4M3", 8},
                                                {"F8_E8M0", 8},  {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8}, {"F4", 4},       {"F6_E2M3", 6},
                                                {"F6_E3M2", 6},  {"I16", 16},        {"U16", 16},        {"F16", 16},     {"BF16", 16},
                                                {"I32", 32},     {"U32", 32},        {"F32", 32},        {"F64", 64},     {"I64", 64},
                                                {"U64", 64},     {"C64", 64}};
            for (const auto& e : table)
            {
                if (d == e.name)
                {
                    return &e;
                }
            }
            return nullptr;
        }

        inline bool checked_mul(std::size_t a, std::size_t b, std::size_t& out) noexcept
        {
            if (a != 0 && b > std::numeric_limits<std::size_t>::max() / a)
            {
                return false;
            }
            out = a * b;
            return true;
        }

        inline bool as_size(const nlohmann::json& j, std::size_t& out) noexcept
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

        [[noreturn]] inline void header_fail(const std::string& origin, const std::string& tensor, const std::string& reason)
        {
            throw io_error(origin, tensor, reason);
        }

        inline tensor_info parse_entry(const std::string& origin, const std::string& name, const nlohmann::json& value, std::size_t data_size)
        {
            if (!value.is_object())
            {
                header_fail(origin, name, "header entry is not an object");
            }
            tensor_info t;
            t.name = name;
            const auto dt = value.find("dtype");
            if (dt == value.end() || !dt->is_string())
            {
                header_fail(origin, name, "missing or non-string dtype");
            }
            t.dtype = dt->get<std::string>();
            if (dtype_bits(t.dtype) == 0)
            {
                header_fail(origin, name, "unknown dtype '" + t.dtype + "'");
            }
            const auto sh = value.find("shape");
            if (sh == value.end() || !sh->is_array())
            {
                header_fail(origin, name, "missing or non-array shape");
            }
            std::size_t count = 1;
            for (const auto& d : *sh)
            {
                std::size_t extent = 0;
                if (!as_size(d, extent))
                {
                    header_fail(origin, name, "shape holds a value that is not a non-negative integer");
                }
                t.shape.push_back(extent);
                if (!checked_mul(count, extent, count))
                {
                    header_fail(origin, name, "element count of shape " + to_string(t.shape) + " overflows");
                }
            }
            const auto off = value.find("data_offsets");
            if (off == value.end() || !off->is_array() || off->size() != 2 || !as_size((*off)[0], t.begin) || !as_size((*off)[1], t.end))
            {
                header_fail(origin, name, "data_offsets must be two non-negative integers");
            }
            if (t.end < t.begin)
            {
                header_fail(origin, name, "data_offsets end " + std::to_string(t.end) + " is before begin " + std::to_string(t.begin));
            }
            std::size_t bytes = 0;
            if (!storage_bytes(t.dtype, count, bytes))
            {
                header_fail(origin, name, "shape " + to_string(t.shape) + " of " + t.dtype + " does not fill a whole number of bytes");
            }
            if (bytes != t.end - t.begin)
            {
                header_fail(origin, name, "shape " + to_string(t.shape) + " of " + t.dtype + " needs " + std::to_string(bytes)
                                              + " bytes but data_offsets span " + std::to_string(t.end - t.begin));
            }
            if (t.end > data_size)
            {
                header_fail(origin, name, "data_offsets end " + std::to_string(t.end) + " is past the " + std::to_string(data_size) + " bytes of data");
            }
            return t;
        }
    }

    inline std::size_t dtype_bits(const std::string& d) noexcept
    {
        const detail::dtype_entry* e = detail::find_dtype(d);
        return e ? e->bits : 0;
    }

    inline std::size_t dtype_size(const std::string& d) noexcept
    {
        const std::size_t bits = dtype_bits(d);
        return bits % 8 == 0 ? bits / 8 : 0;
    }

    inline bool storage_bytes(const std::string& d, std::size_t count, std::size_t& bytes) noexcept
    {
        const std::size_t bits = dtype_bits(d);
        std::size_t total = 0;
        if (bits == 0 || !detail::checked_mul(count, bits, total) || total % 8 != 0)
        {
            return false;
        }
        bytes = total / 8;
        return true;
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

    inline bool is_arithmetic(const std::string& name) noexcept
    {
        dtype unused;
        return to_dtype(name, unused);
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

    inline safetensors_header parse_header(const std::uint8_t* bytes, std::size_t size, const std::string& origin)
    {
        using detail::header_fail;
        if (size < 8)
        {
            header_fail(origin, "", "file is " + std::to_string(size) + " bytes, too short for a safetensors header");
        }
        std::uint64_t header_size = 0;
        for (int i = 7; i >= 0; --i)
        {
            header_size = (header_size << 8) | bytes[i];
        }
        if (header_size > max_header_size)
        {
            header_fail(origin, "", "header length " + std::to_string(header_size) + " exceeds the limit of " + std::to_string(max_header_size) + " bytes");
        }
        if (header_size > size - 8)
        {
            header_fail(origin, "", "header length " + std::to_string(header_size) + " exceeds the " + std::to_string(size - 8) + " bytes after the length field");
        }
        safetensors_header h;
        h.data_offset = 8 + static_cast<std::size_t>(header_size);
        h.data_size = size - h.data_offset;

        const char* text = reinterpret_cast<const char*>(bytes + 8);
        // As the reference implementation: the header is a JSON object from its first byte (no byte order
        // mark, no leading space), and padding is spaces, never NUL bytes.
        if (header_size >= 3 && std::memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        {
            header_fail(origin, "", "header starts with a UTF-8 byte order mark; it must start with '{'");
        }
        if (header_size > 0 && (text[0] == ' ' || text[0] == '\t' || text[0] == '\n' || text[0] == '\r'))
        {
            header_fail(origin, "", "header starts with whitespace; it must start with '{'");
        }
        if (std::memchr(text, 0, static_cast<std::size_t>(header_size)) != nullptr)
        {
            header_fail(origin, "", "header holds a NUL byte (only spaces may pad it)");
        }

        // Each top-level entry is checked as soon as it is parsed and then dropped from the document,
        // so time and memory stay linear in the number of tensors.
        using json = nlohmann::json;
        json header;
        std::string duplicate;
        std::unique_ptr<io_error> entry_error;  // reported after syntax errors, as a whole-document check would
        std::unordered_set<std::string> keys;
        std::string key;
        auto take = [&](const json& value)
        {
            if (entry_error)
            {
                return;
            }
            try
            {
                if (key == "__metadata__")
                {
                    if (!value.is_object())
                    {
                        header_fail(origin, "", "__metadata__ is not an object of strings");
                    }
                    for (auto m = value.begin(); m != value.end(); ++m)
                    {
                        if (!m.value().is_string())
                        {
                            header_fail(origin, "", "__metadata__ entry '" + m.key() + "' is not a string");
                        }
                        h.metadata[m.key()] = m.value().get<std::string>();
                    }
                    return;
                }
                if (key.empty())
                {
                    header_fail(origin, "", "a tensor has an empty name");
                }
                h.tensors.push_back(detail::parse_entry(origin, key, value, h.data_size));
            }
            catch (const io_error& e)
            {
                entry_error = std::make_unique<io_error>(e);
            }
        };
        try
        {
            auto visit = [&](int depth, json::parse_event_t event, json& parsed)
            {
                if (depth != 1)
                {
                    return true;
                }
                switch (event)
                {
                    case json::parse_event_t::key:
                        key = parsed.get<std::string>();
                        if (!keys.insert(key).second && duplicate.empty())
                        {
                            duplicate = key;
                        }
                        return true;
                    case json::parse_event_t::object_end:
                    case json::parse_event_t::array_end:
                    case json::parse_event_t::value:
                        take(parsed);
                        return false;
                    default:
                        return true;
                }
            };
            header = json::parse(text, text + header_size, visit);
        }
        catch (const json::exception& e)
        {
            header_fail(origin, "", std::string("header is not valid JSON: ") + e.what());
        }
        if (!header.is_object())
        {
            header_fail(origin, "", "header is not a JSON object");
        }
        if (!duplicate.empty())
        {
            header_fail(origin, duplicate, "appears twice in the header");
        }
        if (entry_error)
        {
            throw *entry_error;
        }

        std::stable_sort(h.tensors.begin(), h.tensors.end(), [](const tensor_info& a, const tensor_info& b) { return a.begin < b.begin; });
        std::size_t expected = 0;
        for (std::size_t i = 0; i < h.tensors.size(); ++i)
        {
            const tensor_info& t = h.tensors[i];
            if (t.begin < expected)
            {
                header_fail(origin, t.name, "byte range [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + ") overlaps tensor '" + h.tensors[i - 1].name + "'");
            }
            if (t.begin > expected)
            {
                header_fail(origin, t.name, "gap of " + std::to_string(t.begin - expected) + " bytes before this tensor's data");
            }
            expected = t.end;
        }
        if (expected != h.data_size)
        {
            header_fail(origin, "", std::to_string(h.data_size - expected) + " bytes after the last tensor are not claimed by the header");
        }
        return h;
    }

    inline safetensors_file::safetensors_file(std::string path) : m_file(std::move(path))
    {
        m_header = parse_header(m_file.data(), m_file.size(), m_file.path());
        m_data = m_file.data() + m_header.data_offset;
        for (std::size_t i = 0; i < m_header.tensors.size(); ++i)
        {
            m_index.emplace(m_header.tensors[i].name, i);
        }
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
        return m_header.tensors[it->second];
    }

    inline const_tensor_ref safetensors_file::tensor(const std::string& name) const
    {
        const tensor_info& t = info(name);
        dtype type;
        if (!to_dtype(t.dtype, type))
        {
            fail(name, "dtype " + t.dtype + " cannot be used in arithmetic (F32, BF16 or F16 can)");
        }
        const std::uint8_t* p = m_data + t.begin;
        if (reinterpret_cast<std::uintptr_t>(p) % size_of(type) != 0)
        {
            std::lock_guard<std::mutex> lock(m_copies_mutex);
            auto& copy = m_copies[name];
            if (!copy)
            {
                copy.reset(new std::uint64_t[(t.bytes() + 7) / 8]);
                std::memcpy(copy.get(), p, t.bytes());
            }
            p = reinterpret_cast<const std::uint8_t*>(copy.get());
        }
        return const_tensor_ref(p, type, t.shape, name);
    }

    inline const std::uint8_t* safetensors_file::raw(const std::string& name) const
    {
        return m_data + info(name).begin;
    }

    inline void safetensors_file::check_unchanged(bool identity) const
    {
        const long long fault = m_file.fault_offset();
        if (fault >= 0)
        {
            // The tensor whose bytes hold the faulting offset.
            std::string tensor;
            const auto at = static_cast<std::size_t>(fault);
            for (const auto& t : m_header.tensors)
            {
                if (at >= m_header.data_offset + t.begin && at < m_header.data_offset + t.end)
                {
                    tensor = t.name;
                    break;
                }
            }
            fail(tensor, "the file shrank while it was being read (truncated or rewritten by another program); byte " + std::to_string(at)
                             + " of the " + std::to_string(m_file.size()) + " it had when opened was gone; nothing was written");
        }
        if (identity)
        {
            const std::string why = m_file.changed();
            if (!why.empty())
            {
                fail("", why + " while it was being read; a result mixing two versions of it is refused, nothing was written");
            }
        }
    }

    inline void safetensors_file::release(const std::string& name) const noexcept
    {
        const auto it = m_index.find(name);
        if (it == m_index.end())
        {
            return;
        }
        const tensor_info& t = m_header.tensors[it->second];
        m_file.advise_done(m_header.data_offset + t.begin, t.bytes());
        std::lock_guard<std::mutex> lock(m_copies_mutex);
        m_copies.erase(name);
    }
}

#endif
