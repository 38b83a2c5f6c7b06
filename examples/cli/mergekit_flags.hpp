// mergekit-yaml's command-line options on `xmerge run`, so that scripts can
// point a mergekit-yaml invocation at xmerge unchanged. Those with a meaning
// here map onto xmerge's options; the others are accepted with a note.
#ifndef XMERGE_CLI_MERGEKIT_FLAGS_HPP
#define XMERGE_CLI_MERGEKIT_FLAGS_HPP

#include <cctype>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "commands.hpp"

namespace xmerge_cli
{
    class mergekit_flags
    {
    public:
        /// Adds mergekit's options to `run` (in their own help group).
        void add_to(CLI::App& run, run_args& a)
        {
            const char* group = "mergekit-yaml options";
            run.add_option("--out-shard-size", m_shard, "mergekit's shard size: bytes, with K, M or B for thousands, millions, billions")->group(group);
            run.add_option("--random-seed", m_seed, "seed of random methods (as --seed)")->group(group);
            run.add_option("--num-threads", m_threads, "threads (as -j)")->group(group);
            run.add_flag("--copy-tokenizer,!--no-copy-tokenizer", a.copy_tokenizer, "copy the base model's tokenizer files (default)")->group(group);
            run.add_flag("--write-model-card,!--no-write-model-card", a.model_card, "write README.md describing the merge (default)")->group(group);
            run.add_flag("--unsafe-truncate-embeddings", a.truncate_vocabulary, "cut embeddings and heads to the smallest vocabulary, token ids unchanged")->group(group);
            run.add_flag("--quiet", m_quiet, "no progress bar")->group(group);
            run.add_option("--lora-merge-cache", a.lora_cache, "keep the models that MODEL+ADAPTER references fold to in this directory, for later runs")
                ->group(group);
            run.add_option("--lora-merge-dtype", a.lora_dtype, "dtype of folded MODEL+ADAPTER models: float32 (default), bfloat16 or float16")
                ->capture_default_str()
                ->group(group);

            // Accepted and not acted on, with why (for the note); "=" marks an option taking a value.
            const std::string gpu = "xmerge computes on the CPU, streaming tensors from memory-mapped files";
            const std::string streaming = "tensors are evaluated straight into the output file";
            const std::vector<std::pair<std::string, std::string>> accepted = {
                {"--cuda,!--no-cuda", gpu},
                {"--low-cpu-memory,!--no-low-cpu-memory", "resident memory is a small working set already"},
                {"--read-to-gpu,!--no-read-to-gpu", gpu},
                {"--multi-gpu,!--no-multi-gpu", gpu},
                {"--gpu-rich", gpu},
                {"--lazy-unpickle,!--no-lazy-unpickle", "inputs are safetensors, read lazily through memory maps"},
                {"--clone-tensors,!--no-clone-tensors", "every output tensor is written from its own buffer"},
                {"--async-write,!--no-async-write", streaming},
                {"--trust-remote-code,!--no-trust-remote-code", "no model code is run"},
                {"--allow-crimes,!--no-allow-crimes", "architectures are not compared; tensors are matched by name and shape"},
                {"--safe-serialization,!--no-safe-serialization", "the output is always safetensors"},
                {"-v,--verbose", "xmerge's output does not change with verbosity"},
                {"=--device", gpu},
                {"=--write-threads", streaming},
                {"=--transformers-cache", "models are local paths"},
            };
            for (const auto& [spelling, why] : accepted)
            {
                const bool takes_value = spelling[0] == '=';
                const std::string name = takes_value ? spelling.substr(1) : spelling;
                CLI::Option* o = takes_value ? run.add_option(name, m_unused) : run.add_flag(name);
                o->description("accepted for mergekit compatibility; " + why)->group(group);
                m_ignored.emplace_back(name.substr(0, name.find(',')), why);
            }
        }

        /// After parsing: mapped options into `a`, notes for the others.
        void apply(run_args& a, const CLI::App& run) const
        {
            if (!m_shard.empty())
            {
                a.shard_bytes = parse_kmb(m_shard);
            }
            if (m_seed)
            {
                a.seed = *m_seed;
            }
            if (m_threads)
            {
                a.threads = *m_threads;
            }
            if (m_quiet)
            {
                a.no_progress = true;
            }
            for (const auto& [name, why] : m_ignored)
            {
                const CLI::Option* o = run.get_option_no_throw(name);
                if (o != nullptr && o->count() > 0)
                {
                    a.ignored.push_back(o->get_name() + " ignored: " + why);
                }
            }
        }

    private:
        // mergekit's parse_kmb: digits with an optional k, m or b (thousands, millions, billions).
        static std::uint64_t parse_kmb(const std::string& text)
        {
            std::uint64_t scale = 1;
            std::string digits = text;
            const char last = text.empty() ? '\0' : static_cast<char>(std::tolower(static_cast<unsigned char>(text.back())));
            if (last == 'k' || last == 'm' || last == 'b')
            {
                scale = last == 'k' ? 1000ull : last == 'm' ? 1000000ull : 1000000000ull;
                digits.pop_back();
            }
            if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 12)
            {
                throw CLI::ValidationError("--out-shard-size", "'" + text + "' is not a size (digits with an optional K, M or B)");
            }
            return std::stoull(digits) * scale;
        }

        std::string m_shard;
        std::optional<std::uint64_t> m_seed;
        std::optional<std::size_t> m_threads;
        bool m_quiet = false;
        std::string m_unused;
        std::vector<std::pair<std::string, std::string>> m_ignored;
    };
}

#endif
