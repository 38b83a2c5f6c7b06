// A reader for the IDX files of (Fashion-)MNIST, plain or gzip-compressed.
#ifndef XMERGE_EXAMPLES_FASHION_MNIST_IDX_HPP
#define XMERGE_EXAMPLES_FASHION_MNIST_IDX_HPP

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/torch.h>
#include <zlib.h>

namespace fmnist
{
    /**
     * The bytes of an IDX file: magic 0x0000 0x08 (unsigned bytes) and the
     * rank, then one big-endian 32-bit extent per axis, then the data.
     * zlib reads gzip and uncompressed files alike.
     */
    inline std::vector<std::uint8_t> read_idx(const std::string& path, std::vector<std::int64_t>& shape)
    {
        gzFile f = gzopen(path.c_str(), "rb");
        if (f == nullptr)
        {
            throw std::runtime_error("cannot open " + path + " (install Debian's dataset-fashion-mnist or pass --data DIR)");
        }
        auto read = [&](void* dst, unsigned bytes)
        {
            if (gzread(f, dst, bytes) != static_cast<int>(bytes))
            {
                gzclose(f);
                throw std::runtime_error(path + ": truncated IDX file");
            }
        };
        unsigned char magic[4];
        read(magic, 4);
        if (magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08 || magic[3] == 0 || magic[3] > 4)
        {
            gzclose(f);
            throw std::runtime_error(path + ": not an IDX file of unsigned bytes");
        }
        shape.clear();
        std::int64_t count = 1;
        for (int d = 0; d < magic[3]; ++d)
        {
            unsigned char b[4];
            read(b, 4);
            shape.push_back((std::int64_t{b[0]} << 24) | (std::int64_t{b[1]} << 16) | (std::int64_t{b[2]} << 8) | std::int64_t{b[3]});
            count *= shape.back();
        }
        if (count <= 0 || count > (std::int64_t{1} << 31))
        {
            gzclose(f);
            throw std::runtime_error(path + ": implausible IDX extents");
        }
        std::vector<std::uint8_t> data(static_cast<std::size_t>(count));
        read(data.data(), static_cast<unsigned>(count));
        gzclose(f);
        return data;
    }

    /// Images as float [N, rows * cols] in [0, 1].
    inline torch::Tensor read_idx_images(const std::string& path)
    {
        std::vector<std::int64_t> shape;
        std::vector<std::uint8_t> data = read_idx(path, shape);
        if (shape.size() != 3)
        {
            throw std::runtime_error(path + ": expected images [N, rows, cols]");
        }
        const torch::Tensor bytes = torch::from_blob(data.data(), {shape[0], shape[1] * shape[2]}, torch::kUInt8);
        return bytes.to(torch::kFloat).div_(255.0);
    }

    /// Labels as int64 [N].
    inline torch::Tensor read_idx_labels(const std::string& path)
    {
        std::vector<std::int64_t> shape;
        std::vector<std::uint8_t> data = read_idx(path, shape);
        if (shape.size() != 1)
        {
            throw std::runtime_error(path + ": expected labels [N]");
        }
        return torch::from_blob(data.data(), {shape[0]}, torch::kUInt8).to(torch::kLong);
    }
}

#endif
