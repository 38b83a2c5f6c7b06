/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_INTEROP_TORCH_MODEL_HPP
#define XMERGE_INTEROP_TORCH_MODEL_HPP

#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../model/model.hpp"
#include "../ops/input.hpp"
#include "torch.hpp"

/**
 * @file
 * LibTorch modules as xmerge models (needs xmerge::io too): a module's
 * tensors as a model that whole-model merges and the safetensors writer
 * read, and a model (a merged checkpoint, say) loaded into a module.
 */

namespace xmerge
{
    /**
     * An in-memory model referencing the module's parameters and, with
     * `buffers`, its floating-point buffers, named as named_parameters()
     * and named_buffers() name them. Nothing is copied: the module must
     * outlive the model and keep its tensors where they are.
     */
    inline model model_of(const torch::nn::Module& module, const std::string& name = "torch", bool buffers = true);

    /**
     * Copies each of the module's parameters (and floating-point buffers,
     * with `buffers`) from the tensor of the same name in `source`,
     * converting its dtype. Everything is checked before anything is
     * written: a tensor missing from the source or of another shape throws
     * io_error / shape_error naming it, leaving the module as it was.
     */
    inline void load_into(torch::nn::Module& module, const model& source, bool buffers = true, const eval_options& options = {});

    /********************
     * Implementation   *
     ********************/

    inline model model_of(const torch::nn::Module& module, const std::string& name, bool buffers)
    {
        model m(name);
        for (const auto& t : detail::module_tensors(module, buffers))
        {
            m.add(t.name(), t);
        }
        return m;
    }

    inline void load_into(torch::nn::Module& module, const model& source, bool buffers, const eval_options& options)
    {
        const std::vector<tensor_ref> targets = xmerge::writable_parameters_of(module, buffers);
        std::vector<input_node> reads;
        reads.reserve(targets.size());
        for (const auto& t : targets)
        {
            const model_tensor& s = source.at(t.name());
            if (s.shape != t.shape())
            {
                throw shape_error(t.name(), "", "the module has shape " + to_string(t.shape()) + " but " + s.origin() + " has " + to_string(s.shape));
            }
            reads.emplace_back(s.ref());
        }
        xmerge::evaluate_all(reads, targets, options);
    }
}

#endif
