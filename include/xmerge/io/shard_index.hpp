/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_IO_SHARD_INDEX_HPP
#define XMERGE_IO_SHARD_INDEX_HPP

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "mapped_file.hpp"

/**
 * @file
 * Sharded checkpoints: the shards' file names and the Hugging Face index
 * file (`model.safetensors.index.json`) that maps every tensor to its shard.
 */

namespace xmerge::io
{
    /// Contents of a shard index file.
    struct shard_index
    {
        /// Tensor name to shard file name (relative to the index's directory).
        std::map<std::string, std::string> weight_map;
        /// Sum of the tensors' byte sizes, when the index gives it.
        std::size_t total_size = 0;
        /// The index's "metadata" object, kept as written.
        nlohmann::json metadata = nlohmann::json::object();

        /// Distinct shard file names, in name order.
        std::vector<std::string> files() const;
    };

    /// The shards of a checkpoint on disk: paths of its safetensors files, and its index if it has one.
    struct checkpoint_location
    {
        std::vector<std::string> files;
        std::string index_path;  ///< empty for a single file
        shard_index index;
    };

    /// "model-00002-of-00005.safetensors" (1-based `i`), or "model.safetensors" when there is one shard.
    inline std::string shard_file_name(std::size_t i, std::size_t count, const std::string& basename = "model");

    /**
     * Reads and checks an index file: a JSON object whose "weight_map" maps
     * tensor names to shard files inside the index's directory (no absolute
     * paths, no "..").
     */
    inline shard_index read_shard_index(const std::string& path);

    /// Writes an index file in the Hugging Face layout.
    inline void write_shard_index(const std::string& path, const shard_index& index);

    /**
     * Finds the safetensors files of a checkpoint given as a .safetensors
     * file, an index file, or a directory holding either: the directory's
     * `model.safetensors.index.json` or `model.safetensors`, else its only
     * index file, else its only .safetensors file. Throws io_error saying
     * what was found when none of these applies.
     */
    inline checkpoint_location locate_checkpoint(const std::string& path);

    /********************
     * Implementation   *
     ********************/

    inline std::vector<std::string> shard_index::files() const
    {
        std::vector<std::string> out;
        for (const auto& [_, file] : weight_map)
        {
            out.push_back(file);
        }
        std::sort(out.begin(), out.end());
        out.erase(std::unique(out.begin(), out.end()), out.end());
        return out;
    }

    inline std::string shard_file_name(std::size_t i, std::size_t count, const std::string& basename)
    {
        if (count <= 1)
        {
            return basename + ".safetensors";
        }
        char buf[64];
        std::snprintf(buf, sizeof buf, "-%05zu-of-%05zu.safetensors", i, count);
        return basename + buf;
    }

    namespace detail
    {
        inline bool is_safe_relative(const std::string& name)
        {
            const std::filesystem::path p(name);
            if (name.empty() || p.is_absolute() || p.has_root_name())
            {
                return false;
            }
            for (const auto& part : p)
            {
                if (part == "..")
                {
                    return false;
                }
            }
            return true;
        }
    }

    inline shard_index read_shard_index(const std::string& path)
    {
        detail::require_regular_file(path);
        std::ifstream in(path, std::ios::binary);
        if (!in)
        {
            throw io_error(path, "", "cannot open the shard index");
        }
        std::stringstream text;
        text << in.rdbuf();
        nlohmann::json j;
        try
        {
            j = nlohmann::json::parse(text.str());
        }
        catch (const nlohmann::json::exception& e)
        {
            throw io_error(path, "", std::string("shard index is not valid JSON: ") + e.what());
        }
        if (!j.is_object())
        {
            throw io_error(path, "", "shard index is not a JSON object");
        }
        const auto map = j.find("weight_map");
        if (map == j.end() || !map->is_object())
        {
            throw io_error(path, "", "shard index has no \"weight_map\" object");
        }
        shard_index index;
        for (auto it = map->begin(); it != map->end(); ++it)
        {
            if (!it.value().is_string())
            {
                throw io_error(path, it.key(), "weight_map entry is not a file name");
            }
            const std::string file = it.value().get<std::string>();
            if (!detail::is_safe_relative(file))
            {
                throw io_error(path, it.key(), "shard '" + file + "' is not a file inside the index's directory");
            }
            index.weight_map[it.key()] = file;
        }
        const auto meta = j.find("metadata");
        if (meta != j.end())
        {
            if (!meta->is_object())
            {
                throw io_error(path, "", "\"metadata\" of the shard index is not an object");
            }
            index.metadata = *meta;
            const auto total = meta->find("total_size");
            if (total != meta->end() && total->is_number_unsigned())
            {
                index.total_size = total->get<std::size_t>();
            }
        }
        return index;
    }

    inline void write_shard_index(const std::string& path, const shard_index& index)
    {
        nlohmann::ordered_json j;
        nlohmann::ordered_json meta = nlohmann::ordered_json::object();
        for (auto it = index.metadata.begin(); it != index.metadata.end(); ++it)
        {
            meta[it.key()] = it.value();
        }
        meta["total_size"] = index.total_size;
        j["metadata"] = meta;
        j["weight_map"] = index.weight_map;
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out << j.dump(2) << '\n';
        out.flush();
        if (!out)
        {
            throw io_error(path, "", "cannot write the shard index");
        }
    }

    inline checkpoint_location locate_checkpoint(const std::string& path)
    {
        namespace fs = std::filesystem;
        std::error_code ec;
        const fs::file_status st = fs::status(path, ec);
        if (ec || !fs::exists(st))
        {
            throw io_error(path, "", "no such file or directory");
        }
        checkpoint_location loc;
        auto from_index = [&](const fs::path& index_path)
        {
            loc.index_path = index_path.string();
            loc.index = read_shard_index(loc.index_path);
            for (const auto& f : loc.index.files())
            {
                loc.files.push_back((index_path.parent_path() / f).string());
            }
            return loc;
        };
        auto ends_with = [](const std::string& s, const std::string& suffix)
        { return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0; };

        if (fs::is_regular_file(st))
        {
            if (ends_with(path, ".json"))
            {
                return from_index(fs::path(path));
            }
            loc.files.push_back(path);
            return loc;
        }
        if (!fs::is_directory(st))
        {
            detail::require_regular_file(path);  // says what it is instead: a FIFO, a device, a socket
            throw io_error(path, "", "neither a file nor a directory");
        }
        const fs::path dir(path);
        if (fs::is_regular_file(dir / "model.safetensors.index.json"))
        {
            return from_index(dir / "model.safetensors.index.json");
        }
        if (fs::is_regular_file(dir / "model.safetensors"))
        {
            loc.files.push_back((dir / "model.safetensors").string());
            return loc;
        }
        std::vector<fs::path> indexes, singles;
        bool has_bin = false;
        for (const auto& entry : fs::directory_iterator(dir, ec))
        {
            const std::string name = entry.path().filename().string();
            if (ends_with(name, ".safetensors.index.json"))
            {
                indexes.push_back(entry.path());
            }
            else if (ends_with(name, ".safetensors"))
            {
                singles.push_back(entry.path());
            }
            else if (ends_with(name, ".bin") || ends_with(name, ".pt") || ends_with(name, ".pth"))
            {
                has_bin = true;
            }
        }
        if (indexes.size() == 1)
        {
            return from_index(indexes.front());
        }
        if (indexes.empty() && singles.size() == 1)
        {
            loc.files.push_back(singles.front().string());
            return loc;
        }
        if (indexes.size() > 1 || singles.size() > 1)
        {
            throw io_error(path, "", "holds " + std::to_string(indexes.size()) + " index files and " + std::to_string(singles.size())
                                         + " .safetensors files; name the one to use");
        }
        throw io_error(path, "", has_bin ? "holds only PyTorch pickle weights (.bin/.pt); convert them to safetensors first"
                                         : "holds no .safetensors file");
    }
}

#endif
