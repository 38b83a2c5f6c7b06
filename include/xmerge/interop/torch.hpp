/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_INTEROP_TORCH_HPP
#define XMERGE_INTEROP_TORCH_HPP

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../core/expression.hpp"
#include "../core/tensor_ref.hpp"

/**
 * @file
 * LibTorch tensors and modules as xmerge tensors (target xmerge::torch).
 *
 * References share the tensors' memory: a merge evaluated into them, or an
 * online average updating them, changes the module's parameters in place.
 * Write parameters outside a forward/backward pass (as an optimizer step
 * does): autograd does not see these writes.
 */

namespace xmerge
{
    /// The xmerge dtype of a torch scalar type; layout_error naming `tensor` for types other than float, bfloat16 and half.
    inline dtype from_torch_dtype(c10::ScalarType type, const std::string& tensor = {});

    /// The torch scalar type of an xmerge dtype.
    inline c10::ScalarType to_torch_dtype(dtype type) noexcept;

    /**
     * A reference to a torch tensor's memory, named `name` (for errors).
     * The tensor must be defined, on the CPU, strided, contiguous
     * (row-major) and float32, bfloat16 or float16; layout_error naming it
     * otherwise (call .contiguous() or .to(torch::kFloat) first).
     */
    inline tensor_ref as_tensor(const at::Tensor& t, std::string_view name = {});

    /// References to every tensor of a state dict or of named_parameters(), named by their keys.
    inline std::vector<tensor_ref> as_tensors(const torch::OrderedDict<std::string, at::Tensor>& tensors);

    /**
     * A module's parameters (recursively, named as named_parameters() names
     * them), then, with `buffers`, its floating-point buffers (running
     * statistics; integer buffers such as counters are left out). Writable:
     * merges and the online averagers update the module through them.
     */
    inline std::vector<tensor_ref> writable_parameters_of(torch::nn::Module& module, bool buffers = false);

    /// The same, read-only (the parameter_list of merges and searches).
    inline std::vector<const_tensor_ref> parameters_of(const torch::nn::Module& module, bool buffers = false);

    /**
     * The gradients of a module's parameters after backward(), named like
     * the parameters (for diagonal_fisher). Throws parameter_error naming a
     * parameter whose gradient is undefined.
     */
    inline std::vector<const_tensor_ref> gradients_of(const torch::nn::Module& module);

    /// A new torch tensor of the expression's shape and `type`, holding its value.
    template <class E>
    at::Tensor to_torch(const tensor_expression<E>& expr, c10::ScalarType type = at::kFloat, const eval_options& options = {});

    namespace detail
    {
        inline std::vector<tensor_ref> module_tensors(const torch::nn::Module& module, bool buffers);
    }

    /********************
     * Implementation   *
     ********************/

    inline dtype from_torch_dtype(c10::ScalarType type, const std::string& tensor)
    {
        switch (type)
        {
            case at::kFloat:
                return dtype::float32;
            case at::kBFloat16:
                return dtype::bfloat16;
            case at::kHalf:
                return dtype::float16;
            default:
                throw layout_error(tensor, "", std::string("torch dtype ") + c10::toString(type) + " is not supported (float32, bfloat16 and float16 are)");
        }
    }

    inline c10::ScalarType to_torch_dtype(dtype type) noexcept
    {
        switch (type)
        {
            case dtype::bfloat16:
                return at::kBFloat16;
            case dtype::float16:
                return at::kHalf;
            case dtype::float32:
                break;
        }
        return at::kFloat;
    }

    inline tensor_ref as_tensor(const at::Tensor& t, std::string_view name)
    {
        const std::string n(name);
        if (!t.defined())
        {
            throw layout_error(n, "", "the torch tensor is undefined");
        }
        if (!t.device().is_cpu())
        {
            throw layout_error(n, "", "the torch tensor is on " + t.device().str() + "; move it to the CPU first");
        }
        if (t.layout() != at::kStrided)
        {
            throw layout_error(n, "", "the torch tensor is not strided (sparse or another layout)");
        }
        if (!t.is_contiguous())
        {
            throw layout_error(n, "", "the torch tensor is not contiguous; call .contiguous() first");
        }
        const dtype type = from_torch_dtype(t.scalar_type(), n);
        shape_type shape(t.sizes().begin(), t.sizes().end());
        return tensor_ref(t.data_ptr(), type, std::move(shape), n);
    }

    inline std::vector<tensor_ref> as_tensors(const torch::OrderedDict<std::string, at::Tensor>& tensors)
    {
        std::vector<tensor_ref> out;
        out.reserve(tensors.size());
        for (const auto& item : tensors)
        {
            out.push_back(xmerge::as_tensor(item.value(), item.key()));
        }
        return out;
    }

    namespace detail
    {
        inline std::vector<tensor_ref> module_tensors(const torch::nn::Module& module, bool buffers)
        {
            std::vector<tensor_ref> out = xmerge::as_tensors(module.named_parameters());
            if (buffers)
            {
                for (const auto& item : module.named_buffers())
                {
                    if (at::isFloatingType(item.value().scalar_type()))
                    {
                        out.push_back(xmerge::as_tensor(item.value(), item.key()));
                    }
                }
            }
            return out;
        }
    }

    inline std::vector<tensor_ref> writable_parameters_of(torch::nn::Module& module, bool buffers)
    {
        return detail::module_tensors(module, buffers);
    }

    inline std::vector<const_tensor_ref> parameters_of(const torch::nn::Module& module, bool buffers)
    {
        const std::vector<tensor_ref> refs = detail::module_tensors(module, buffers);
        return std::vector<const_tensor_ref>(refs.begin(), refs.end());
    }

    inline std::vector<const_tensor_ref> gradients_of(const torch::nn::Module& module)
    {
        std::vector<const_tensor_ref> out;
        for (const auto& item : module.named_parameters())
        {
            const at::Tensor& g = item.value().grad();
            if (!g.defined())
            {
                throw parameter_error(item.key(), "gradients", "has no gradient; run backward() first (or the parameter does not require grad)");
            }
            out.push_back(xmerge::as_tensor(g, item.key()));
        }
        return out;
    }

    template <class E>
    inline at::Tensor to_torch(const tensor_expression<E>& expr, c10::ScalarType type, const eval_options& options)
    {
        const std::string name = expr.derived().name();
        from_torch_dtype(type, name);
        const auto& shape = expr.derived().shape();
        at::Tensor out = at::empty(std::vector<std::int64_t>(shape.begin(), shape.end()), at::TensorOptions().dtype(type));
        xmerge::evaluate(expr, xmerge::as_tensor(out, name), options);
        return out;
    }
}

#endif
