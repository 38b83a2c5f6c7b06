// xmerge: merges safetensors checkpoints with mergekit YAML recipes.
//
//   xmerge run RECIPE.yml OUT_DIR [options]   merge (see --help; mergekit-yaml's options are accepted)
//   xmerge methods                           the methods and their parameters
//   xmerge inspect BASE MODEL...             task vectors per tensor and layer: norms, cosines, sign conflicts
//   xmerge info CHECKPOINT                   tensors of a file, shard set or directory
//   xmerge reshard CHECKPOINT OUT_DIR        rewrite a checkpoint (new shard size or dtype)
//   xmerge make-demo DIR                     small synthetic base + fine-tunes
//   xmerge io-floor OUT_FILE INPUT...        time to only read inputs and write an output
//   xmerge clean OUT_DIR                     remove what interrupted runs into OUT_DIR left behind
//   xmerge lora fold BASE ADAPTER OUT_DIR     PEFT LoRA/DoRA adapters (with the lora component):
//   xmerge lora extract BASE TUNED OUT_DIR    fold into a model, extract from a fine-tune,
//   xmerge lora merge BASE OUT_DIR ADAPTER... merge into an adapter or a model

#include <cstdio>
#include <exception>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include <xmerge/core/evaluate.hpp>
#include <xmerge/io/checkpoint_writer.hpp>
#include <xmerge/linalg/blas_threads.hpp>
#include <xmerge/model/model.hpp>
#include <xmerge/ops/input.hpp>
#include <xmerge/io/companion_files.hpp>
#include <xmerge/io/output_lock.hpp>
#include <xmerge/recipe/recipe.hpp>

#include "commands.hpp"
#include "dtype_option.hpp"
#include "demo_checkpoints.hpp"
#include "format.hpp"
#include "io_floor.hpp"
#include "mergekit_flags.hpp"

namespace
{
    namespace fs = std::filesystem;

    int info(const std::string& path)
    {
        const xmerge::model m = xmerge::model::open(path);
        for (const auto& t : m.tensors())
        {
            std::printf("%-60s %-6s %-20s %s\n", xmerge_cli::printable(t.name).c_str(), t.dtype.c_str(), xmerge::to_string(t.shape).c_str(), xmerge_cli::bytes(static_cast<double>(t.bytes)).c_str());
        }
        for (const auto& [k, v] : m.metadata())
        {
            std::printf("metadata %s = %s\n", xmerge_cli::printable(k).c_str(), xmerge_cli::printable(v).c_str());
        }
        std::printf("%zu tensors, %s in %zu file%s\n", m.size(), xmerge_cli::bytes(static_cast<double>(m.total_bytes())).c_str(), m.files().size(),
                    m.files().size() == 1 ? "" : "s");
        return 0;
    }

    // Every tensor through the reader and the writer: raw bytes, or converted for --dtype.
    int reshard(const std::string& in, const std::string& out, const std::string& shard_size, const std::string& dtype_name, bool overwrite)
    {
        const xmerge::model m = xmerge::model::open(in);
        const std::optional<xmerge::dtype> to = xmerge_cli::optional_dtype_option(dtype_name, "--dtype");
        std::vector<xmerge::io::tensor_info> layout;
        for (const auto& t : m.tensors())
        {
            layout.push_back({t.name, to && t.is_arithmetic() ? xmerge::io::safetensors_name(*to) : t.dtype, t.shape, 0, 0});
        }
        xmerge::io::checkpoint_options o;
        o.max_shard_bytes = xmerge_cli::parse_size(shard_size);
        o.metadata = m.metadata();
        o.overwrite = overwrite;
        o.on_cleanup = xmerge_cli::print_note;
        xmerge::io::checkpoint_writer w(out, layout, o);
        for (const auto& t : m.tensors())
        {
            if (to && t.is_arithmetic() && t.dtype != xmerge::io::safetensors_name(*to))
            {
                xmerge::evaluate(xmerge::input(t.ref()), w.tensor(t.name));
            }
            else
            {
                w.write(t.name, t.data, t.bytes);
            }
            w.finish(t.name);
            m.release(t);
        }
        if (fs::is_directory(in))
        {
            for (const auto& name : xmerge::io::companion_files(in))
            {
                w.add_file((fs::path(in) / name).string(), name);
            }
        }
        m.check_unchanged();
        w.commit();
        std::printf("xmerge: %zu tensors written to %s in %zu shard%s\n", m.size(), out.c_str(), w.shard_count(), w.shard_count() == 1 ? "" : "s");
        return 0;
    }

    // Removes what runs into OUT_DIR that ended without cleaning up left next to it.
    int clean(const std::string& dir)
    {
        xmerge::io::output_lock lock(dir);  // refused while a run writes there
        const auto notes = xmerge::io::clean_leftovers(dir);
        for (const auto& note : notes)
        {
            std::printf("xmerge: %s\n", xmerge_cli::printable(note).c_str());
        }
        if (notes.empty())
        {
            std::printf("xmerge: nothing was left behind next to %s\n", xmerge_cli::printable(dir).c_str());
        }
        return 0;
    }
}

int main(int argc, char** argv)
{
    CLI::App app{"xmerge: merge safetensors checkpoints with mergekit YAML recipes"};
    app.require_subcommand(1);
    std::size_t blas_threads = 0;
    const auto add_blas_threads = [&](CLI::App* c)
    {
        c->add_option("--blas-threads", blas_threads,
                      "threads of the BLAS library (OpenBLAS) for SVD and solver-based methods; fix it to get the same bits on another machine "
                      "(default: the library's own choice)")
            ->check(CLI::PositiveNumber);
    };

    xmerge_cli::run_args ra;
    std::string shard_size = "5GB";
    CLI::App* run_cmd = app.add_subcommand("run", "Merge the models of a recipe into OUT_DIR (written atomically)");
    run_cmd->add_option("recipe", ra.recipe, "mergekit YAML recipe")->required();
    run_cmd->add_option("out_dir", ra.out_dir, "output checkpoint directory (must not exist or be empty, unless --overwrite)")->required();
    run_cmd->add_option("-j,--threads", ra.threads, "threads (0: every hardware thread)")->check(xmerge_cli::check_threads);
    CLI::Option* shard_option = run_cmd->add_option("--shard-size", shard_size, "largest output shard, e.g. 5GB, 500MB, 2GiB")->capture_default_str();
    run_cmd->add_option("--out-dtype", ra.out_dtype, "dtype of merged tensors: float32, bfloat16, float16 (default: the recipe's, else the inputs')");
    run_cmd->add_option("--seed", ra.seed, "seed of random methods")->capture_default_str();
    run_cmd->add_option("--on-missing", ra.on_missing, "a tensor some model lacks: error or copy-base")->capture_default_str();
    run_cmd->add_option("--on-mismatch", ra.on_mismatch, "a tensor of another shape or dtype kind: error or copy-base")->capture_default_str();
    run_cmd->add_flag("--strict", ra.strict, "refuse parameters the method does not use (by default they are ignored with a warning, as mergekit does)");
    run_cmd->add_flag("--overwrite", ra.overwrite, "replace a non-empty OUT_DIR once the merge is complete");
    run_cmd->add_flag("--fsync", ra.sync, "flush the output to the device before finishing");
    run_cmd->add_flag("--no-progress", ra.no_progress, "no progress bar");
    run_cmd->add_flag("--no-copy-files", ra.no_copy_files, "write only the tensors and the recipe: nothing from the base model's directory");
    run_cmd->add_flag("--dry-run", ra.dry_run, "check the recipe and the models, write nothing");
    add_blas_threads(run_cmd);
    xmerge_cli::mergekit_flags mergekit;
    mergekit.add_to(*run_cmd, ra);
    shard_option->excludes(run_cmd->get_option("--out-shard-size"));

    app.add_subcommand("methods", "List the merge methods and their parameters");

    xmerge_cli::inspect_args ia;
    CLI::App* inspect_cmd = app.add_subcommand("inspect", "Compare models with a base: task-vector norms, cosine similarities and sign conflicts per tensor and layer");
    inspect_cmd->add_option("base", ia.base, "base checkpoint the task vectors are taken from")->required();
    inspect_cmd->add_option("models", ia.models, "fine-tuned or merged checkpoints (a merge and its inputs show what the merge kept)")->required();
    inspect_cmd->add_flag("--json", ia.json, "print JSON instead of tables");
    inspect_cmd->add_option("--plot", ia.plot, "write a PNG heatmap of cosine similarity and sign conflicts per layer and model pair");
    inspect_cmd->add_option("--svd", ia.singular_values, "top singular values and effective rank of each 2-D task vector (needs the linalg component)");
    add_blas_threads(inspect_cmd);
    inspect_cmd->add_flag("--tensors", ia.per_tensor, "one table row per tensor, not per layer");
    inspect_cmd->add_option("-j,--threads", ia.threads, "threads (0: every hardware thread)")->check(xmerge_cli::check_threads);

    std::string info_path;
    CLI::App* info_cmd = app.add_subcommand("info", "List the tensors of a checkpoint (file, index or directory)");
    info_cmd->add_option("checkpoint", info_path, "checkpoint")->required();

    std::string reshard_in, reshard_out, reshard_size = "5GB", reshard_dtype;
    bool reshard_overwrite = false;
    CLI::App* reshard_cmd = app.add_subcommand("reshard", "Rewrite a checkpoint with another shard size or float dtype");
    reshard_cmd->add_option("checkpoint", reshard_in, "input checkpoint")->required();
    reshard_cmd->add_option("out_dir", reshard_out, "output directory")->required();
    reshard_cmd->add_option("--shard-size", reshard_size, "largest shard")->capture_default_str();
    reshard_cmd->add_option("--dtype", reshard_dtype, "convert F32/BF16/F16 tensors to float32, bfloat16 or float16");
    reshard_cmd->add_flag("--overwrite", reshard_overwrite, "replace a non-empty OUT_DIR");

    std::string demo_dir, demo_dtype = "bfloat16", demo_shard = "5GB";
    xmerge_cli::demo_options demo;
    CLI::App* demo_cmd = app.add_subcommand("make-demo", "Write a synthetic base model and fine-tunes to DIR/base, DIR/math, ...");
    demo_cmd->add_option("dir", demo_dir, "output directory")->required();
    demo_cmd->add_option("--models", demo.models, "fine-tunes")->capture_default_str();
    demo_cmd->add_option("--layers", demo.layers, "transformer layers")->capture_default_str();
    demo_cmd->add_option("--hidden", demo.hidden, "hidden size")->capture_default_str();
    demo_cmd->add_option("--intermediate", demo.intermediate, "MLP size")->capture_default_str();
    demo_cmd->add_option("--vocab", demo.vocab, "vocabulary size")->capture_default_str();
    demo_cmd->add_option("--dtype", demo_dtype, "float32, bfloat16 or float16")->capture_default_str();
    demo_cmd->add_option("--shard-size", demo_shard, "largest shard")->capture_default_str();
    demo_cmd->add_option("--seed", demo.seed, "seed")->capture_default_str();
    demo_cmd->add_option("-j,--threads", demo.threads, "threads (0: all)")->check(xmerge_cli::check_threads);
    demo_cmd->add_flag("--overwrite", demo.overwrite, "replace existing models");

    std::string floor_out, floor_size;
    std::vector<std::string> floor_inputs;
    std::size_t floor_threads = 0;
    CLI::App* floor_cmd = app.add_subcommand("io-floor", "Time reading INPUTs and writing one file of --write-size bytes (then deleted)");
    floor_cmd->add_option("out_file", floor_out, "temporary output file")->required();
    floor_cmd->add_option("inputs", floor_inputs, "input files or checkpoint directories")->required();
    floor_cmd->add_option("--write-size", floor_size, "bytes to write, e.g. 1GiB")->required();
    floor_cmd->add_option("-j,--threads", floor_threads, "threads (0: all)")->check(xmerge_cli::check_threads);

    std::string clean_dir;
    CLI::App* clean_cmd = app.add_subcommand("clean", "Remove what interrupted runs into OUT_DIR left next to it (staging directories; restore an interrupted overwrite)");
    clean_cmd->add_option("out_dir", clean_dir, "output directory of the runs")->required();

#if XMERGE_WITH_LORA
    xmerge_cli::lora_args la;
    std::string lora_shard = "5GB", lora_input;
    CLI::App* lora_cmd = app.add_subcommand("lora", "PEFT LoRA/DoRA adapters: fold into a model, extract from a fine-tune, merge");
    lora_cmd->require_subcommand(1);
    auto out_dir = [&](CLI::App* c) { c->add_option("out_dir", la.out_dir, "output directory (must not exist or be empty, unless --overwrite)")->required(); };
    auto common = [&](CLI::App* c)
    {
        c->add_option("-j,--threads", la.threads, "threads (0: every hardware thread)")->check(xmerge_cli::check_threads);
        c->add_option("--out-dtype", la.out_dtype, "dtype of the written tensors: float32, bfloat16 or float16");
        c->add_flag("--overwrite", la.overwrite, "replace a non-empty OUT_DIR once complete");
        c->add_flag("--no-progress", la.no_progress, "no progress bar");
    };
    auto factoring = [&](CLI::App* c)
    {
        c->add_option("-r,--rank", la.rank, "rank of every factored update");
        c->add_option("--energy", la.energy, "smallest rank keeping this fraction of each update's squared Frobenius norm, in (0, 1]");
        c->add_option("--max-rank", la.max_rank, "upper bound on --energy's rank");
        c->add_flag("--randomized", la.randomized, "randomized SVD (a sketch of --rank or --max-rank columns) instead of a full SVD");
        c->add_option("--seed", la.seed, "seed of --randomized and of DARE")->capture_default_str();
        add_blas_threads(c);
    };
    CLI::App* fold_cmd = lora_cmd->add_subcommand("fold", "Fold an adapter into its base model: W + scale B A (DoRA: magnitude-normalized)");
    fold_cmd->add_option("base", la.base, "base checkpoint")->required();
    fold_cmd->add_option("adapter", lora_input, "PEFT adapter directory")->required();
    out_dir(fold_cmd);
    common(fold_cmd);
    fold_cmd->add_option("--shard-size", lora_shard, "largest output shard")->capture_default_str();
    CLI::App* extract_cmd = lora_cmd->add_subcommand("extract", "Extract a LoRA adapter from a fine-tune: truncated SVD of each 2-D update");
    extract_cmd->add_option("base", la.base, "base checkpoint")->required();
    extract_cmd->add_option("finetuned", lora_input, "fine-tuned checkpoint")->required();
    out_dir(extract_cmd);
    common(extract_cmd);
    factoring(extract_cmd);
    extract_cmd->add_flag("--embeddings-as-lora", la.embeddings_as_lora, "factor embedding updates too (by default they are saved in full)");
    extract_cmd->add_flag("--fan-in-fan-out", la.fan_in_fan_out, "the model stores weights as (in, out), as GPT-2's Conv1D");
    CLI::App* lmerge_cmd = lora_cmd->add_subcommand("merge", "Merge adapters of one base: into an adapter (re-factored) or into the model");
    lmerge_cmd->add_option("base", la.base, "base checkpoint the adapters were trained on")->required();
    out_dir(lmerge_cmd);
    lmerge_cmd->add_option("adapters", la.inputs, "PEFT adapter directories")->required();
    common(lmerge_cmd);
    factoring(lmerge_cmd);
    lmerge_cmd->add_option("--method", la.method, "linear, ties, dare_linear or dare_ties, on the updates scale B A")->capture_default_str();
    lmerge_cmd->add_option("--weights", la.weights, "one weight per adapter (default: equal weights summing to 1)");
    lmerge_cmd->add_option("--densities", la.densities, "ties/dare: fraction of each update kept, one per adapter");
    lmerge_cmd->add_option("--lambda", la.lambda, "scale of the merged update")->capture_default_str();
    lmerge_cmd->add_option("--to", la.to, "adapter (factored again to --rank/--energy) or model (folded into BASE)")->capture_default_str();
    lmerge_cmd->add_option("--shard-size", lora_shard, "largest output shard (--to model)")->capture_default_str();
#endif

    CLI11_PARSE(app, argc, argv);
    if (blas_threads != 0 && !xmerge::set_blas_threads(blas_threads))
    {
        std::fprintf(stderr, "xmerge: note: --blas-threads ignored: the BLAS library is not OpenBLAS\n");
    }

    try
    {
        if (run_cmd->parsed())
        {
            try
            {
                ra.shard_bytes = xmerge_cli::parse_size(shard_size);
                mergekit.apply(ra, *run_cmd);
            }
            catch (const std::exception& e)
            {
                throw xmerge::parameter_error("", "--shard-size", e.what());
            }
            return xmerge_cli::run(ra);
        }
        if (app.got_subcommand("methods"))
        {
            return xmerge_cli::methods();
        }
        if (inspect_cmd->parsed())
        {
            return xmerge_cli::inspect(ia);
        }
#if XMERGE_WITH_LORA
        if (lora_cmd->parsed())
        {
            la.command = fold_cmd->parsed() ? "fold" : extract_cmd->parsed() ? "extract" : "merge";
            if (la.command != "merge")
            {
                la.inputs = {lora_input};
            }
            la.shard_bytes = xmerge_cli::parse_size(lora_shard);
            return xmerge_cli::lora(la);
        }
#endif
        if (info_cmd->parsed())
        {
            return info(info_path);
        }
        if (reshard_cmd->parsed())
        {
            return reshard(reshard_in, reshard_out, reshard_size, reshard_dtype, reshard_overwrite);
        }
        if (demo_cmd->parsed())
        {
            demo.type = xmerge_cli::dtype_option(demo_dtype, "--dtype");
            demo.shard_bytes = xmerge_cli::parse_size(demo_shard);
            const std::uint64_t n = xmerge_cli::make_demo(demo_dir, demo);
            std::printf("xmerge: wrote a base model and %zu fine-tunes (%s) to %s\n", demo.models, xmerge_cli::bytes(static_cast<double>(n)).c_str(), demo_dir.c_str());
            return 0;
        }
        if (clean_cmd->parsed())
        {
            return clean(clean_dir);
        }
        if (floor_cmd->parsed())
        {
            const std::size_t threads = floor_threads ? floor_threads : std::max(1u, std::thread::hardware_concurrency());
            const auto r = xmerge_cli::io_floor(floor_inputs, floor_out, xmerge_cli::parse_size(floor_size), threads);
            const double total = r.read_seconds + r.write_seconds;
            std::printf("io-floor: read %s in %.3f s, wrote %s in %.3f s, total %.3f s (%s)\n", xmerge_cli::bytes(static_cast<double>(r.read_bytes)).c_str(),
                        r.read_seconds, xmerge_cli::bytes(static_cast<double>(r.write_bytes)).c_str(), r.write_seconds, total,
                        xmerge_cli::rate(static_cast<double>(r.read_bytes + r.write_bytes) / total).c_str());
            return 0;
        }
    }
    catch (const xmerge::merge_error& e)
    {
        std::fprintf(stderr, "%s\n", xmerge_cli::printable(e.what(), true).c_str());
        return 1;
    }
    catch (const std::exception& e)
    {
        std::fprintf(stderr, "xmerge: error: %s\n", xmerge_cli::printable(e.what(), true).c_str());
        return 1;
    }
    return 0;
}
