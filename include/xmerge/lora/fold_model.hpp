/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LORA_FOLD_MODEL_HPP
#define XMERGE_LORA_FOLD_MODEL_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../core/parallel.hpp"
#include "../io/checkpoint_writer.hpp"
#include "../model/model.hpp"
#include "../ops/any.hpp"
#include "../ops/arithmetic.hpp"
#include "../ops/input.hpp"
#include "adapter.hpp"
#include "fold.hpp"

/**
 * @file
 * Folding an adapter into a whole model, tensor by tensor: each output
 * tensor is evaluated straight into the output file and its input pages
 * released, so resident memory stays a small working set (the largest
 * tensor's factors, a chunk buffer per thread, DoRA's per-feature norms).
 */

namespace xmerge::lora
{
    /// How a whole-model operation runs and what it writes.
    struct model_options
    {
        /// 0: every hardware thread; 1: the calling thread only.
        std::size_t threads = 0;
        /// Runs the parallel work when set (else a pool of `threads` is made for the call).
        executor* exec = nullptr;
        /// dtype of F32/BF16/F16 tensors written; by default that of the base's tensor.
        std::optional<dtype> out_dtype;
        /// Shard size, overwrite, sync, metadata of the output.
        io::checkpoint_options output;
        /// Files copied into the output directory: (source path, name in the output).
        std::vector<std::pair<std::string, std::string>> files;
        /// Files written from memory: (name in the output, contents).
        std::vector<std::pair<std::string, std::string>> file_contents;
    };

    /// What a whole-model operation wrote.
    struct model_summary
    {
        std::size_t tensors = 0;
        /// Tensors computed (folded, merged, replaced); the others were copied from the base.
        std::size_t computed = 0;
        std::size_t copied = 0;
        std::size_t shards = 0;
        std::uint64_t bytes_written = 0;
        double seconds = 0.0;
    };

    /**
     * Base tensor `name` with the adapter applied, lazily: the folded weight
     * of a layer, the base bias plus a scaled lora_B bias, a replacement, or
     * the base tensor itself. Throws io_error when the base lacks `name`.
     * For a caller that merges folded models tensor by tensor.
     */
    inline any_expression folded_tensor(const model& base, const adapter& a, const std::string& name);

    /**
     * Writes base with the adapter folded in to checkpoint directory
     * `out_dir`, atomically, as PEFT's merge_and_unload would compute it.
     * Every tensor of base is written in its order; the adapter is checked
     * against base first (adapter::check_against), so nothing is written
     * for an adapter that does not fit.
     */
    inline model_summary fold_adapter(const model& base, const adapter& a, const std::string& out_dir, const model_options& options = {});

    namespace detail
    {
        /**
         * Writes a checkpoint with base's tensors, names and order: each F32,
         * BF16 or F16 tensor is `produce(t)` evaluated in the output dtype
         * when that returns an expression, else copied (as are other dtypes).
         */
        template <class Produce>
        model_summary write_model(const model& base, const std::string& out_dir, const model_options& options, Produce&& produce);
    }

    /********************
     * Implementation   *
     ********************/

    inline any_expression folded_tensor(const model& base, const adapter& a, const std::string& name)
    {
        const model_tensor& t = base.at(name);
        if (const layer* l = a.find(name))
        {
            return fold(t.ref(), *l);
        }
        if (const layer* l = a.find_bias_update(name))
        {
            return input(t.ref()) + l->scale * input(*l->bias);
        }
        if (const replacement* r = a.find_replacement(name))
        {
            return input(r->tensor.ref().with_name(name));
        }
        return input(t.ref());
    }

    namespace detail
    {
        template <class Produce>
        inline model_summary write_model(const model& base, const std::string& out_dir, const model_options& options, Produce&& produce)
        {
            const auto start = std::chrono::steady_clock::now();
            std::unique_ptr<thread_pool> own_pool;
            eval_options eval;
            eval.threads = options.threads;
            eval.exec = options.exec;
            if (eval.exec == nullptr && options.threads != 1)
            {
                own_pool = std::make_unique<thread_pool>(options.threads);
                eval.exec = own_pool.get();
            }
            std::vector<io::tensor_info> layout;
            for (const model_tensor& t : base.tensors())
            {
                io::tensor_info info;
                info.name = t.name;
                info.dtype = t.is_arithmetic() && options.out_dtype ? io::safetensors_name(*options.out_dtype) : t.dtype;
                info.shape = t.shape;
                layout.push_back(std::move(info));
            }
            io::checkpoint_writer writer(out_dir, layout, options.output);
            model_summary summary;
            for (std::size_t i = 0; i < layout.size(); ++i)
            {
                const model_tensor& t = base.tensors()[i];
                std::optional<any_expression> expr;
                if (t.is_arithmetic())
                {
                    expr = produce(t);
                }
                if (expr)
                {
                    xmerge::evaluate(*expr, writer.tensor(t.name), eval);
                    ++summary.computed;
                }
                else
                {
                    if (layout[i].dtype == t.dtype)
                    {
                        writer.write(t.name, t.data, t.bytes);
                    }
                    else
                    {
                        xmerge::evaluate(input(t.ref()), writer.tensor(t.name), eval);
                    }
                    ++summary.copied;
                }
                writer.finish(t.name);
                base.release(t);
            }
            for (const auto& [source, name] : options.files)
            {
                writer.add_file(source, name);
            }
            for (const auto& [name, contents] : options.file_contents)
            {
                writer.add_file_contents(name, contents);
            }
            writer.commit();
            summary.tensors = layout.size();
            summary.shards = writer.shard_count();
            summary.bytes_written = writer.total_bytes();
            summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            return summary;
        }
    }

    inline model_summary fold_adapter(const model& base, const adapter& a, const std::string& out_dir, const model_options& options)
    {
        a.check_against(base);
        for (const replacement& r : a.replacements())
        {
            if (!r.tensor.is_arithmetic())
            {
                throw io_error(a.file(), r.tensor.name, "replaces a tensor in full with dtype " + r.tensor.dtype + ", which folding does not copy");
            }
        }
        return detail::write_model(base, out_dir, options,
                                   [&](const model_tensor& t) -> std::optional<any_expression>
                                   {
                                       if (!a.find(t.name) && !a.find_bias_update(t.name) && !a.find_replacement(t.name))
                                       {
                                           return std::nullopt;
                                       }
                                       return folded_tensor(base, a, t.name);
                                   });
    }
}

#endif
