// Helpers for the I/O, model and recipe tests: scratch directories and raw files.
#ifndef XMERGE_TEST_IO_SUPPORT_HPP
#define XMERGE_TEST_IO_SUPPORT_HPP

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <xmerge/model/model.hpp>
#include <xmerge/simd/convert.hpp>

namespace xmerge_test
{
    /// A fresh directory under the system's temporary directory, removed at scope exit.
    class scratch_dir
    {
    public:
        scratch_dir()
        {
            static std::atomic<int> counter{0};
            m_path = std::filesystem::temp_directory_path() / ("xmerge-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
            std::filesystem::remove_all(m_path);
            std::filesystem::create_directories(m_path);
        }
        ~scratch_dir()
        {
            std::error_code ec;
            std::filesystem::remove_all(m_path, ec);
        }
        scratch_dir(const scratch_dir&) = delete;
        scratch_dir& operator=(const scratch_dir&) = delete;

        std::string operator/(const std::string& name) const { return (m_path / name).string(); }
        const std::filesystem::path& path() const { return m_path; }

        /// Names of the entries, hidden ones included, sorted.
        std::vector<std::string> entries() const
        {
            std::vector<std::string> out;
            for (const auto& e : std::filesystem::directory_iterator(m_path))
            {
                out.push_back(e.path().filename().string());
            }
            std::sort(out.begin(), out.end());
            return out;
        }

    private:
        std::filesystem::path m_path;
    };

    inline void write_bytes(const std::string& path, const std::string& bytes)
    {
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }

    inline std::string read_bytes(const std::string& path)
    {
        std::ifstream in(path, std::ios::binary);
        return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }

    /// The elements of a model's tensor widened to float32, whatever its float dtype.
    inline std::vector<float> float_values(const xmerge::model_tensor& t)
    {
        const xmerge::const_tensor_ref r = t.ref();
        std::vector<float> v(r.size());
        xmerge::simd::load_as_float(r.type(), r.data(), 0, v.size(), v.data());
        return v;
    }

    /// A safetensors file image: the length field, the header text as given, then `data`.
    inline std::string safetensors_image(const std::string& header, const std::string& data)
    {
        std::string out(8, '\0');
        const std::uint64_t n = header.size();
        for (int i = 0; i < 8; ++i)
        {
            out[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
        }
        return out + header + data;
    }
}

#endif
