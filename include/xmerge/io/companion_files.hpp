/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_IO_COMPANION_FILES_HPP
#define XMERGE_IO_COMPANION_FILES_HPP

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

/**
 * @file
 * The files of a Hugging Face checkpoint directory besides its weights
 * (config, tokenizer, generation settings, processor configs), which a
 * merged or rewritten checkpoint carries over.
 */

namespace xmerge::io
{
    /// Whether a file name is a weight file (safetensors, pickles, indexes, ...), never copied.
    inline bool is_weight_file(const std::string& name);

    /// Whether a file belongs to a Hugging Face tokenizer.
    inline bool is_tokenizer_file(const std::string& name);

    /// The other top-level files (sorted) of a checkpoint directory; none for a checkpoint given as a file.
    inline std::vector<std::string> companion_files(const std::string& checkpoint);

    /********************
     * Implementation   *
     ********************/

    inline bool is_weight_file(const std::string& name)
    {
        static const char* suffixes[] = {".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx"};
        for (const char* s : suffixes)
        {
            const std::string suffix = s;
            if (name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
            {
                return true;
            }
        }
        return false;
    }

    inline bool is_tokenizer_file(const std::string& name)
    {
        static const std::set<std::string> names = {"tokenizer.json",    "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                                                    "added_tokens.json", "merges.txt",            "vocab.json",              "vocab.txt",
                                                    "spiece.model",      "chat_template.jinja",   "chat_template.json"};
        return names.count(name) != 0;
    }

    inline std::vector<std::string> companion_files(const std::string& checkpoint)
    {
        namespace fs = std::filesystem;
        std::vector<std::string> out;
        if (!fs::is_directory(checkpoint))
        {
            return out;  // a checkpoint given as a file: its directory may hold anything
        }
        for (const auto& e : fs::directory_iterator(checkpoint))
        {
            const std::string name = e.path().filename().string();
            if (e.is_regular_file() && name[0] != '.' && !is_weight_file(name) && name != "mergekit_config.yml")
            {
                out.push_back(name);
            }
        }
        std::sort(out.begin(), out.end());
        return out;
    }

}

#endif
