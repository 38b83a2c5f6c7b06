// xmerge: merges safetensors checkpoints with mergekit YAML recipes.
//
//   xmerge run RECIPE.yml OUT_DIR [options]   merge (see --help)
//   xmerge methods                           the methods and their parameters
//   xmerge info CHECKPOINT                   tensors of a file, shard set or directory
//   xmerge reshard CHECKPOINT OUT_DIR        rewrite a checkpoint (new shard size or dtype)
//   xmerge make-demo DIR                     small synthetic base + fine-tunes
//   xmerge io-floor OUT_FILE INPUT...        time to only read inputs and write an output

#include <csignal>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <xmerge/io/checkpoint_writer.hpp>
#include <xmerge/model/merge.hpp>
#include <xmerge/model/model.hpp>
#include <xmerge/recipe/bind.hpp>
#include <xmerge/recipe/recipe.hpp>
#include <xmerge/xmerge.hpp>

#include "demo_checkpoints.hpp"
#include "format.hpp"
#include "io_floor.hpp"
#include "progress.hpp"

namespace
{
    namespace fs = std::filesystem;

    // Ctrl-C or a termination request: the merge stops at the next tensor and
    // unwinds, so the staging directory is removed; a second signal kills at once.
    volatile std::sig_atomic_t stop_requested = 0;

    extern "C" void request_stop(int sig)
    {
        stop_requested = 1;
        std::signal(sig, SIG_DFL);
    }

    struct run_args
    {
        std::string recipe;
        std::string out_dir;
        std::size_t threads = 0;
        std::string shard_size = "5GB";
        std::string out_dtype;
        std::uint64_t seed = 0;
        std::string on_missing = "error";
        std::string on_mismatch = "error";
        bool overwrite = false;
        bool sync = false;
        bool no_progress = false;
        bool dry_run = false;
        bool no_copy_files = false;
    };

    xmerge::tensor_rule parse_rule(const std::string& s, const char* option)
    {
        if (s == "error")
        {
            return xmerge::tensor_rule::error;
        }
        if (s == "copy-base" || s == "copy_base")
        {
            return xmerge::tensor_rule::copy_base;
        }
        throw xmerge::parameter_error("", option, "must be 'error' or 'copy-base', got '" + s + "'");
    }

    bool is_weight_file(const std::string& name)
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

    // The reference checkpoint's other top-level files (config, tokenizer, generation settings).
    std::vector<std::string> companion_files(const xmerge::model& reference)
    {
        std::vector<std::string> out;
        if (!fs::is_directory(reference.name()))
        {
            return out;  // a checkpoint given as a file: its directory may hold anything
        }
        for (const auto& e : fs::directory_iterator(reference.name()))
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

    // config.json with the layer count of a sliced merge.
    std::string patched_config(const std::string& path, std::size_t layers)
    {
        std::ifstream in(path);
        nlohmann::ordered_json c = nlohmann::ordered_json::parse(in, nullptr, false);
        if (c.is_discarded() || !c.is_object())
        {
            throw xmerge::io_error(path, "", "config.json is not a JSON object; cannot set the merged layer count");
        }
        for (const char* key : {"num_hidden_layers", "n_layer", "num_layers"})
        {
            if (c.contains(key))
            {
                c[key] = layers;
            }
        }
        return c.dump(2) + "\n";
    }

    int run(const run_args& a)
    {
        const xmerge::method_registry registry = xmerge::builtin_methods();
        const xmerge::recipe recipe = xmerge::load_recipe(a.recipe);
        for (const auto& note : recipe.ignored)
        {
            std::fprintf(stderr, "xmerge: note: ignoring %s\n", note.c_str());
        }
        const xmerge::recipe_merge bound(recipe, registry);

        xmerge::merge_options options;
        options.threads = a.threads;
        options.seed = a.seed;
        options.on_missing = parse_rule(a.on_missing, "--on-missing");
        options.on_mismatch = parse_rule(a.on_mismatch, "--on-mismatch");
        options.out_dtype = bound.out_dtype();
        if (!a.out_dtype.empty())
        {
            options.out_dtype = xmerge::parse_dtype(a.out_dtype);
            if (!options.out_dtype)
            {
                throw xmerge::parameter_error("", "--out-dtype", "unknown dtype '" + a.out_dtype + "' (float32, bfloat16 or float16)");
            }
        }
        try
        {
            options.output.max_shard_bytes = xmerge_cli::parse_size(a.shard_size);
        }
        catch (const std::invalid_argument& e)
        {
            throw xmerge::parameter_error("", "--shard-size", e.what());
        }
        options.output.overwrite = a.overwrite;
        options.output.sync = a.sync;
        options.output.metadata = {{"format", "pt"}, {"merge_method", recipe.merge_method}};

        // Everything is checked before anything is written.
        const xmerge::merge_plan plan = xmerge::plan_merge(bound.spec(), registry, options);
        for (const auto& note : plan.notes)
        {
            std::fprintf(stderr, "xmerge: note: %s\n", note.c_str());
        }
        if (a.dry_run)
        {
            std::size_t merged = 0;
            for (const auto& t : plan.tensors)
            {
                merged += t.what == xmerge::planned_tensor::action::merge;
            }
            std::printf("plan: %zu tensors (%zu merged, %zu copied), %zu layers; nothing written\n", plan.tensors.size(), merged, plan.tensors.size() - merged,
                        plan.layers);
            return 0;
        }

        if (!a.no_copy_files)
        {
            const xmerge::model& reference = bound.reference();
            for (const auto& name : companion_files(reference))
            {
                const std::string source = (fs::path(reference.name()) / name).string();
                if (name == "config.json" && !bound.spec().slices.empty())
                {
                    options.file_contents.emplace_back(name, patched_config(source, plan.layers));
                }
                else
                {
                    options.files.emplace_back(source, name);
                }
            }
        }
        {
            std::ifstream in(a.recipe, std::ios::binary);
            std::stringstream text;
            text << in.rdbuf();
            options.file_contents.emplace_back("mergekit_config.yml", text.str());
        }

        xmerge_cli::progress_bar bar(!a.no_progress);
        options.progress = [&bar](const xmerge::merge_progress& p)
        {
            if (stop_requested)
            {
                throw std::runtime_error("interrupted; nothing was written");
            }
            bar(p);
        };
        std::signal(SIGINT, request_stop);
        std::signal(SIGTERM, request_stop);
        const xmerge::merge_summary s = xmerge::run_merge(plan, registry, a.out_dir, options);

        const double moved = static_cast<double>(s.bytes_read + s.bytes_written);
        std::printf("xmerge: %s merge written to %s\n", recipe.merge_method.c_str(), a.out_dir.c_str());
        std::printf("  tensors   %zu (%zu merged, %zu copied) in %zu shard%s\n", s.tensors, s.merged, s.copied, s.shards, s.shards == 1 ? "" : "s");
        std::printf("  read      %s\n", xmerge_cli::bytes(static_cast<double>(s.bytes_read)).c_str());
        std::printf("  written   %s\n", xmerge_cli::bytes(static_cast<double>(s.bytes_written)).c_str());
        std::printf("  time      %.3f s\n", s.seconds);
        std::printf("  speed     %s (read + written)\n", xmerge_cli::rate(s.seconds > 0 ? moved / s.seconds : 0.0).c_str());
        return 0;
    }

    std::string value_text(const xmerge::parameter_value& v)
    {
        if (const double* d = std::get_if<double>(&v))
        {
            std::ostringstream s;
            s << *d;
            return s.str();
        }
        if (const bool* b = std::get_if<bool>(&v))
        {
            return *b ? "true" : "false";
        }
        if (const std::string* s = std::get_if<std::string>(&v))
        {
            return "\"" + *s + "\"";
        }
        return "[list]";
    }

    int methods()
    {
        const xmerge::method_registry registry = xmerge::builtin_methods();
        for (const auto& name : registry.names())
        {
            const auto& m = registry.find(name);
            std::printf("%s%s\n    %s\n", name.c_str(), m.needs_base ? "  (needs base_model)" : "", m.summary.c_str());
            for (const auto& p : m.parameters)
            {
                std::printf("    %-12s %-9s %-10s %s\n", p.name.c_str(), p.scope == xmerge::parameter_scope::per_model ? "per-model" : "global",
                            p.fallback ? value_text(*p.fallback).c_str() : (p.optional ? "optional" : "required"), p.help.c_str());
            }
        }
        return 0;
    }

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
            for (const auto& name : companion_files(m))
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

    run_args ra;
    CLI::App* run_cmd = app.add_subcommand("run", "Merge the models of a recipe into OUT_DIR (written atomically)");
    run_cmd->add_option("recipe", ra.recipe, "mergekit YAML recipe")->required();
    run_cmd->add_option("out_dir", ra.out_dir, "output checkpoint directory (must not exist or be empty, unless --overwrite)")->required();
    run_cmd->add_option("-j,--threads", ra.threads, "threads (0: every hardware thread)");
    run_cmd->add_option("--shard-size", ra.shard_size, "largest output shard, e.g. 5GB, 500MB, 2GiB")->capture_default_str();
    run_cmd->add_option("--out-dtype", ra.out_dtype, "dtype of merged tensors: float32, bfloat16, float16 (default: the recipe's, else the inputs')");
    run_cmd->add_option("--seed", ra.seed, "seed of random methods")->capture_default_str();
    run_cmd->add_option("--on-missing", ra.on_missing, "a tensor some model lacks: error or copy-base")->capture_default_str();
    run_cmd->add_option("--on-mismatch", ra.on_mismatch, "a tensor of another shape or dtype kind: error or copy-base")->capture_default_str();
    run_cmd->add_flag("--overwrite", ra.overwrite, "replace a non-empty OUT_DIR once the merge is complete");
    run_cmd->add_flag("--fsync", ra.sync, "flush the output to the device before finishing");
    run_cmd->add_flag("--no-progress", ra.no_progress, "no progress bar");
    run_cmd->add_flag("--no-copy-files", ra.no_copy_files, "do not copy the base model's config and tokenizer files");
    run_cmd->add_flag("--dry-run", ra.dry_run, "check the recipe and the models, write nothing");

    app.add_subcommand("methods", "List the merge methods and their parameters");

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
            return run(ra);
        }
        if (app.got_subcommand("methods"))
        {
            return methods();
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
