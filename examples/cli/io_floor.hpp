// The I/O floor of a merge: the time to read every input file and to write
// one file of the output's size with plain read()/write(), and nothing else.
#ifndef XMERGE_CLI_IO_FLOOR_HPP
#define XMERGE_CLI_IO_FLOOR_HPP

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

namespace xmerge_cli
{
    struct floor_result
    {
        std::uint64_t read_bytes = 0;
        std::uint64_t write_bytes = 0;
        double read_seconds = 0.0;
        double write_seconds = 0.0;
    };

    /// Every regular file named *.safetensors under the given files or directories.
    inline std::vector<std::string> safetensors_files(const std::vector<std::string>& paths)
    {
        namespace fs = std::filesystem;
        std::vector<std::string> out;
        for (const auto& p : paths)
        {
            if (fs::is_directory(p))
            {
                for (const auto& e : fs::recursive_directory_iterator(p))
                {
                    if (e.is_regular_file() && e.path().extension() == ".safetensors")
                    {
                        out.push_back(e.path().string());
                    }
                }
            }
            else
            {
                out.push_back(p);
            }
        }
        return out;
    }

    inline floor_result io_floor(const std::vector<std::string>& inputs, const std::string& out_path, std::uint64_t write_bytes, std::size_t threads)
    {
        using clock = std::chrono::steady_clock;
        threads = std::max<std::size_t>(1, threads);
        floor_result r;
        const std::vector<std::string> files = safetensors_files(inputs);
        constexpr std::size_t block = 4u << 20;

        std::atomic<std::size_t> next{0};
        std::atomic<std::uint64_t> read_total{0};
        std::atomic<bool> failed{false};
        auto t0 = clock::now();
        std::vector<std::thread> pool;
        for (std::size_t t = 0; t < threads; ++t)
        {
            pool.emplace_back([&]
            {
                std::vector<char> buf(block);
                for (std::size_t i = next++; i < files.size(); i = next++)
                {
                    const int fd = ::open(files[i].c_str(), O_RDONLY | O_CLOEXEC);
                    if (fd < 0)
                    {
                        failed = true;
                        return;
                    }
                    ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
                    for (;;)
                    {
                        const ssize_t n = ::read(fd, buf.data(), buf.size());
                        if (n <= 0)
                        {
                            break;
                        }
                        read_total += static_cast<std::uint64_t>(n);
                    }
                    ::close(fd);
                }
            });
        }
        for (auto& t : pool)
        {
            t.join();
        }
        r.read_seconds = std::chrono::duration<double>(clock::now() - t0).count();
        r.read_bytes = read_total;
        if (failed)
        {
            throw std::runtime_error("cannot read an input file");
        }

        const int fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
        {
            throw std::runtime_error("cannot create " + out_path);
        }
        t0 = clock::now();
        pool.clear();
        const std::uint64_t per = (write_bytes + threads - 1) / threads;
        for (std::size_t t = 0; t < threads; ++t)
        {
            pool.emplace_back([&, t]
            {
                std::vector<char> buf(block, 0x3c);
                const std::uint64_t begin = std::min<std::uint64_t>(write_bytes, t * per), end = std::min<std::uint64_t>(write_bytes, begin + per);
                for (std::uint64_t off = begin; off < end;)
                {
                    const std::size_t len = static_cast<std::size_t>(std::min<std::uint64_t>(block, end - off));
                    const ssize_t n = ::pwrite(fd, buf.data(), len, static_cast<off_t>(off));
                    if (n <= 0)
                    {
                        failed = true;
                        return;
                    }
                    off += static_cast<std::uint64_t>(n);
                }
            });
        }
        for (auto& t : pool)
        {
            t.join();
        }
        r.write_seconds = std::chrono::duration<double>(clock::now() - t0).count();
        r.write_bytes = write_bytes;
        ::close(fd);
        ::unlink(out_path.c_str());
        if (failed)
        {
            throw std::runtime_error("cannot write " + out_path);
        }
        return r;
    }
}

#endif
