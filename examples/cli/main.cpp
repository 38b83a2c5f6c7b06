// xmerge: merges safetensors checkpoints with mergekit YAML recipes.
//
//   xmerge run RECIPE.yml OUT_DIR [options]   merge (see --help; mergekit-yaml's options are accepted)
//   xmerge methods                           the methods and their parameters
//   xmerge inspect BASE MODEL...             task vectors per tensor and layer: norms, cosines, sign conflicts
//   xmerge info CHECKPOINT                   tensors of a file, shard set or directory
//   xmerge reshard CHECKPOINT OUT_DIR        rewrite a checkpoint (new shard size or dtype)
//   xmerge make-demo DIR                     small synthetic base + fine-tunes
//   xmerge io-floor OUT_FILE INPUT...        time to only read inputs and write an output

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
#include <xmerge/model/model.hpp>
#include <xmerge/ops/input.hpp>
#include <xmerge/io/companion_files.hpp>
#include <xmerge/recipe/recipe.hpp>

#include "commands.hpp"
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
            std::printf("%-60s %-6s %-20s %s\n", t.name.c_str(), t.dtype.c_str(), xmerge::to_string(t.shape).c_str(), xmerge_cli::bytes(static_cast<double>(t.bytes)).c_str());
        }
        for (const auto& [k, v] : m.metadata())
        {
            std::printf("metadata %s = %s\n", k.c_str(), v.c_str());
        }
        std::printf("%zu tensors, %s in %zu file%s\n", m.size(), xmerge_cli::bytes(static_cast<double>(m.total_bytes())).c_str(), m.files().size(),
                    m.files().size() == 1 ? "" : "s");
        return 0;
    }

    // Every tensor through the reader and the writer: raw bytes, or converted for --dtype.
    int reshard(const std::string& in, const std::string& out, const std::string& shard_size, const std::string& dtype_name, bool overwrite)
    {
        const xmerge::model m = xmerge::model::open(in);
        std::optional<xmerge::dtype> to;
        if (!dtype_name.empty())
        {
            to = xmerge::parse_dtype(dtype_name);
            if (!to)
            {
                throw xmerge::parameter_error("", "--dtype", "unknown dtype '" + dtype_name + "'");
            }
        }
        std::vector<xmerge::io::tensor_info> layout;
        for (const auto& t : m.tensors())
        {
            layout.push_back({t.name, to && t.is_arithmetic() ? xmerge::io::safetensors_name(*to) : t.dtype, t.shape, 0, 0});
        }
        xmerge::io::checkpoint_options o;
        o.max_shard_bytes = xmerge_cli::parse_size(shard_size);
        o.metadata = m.metadata();
        o.overwrite = overwrite;
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
        w.commit();
        std::printf("xmerge: %zu tensors written to %s in %zu shard%s\n", m.size(), out.c_str(), w.shard_count(), w.shard_count() == 1 ? "" : "s");
        return 0;
    }
}

int main(int argc, char** argv)
{
    CLI::App app{"xmerge: merge safetensors checkpoints with mergekit YAML recipes"};
    app.require_subcommand(1);

    xmerge_cli::run_args ra;
    std::string shard_size = "5GB";
    CLI::App* run_cmd = app.add_subcommand("run", "Merge the models of a recipe into OUT_DIR (written atomically)");
    run_cmd->add_option("recipe", ra.recipe, "mergekit YAML recipe")->required();
    run_cmd->add_option("out_dir", ra.out_dir, "output checkpoint directory (must not exist or be empty, unless --overwrite)")->required();
    run_cmd->add_option("-j,--threads", ra.threads, "threads (0: every hardware thread)");
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
    inspect_cmd->add_flag("--tensors", ia.per_tensor, "one table row per tensor, not per layer");
    inspect_cmd->add_option("-j,--threads", ia.threads, "threads (0: every hardware thread)");

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
    demo_cmd->add_option("-j,--threads", demo.threads, "threads (0: all)");
    demo_cmd->add_flag("--overwrite", demo.overwrite, "replace existing models");

    std::string floor_out, floor_size;
    std::vector<std::string> floor_inputs;
    std::size_t floor_threads = 0;
    CLI::App* floor_cmd = app.add_subcommand("io-floor", "Time reading INPUTs and writing one file of --write-size bytes (then deleted)");
    floor_cmd->add_option("out_file", floor_out, "temporary output file")->required();
    floor_cmd->add_option("inputs", floor_inputs, "input files or checkpoint directories")->required();
    floor_cmd->add_option("--write-size", floor_size, "bytes to write, e.g. 1GiB")->required();
    floor_cmd->add_option("-j,--threads", floor_threads, "threads (0: all)");

    CLI11_PARSE(app, argc, argv);

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
            const auto d = xmerge::parse_dtype(demo_dtype);
            if (!d)
            {
                throw xmerge::parameter_error("", "--dtype", "unknown dtype '" + demo_dtype + "'");
            }
            demo.type = *d;
            demo.shard_bytes = xmerge_cli::parse_size(demo_shard);
            const std::uint64_t n = xmerge_cli::make_demo(demo_dir, demo);
            std::printf("xmerge: wrote a base model and %zu fine-tunes (%s) to %s\n", demo.models, xmerge_cli::bytes(static_cast<double>(n)).c_str(), demo_dir.c_str());
            return 0;
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
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    catch (const std::exception& e)
    {
        std::fprintf(stderr, "xmerge: error: %s\n", e.what());
        return 1;
    }
    return 0;
}
