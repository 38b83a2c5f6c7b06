// xmerge lora fold | extract | merge: PEFT adapters folded into a model,
// extracted from a fine-tune, and merged as adapters or into a model.

#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <xmerge/lora/extract_model.hpp>
#include <xmerge/lora/fold_model.hpp>
#include <xmerge/lora/soup.hpp>

#include "commands.hpp"
#include "dtype_option.hpp"
#include "format.hpp"
#include "progress.hpp"

namespace xmerge_cli
{
    namespace
    {
        // --rank R, or --energy F with an optional --max-rank: exactly one of the first two.
        xmerge::lora::factor_options factoring(const lora_args& a)
        {
            if ((a.rank == 0) == (a.energy == 0.0))
            {
                throw xmerge::parameter_error("", "--rank", "give exactly one of --rank R (R >= 1) and --energy F (0 < F <= 1)");
            }
            if (a.energy != 0.0 && !(a.energy > 0.0 && a.energy <= 1.0))
            {
                throw xmerge::parameter_error("", "--energy", "must lie in (0, 1], got " + std::to_string(a.energy));
            }
            xmerge::lora::factor_options f;
            f.rule = a.rank ? xmerge::truncation::rank(a.rank)
                            : xmerge::truncation::energy(a.energy, a.max_rank ? a.max_rank : std::numeric_limits<std::size_t>::max());
            if (a.randomized)
            {
                if (a.rank == 0 && a.max_rank == 0)
                {
                    throw xmerge::parameter_error("", "--randomized", "needs --rank, or --energy with --max-rank (the sketch's size)");
                }
                f.method = xmerge::lora::svd_method::randomized;
                f.randomized.seed = a.seed;
            }
            return f;
        }

        xmerge::lora::soup_method soup_method_of(const std::string& name)
        {
            using m = xmerge::lora::soup_method;
            if (name == "linear")
            {
                return m::linear;
            }
            if (name == "ties")
            {
                return m::ties;
            }
            if (name == "dare_linear")
            {
                return m::dare_linear;
            }
            if (name == "dare_ties")
            {
                return m::dare_ties;
            }
            throw xmerge::parameter_error("", "--method", "'" + name + "' is not one of linear, ties, dare_linear, dare_ties");
        }

        xmerge::merge_options output_options(const lora_args& a, progress_bar& bar)
        {
            xmerge::merge_options o;
            o.threads = a.threads;
            o.out_dtype = xmerge_cli::optional_dtype_option(a.out_dtype, "--out-dtype");
            o.output.max_shard_bytes = a.shard_bytes;
            o.output.overwrite = a.overwrite;
            o.progress = [&bar](const xmerge::merge_progress& p) { bar(p); };
            return o;
        }

        void print_report(const xmerge::lora::extraction_report& r, const std::string& out_dir)
        {
            std::size_t factored = 0, full = 0, unchanged = 0;
            for (const auto& t : r.tensors)
            {
                using kind = xmerge::lora::extracted_tensor::kind;
                const char* what = t.what == kind::lora ? "lora" : t.what == kind::full ? "full" : "unchanged";
                factored += t.what == kind::lora;
                full += t.what == kind::full;
                unchanged += t.what == kind::unchanged;
                if (t.what == kind::lora)
                {
                    std::printf("  %-56s %-9s rank %-5zu kept energy %.6f  |update| %.4g\n", t.name.c_str(), what, t.rank, t.kept_energy, t.update_norm);
                }
                else if (t.what == kind::full)
                {
                    std::printf("  %-56s %-9s |update| %.4g\n", t.name.c_str(), what, t.update_norm);
                }
            }
            std::printf("xmerge: adapter written to %s: %zu factored, %zu saved in full, %zu unchanged, in %.3f s\n", out_dir.c_str(), factored, full, unchanged,
                        r.seconds);
        }
    }

    int lora(const lora_args& a)
    {
        progress_bar bar(!a.no_progress);
        const xmerge::model base = xmerge::model::open(a.base);
        if (a.command == "fold")
        {
            const xmerge::lora::adapter adapter = xmerge::lora::adapter::open(a.inputs.at(0));
            const xmerge::merge_summary s = xmerge::lora::fold_adapter(base, adapter, a.out_dir, output_options(a, bar));
            std::printf("xmerge: %s folded into %s, written to %s (%zu tensors, %s) in %.3f s\n", a.inputs[0].c_str(), a.base.c_str(), a.out_dir.c_str(), s.tensors,
                        bytes(static_cast<double>(s.bytes_written)).c_str(), s.seconds);
            return 0;
        }
        if (a.command == "extract")
        {
            const xmerge::model finetuned = xmerge::model::open(a.inputs.at(0));
            xmerge::lora::extraction_options o;
            static_cast<xmerge::lora::factor_options&>(o) = factoring(a);
            o.embeddings_as_lora = a.embeddings_as_lora;
            o.fan_in_fan_out = a.fan_in_fan_out;
            o.out_dtype = xmerge_cli::optional_dtype_option(a.out_dtype, "--out-dtype");
            o.base_model_name_or_path = a.base;
            o.overwrite = a.overwrite;
            print_report(xmerge::lora::extract_adapter(base, finetuned, a.out_dir, o), a.out_dir);
            return 0;
        }
        // merge
        std::vector<xmerge::lora::adapter> adapters;
        for (const auto& path : a.inputs)
        {
            adapters.push_back(xmerge::lora::adapter::open(path));
        }
        xmerge::lora::soup_options so;
        so.method = soup_method_of(a.method);
        so.weights = a.weights;
        so.densities = a.densities;
        so.lambda = a.lambda;
        so.seed = a.seed;
        if (a.to == "model")
        {
            if (a.rank != 0 || a.energy != 0.0)
            {
                throw xmerge::parameter_error("", "--rank", "a merge into a model (--to model) is not factored; --rank and --energy apply to --to adapter");
            }
            const xmerge::merge_summary s = xmerge::lora::soup_to_model(base, adapters, a.out_dir, so, output_options(a, bar));
            std::printf("xmerge: %zu adapters merged (%s) into %s, written to %s (%zu tensors) in %.3f s\n", adapters.size(), a.method.c_str(), a.base.c_str(),
                        a.out_dir.c_str(), s.tensors, s.seconds);
            return 0;
        }
        if (a.to != "adapter")
        {
            throw xmerge::parameter_error("", "--to", "must be 'adapter' or 'model', got '" + a.to + "'");
        }
        xmerge::lora::write_options wo;
        wo.out_dtype = xmerge_cli::optional_dtype_option(a.out_dtype, "--out-dtype");
        wo.overwrite = a.overwrite;
        print_report(xmerge::lora::soup_to_adapter(base, adapters, a.out_dir, so, factoring(a), wo), a.out_dir);
        return 0;
    }
}
