// The xmerge subcommands, each in its own translation unit so that the
// tool builds in parallel: run and methods (run_command.cpp, the method
// registry), inspect (inspect_command.cpp), the rest in main.cpp.
#ifndef XMERGE_CLI_COMMANDS_HPP
#define XMERGE_CLI_COMMANDS_HPP

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace xmerge_cli
{
    struct run_args
    {
        std::string recipe;
        std::string out_dir;
        std::size_t threads = 0;
        std::uint64_t shard_bytes = 5'000'000'000ull;
        std::string out_dtype;
        std::uint64_t seed = 0;
        std::string on_missing = "error";
        std::string on_mismatch = "error";
        bool overwrite = false;
        bool sync = false;
        bool no_progress = false;
        bool dry_run = false;
        bool no_copy_files = false;
        bool strict = false;
        bool copy_tokenizer = true;
        bool model_card = true;
        bool truncate_vocabulary = false;
        /// `MODEL+ADAPTER` references: folds kept in this directory (empty: a temporary one next to OUT_DIR).
        std::string lora_cache;
        /// dtype of folded models (float32 by default, as mergekit).
        std::string lora_dtype = "float32";
        /// mergekit options accepted for compatibility and not acted on, with why (printed as notes).
        std::vector<std::string> ignored;
    };

    /// `xmerge run`: a mergekit recipe into OUT_DIR.
    int run(const run_args& a);

    /// `xmerge methods`: the registry's methods and their parameters.
    int methods();

    struct inspect_args
    {
        std::string base;
        std::vector<std::string> models;
        bool json = false;
        std::string plot;
        /// Top singular values of 2-D task vectors (0: none).
        std::size_t singular_values = 0;
        bool per_tensor = false;
        std::size_t threads = 0;
    };

    /// `xmerge inspect`: task vectors of models against a base, per tensor and per layer.
    int inspect(const inspect_args& a);

    struct lora_args
    {
        /// fold, extract or merge.
        std::string command;
        std::string base;
        /// fold: one adapter; extract: one fine-tuned model; merge: the adapters.
        std::vector<std::string> inputs;
        std::string out_dir;
        std::size_t threads = 0;
        std::string out_dtype;
        std::uint64_t shard_bytes = 5'000'000'000ull;
        bool overwrite = false;
        bool no_progress = false;
        // Factoring (extract, merge --to adapter).
        std::size_t rank = 0;
        double energy = 0.0;
        std::size_t max_rank = 0;
        bool randomized = false;
        std::uint64_t seed = 0;
        bool embeddings_as_lora = false;
        bool fan_in_fan_out = false;
        // merge
        std::string method = "linear";
        std::vector<double> weights;
        std::vector<double> densities;
        double lambda = 1.0;
        std::string to = "adapter";
    };

    /// `xmerge lora fold|extract|merge`: PEFT adapters (built with the lora component only).
    int lora(const lora_args& a);
}

#endif
