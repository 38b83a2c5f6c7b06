/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LORA_FOLD_MODEL_HPP
#define XMERGE_LORA_FOLD_MODEL_HPP

#include <cstddef>
#include <string>
#include <utility>

#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../methods/registry.hpp"
#include "../model/merge.hpp"
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
 * released, so resident memory stays a small working set (one layer's
 * factors, a chunk buffer per thread, DoRA's per-feature norms).
 */

namespace xmerge::lora
{
    /**
     * Base tensor `name` with the adapter applied, lazily: the folded weight
     * of a layer, the base bias plus a scaled lora_B bias, a replacement, or
     * the base tensor itself. Throws io_error when the base lacks `name`.
     * For a caller that merges folded models tensor by tensor.
     */
    inline any_expression folded_tensor(const model& base, const adapter& a, const std::string& name);

    /**
     * Writes base with the adapter folded in to checkpoint directory
     * `out_dir`, as PEFT's merge_and_unload would compute it, through the
     * streaming merge (model/merge.hpp: threads, output dtype, shards,
     * companion files, progress and atomic output as there). The adapter is
     * checked against base first (adapter::check_against), so nothing is
     * written for an adapter that does not fit.
     */
    inline merge_summary fold_adapter(const model& base, const adapter& a, const std::string& out_dir, const merge_options& options = {});

    namespace detail
    {
        /**
         * Writes every tensor of `base`, in its order, as `produce(name)`
         * evaluated into the output file: a streaming merge of base with
         * itself whose one method ignores its inputs but the tensor's name.
         */
        template <class Produce>
        merge_summary write_model(const model& base, const std::string& out_dir, const merge_options& options, Produce produce);
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
        inline merge_summary write_model(const model& base, const std::string& out_dir, const merge_options& options, Produce produce)
        {
            method_info method;
            method.name = "lora";
            method.summary = "a tensor computed from its name";
            method.build = [produce = std::move(produce)](const method_inputs& in, const parameters&) -> any_expression { return produce(in.tensor); };
            method_registry registry;
            registry.add(method);
            merge_spec spec;
            spec.method = method.name;
            spec.models = {merge_source(&base)};
            return merge_models(spec, registry, out_dir, options);
        }
    }

    inline merge_summary fold_adapter(const model& base, const adapter& a, const std::string& out_dir, const merge_options& options)
    {
        a.check_against(base);
        for (const replacement& r : a.replacements())
        {
            if (!r.tensor.is_arithmetic())
            {
                throw io_error(a.file(), r.tensor.name, "replaces a tensor in full with dtype " + r.tensor.dtype + ", which folding does not copy");
            }
        }
        return detail::write_model(base, out_dir, options, [&base, &a](const std::string& name) { return folded_tensor(base, a, name); });
    }
}

#endif
