// xmerge run and xmerge methods: recipes through the method registry.

#include <cstdio>
#include <filesystem>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <variant>

#include <xmerge/methods/builtin.hpp>
#include <xmerge/recipe/recipe_job.hpp>
#if XMERGE_WITH_LORA
#include <unistd.h>

#include <xmerge/lora/fold_cache.hpp>
#endif

#include "commands.hpp"
#include "dtype_option.hpp"
#include "format.hpp"
#include "progress.hpp"
#include "signals.hpp"

namespace xmerge_cli
{
    namespace
    {
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

        void stop_if_requested()
        {
            if (stop_on_signals::requested())
            {
                throw std::runtime_error("interrupted; nothing was written");
            }
        }

#if XMERGE_WITH_LORA
        // MODEL+ADAPTER references: folded once each, into --lora-merge-cache
        // (kept) or a hidden directory next to OUT_DIR (removed at exit).
        std::unique_ptr<xmerge::lora::fold_cache> adapter_folds(const run_args& a)
        {
            xmerge::lora::fold_cache_options o;
            o.threads = a.threads;
            o.out_dtype = xmerge_cli::dtype_option(a.lora_dtype, "--lora-merge-dtype");
            o.progress = [](const xmerge::merge_progress&) { stop_if_requested(); };
            if (!a.lora_cache.empty())
            {
                return std::make_unique<xmerge::lora::fold_cache>(a.lora_cache, false, o);
            }
            const std::filesystem::path out = std::filesystem::absolute(a.out_dir).lexically_normal();
            const std::string name = "." + (out.filename().empty() ? out.parent_path().filename() : out.filename()).string() + ".adapters-" + std::to_string(::getpid());
            const std::filesystem::path parent = out.filename().empty() ? out.parent_path().parent_path() : out.parent_path();
            return std::make_unique<xmerge::lora::fold_cache>((parent / name).string(), true, o);
        }
#endif
    }

    int run(const run_args& a)
    {
        for (const auto& note : a.ignored)
        {
            std::fprintf(stderr, "xmerge: note: %s\n", note.c_str());
        }
        const xmerge::method_registry registry = xmerge::builtin_methods();
        xmerge::recipe_job_options o;
        o.merge.threads = a.threads;
        o.merge.seed = a.seed;
        o.merge.strict = a.strict;
        o.merge.on_missing = parse_rule(a.on_missing, "--on-missing");
        o.merge.on_mismatch = parse_rule(a.on_mismatch, "--on-mismatch");
        o.merge.output.max_shard_bytes = a.shard_bytes;
        o.merge.output.overwrite = a.overwrite;
        o.merge.output.sync = a.sync;
        o.merge.output.on_cleanup = xmerge_cli::print_note;
        o.out_dtype = xmerge_cli::optional_dtype_option(a.out_dtype, "--out-dtype");
        o.bind.truncate_vocabulary = a.truncate_vocabulary;
#if XMERGE_WITH_LORA
        std::unique_ptr<xmerge::lora::fold_cache> folds;
        o.bind.fold_adapter = [&](const std::string& model, const std::string& adapter)
        {
            if (!folds)
            {
                folds = adapter_folds(a);
            }
            const std::size_t before = folds->folds();
            std::string path = folds->folded(model, adapter);
            std::fprintf(stderr, "xmerge: %s %s into %s: %s\n", folds->folds() > before ? "folded" : "reused the fold of", adapter.c_str(), model.c_str(),
                         path.c_str());
            return path;
        };
#endif
        o.copy_files = !a.no_copy_files;
        o.copy_tokenizer = a.copy_tokenizer;
        o.model_card = a.model_card;

        // Before any thread starts: they inherit the blocked signals.
        stop_on_signals signals;
        // Everything is checked before anything is written (adapters are folded here).
        xmerge::recipe_job job(a.recipe, a.out_dir, registry, o);
        for (const auto& warning : job.warnings())
        {
            std::fprintf(stderr, "xmerge: warning: %s\n", printable(warning).c_str());
        }
        for (const auto& note : job.notes())
        {
            xmerge_cli::print_note(note);
        }
        const xmerge::merge_plan& plan = job.plan();
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

        progress_bar bar(!a.no_progress);
        xmerge::merge_summary s;
        try
        {
            s = job.run(
                [&bar](const xmerge::merge_progress& p)
                {
                    if (stop_on_signals::requested())
                    {
                        throw std::runtime_error("interrupted");
                    }
                    bar(p);
                });
        }
        catch (const std::exception&)
        {
            if (const int sig = stop_on_signals::requested())
            {
                std::fprintf(stderr, "xmerge: interrupted by signal %d; the unfinished output was removed, nothing was written\n", sig);
                return 128 + sig;
            }
            throw;
        }

        const double moved = static_cast<double>(s.bytes_read + s.bytes_written);
        std::printf("xmerge: %s merge written to %s\n", job.parsed().merge_method.c_str(), a.out_dir.c_str());
        std::printf("  tensors   %zu (%zu merged, %zu copied) in %zu shard%s\n", s.tensors, s.merged, s.copied, s.shards, s.shards == 1 ? "" : "s");
        std::printf("  read      %s\n", bytes(static_cast<double>(s.bytes_read)).c_str());
        std::printf("  written   %s\n", bytes(static_cast<double>(s.bytes_written)).c_str());
        std::printf("  time      %.3f s\n", s.seconds);
        std::printf("  speed     %s (read + written)\n", rate(s.seconds > 0 ? moved / s.seconds : 0.0).c_str());
        return 0;
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
}
