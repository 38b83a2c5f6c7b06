/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LORA_LAYER_HPP
#define XMERGE_LORA_LAYER_HPP

#include <cmath>
#include <cstddef>
#include <optional>
#include <string>

#include "../core/error.hpp"
#include "../core/tensor_ref.hpp"

/**
 * @file
 * One low-rank adapted weight: the factors of a LoRA update and how they
 * lie in the weight they update. Needs only the core.
 */

namespace xmerge::lora
{
    /**
     * Where the product B A lands in the stored weight W.
     *
     * With A [r, in] and B [out, r]:
     *  - `out_in`: W is [out, in] (nn.Linear) or [out, in, k...] (a
     *    convolution, A [r, in, k...], B [out, r, 1...]), and W += s B A;
     *  - `in_out`: W is [in, out] (GPT-2's Conv1D under PEFT's
     *    fan_in_fan_out, or an embedding table [vocab, dim]), and W += s (B A)^T.
     */
    enum class factor_layout
    {
        out_in,
        in_out
    };

    /// LoRA's scale: alpha / r, or alpha / sqrt(r) with rank-stabilized LoRA (rsLoRA).
    inline double scaling(double alpha, std::size_t rank, bool rslora);

    /**
     * One adapted weight: W' = W + scale * B A (placed per `layout`), or with
     * DoRA W' = (m / ||V||) V for V = W + scale * B A, the norm taken per
     * output feature (a row of an `out_in` weight, a column of an `in_out` one).
     *
     * References memory the caller keeps alive (an open adapter, buffers).
     * The tensors' names are used in error messages.
     */
    struct layer
    {
        /// Name of the weight in the base model ("model.layers.0.self_attn.q_proj.weight").
        std::string target;
        /// Down-projection A [r, in] (or [r, in, k...]).
        const_tensor_ref a;
        /// Up-projection B [out, r] (or [out, r, 1...]).
        const_tensor_ref b;
        double scale = 1.0;
        factor_layout layout = factor_layout::out_in;
        /// DoRA's magnitude m, one value per output feature.
        std::optional<const_tensor_ref> magnitude;
        /// A bias update: bias' = bias + scale * b_bias (PEFT's lora_bias), one value per output feature.
        std::optional<const_tensor_ref> bias;
        /// An embedding table (PEFT names its factors lora_embedding_A/B); its layout is in_out.
        bool embedding = false;

        std::size_t rank() const noexcept { return a.dimension() == 0 ? 0 : a.shape()[0]; }
        bool is_dora() const noexcept { return magnitude.has_value(); }
    };

    /**
     * Why `l` cannot update a weight of shape `weight` (ranks of A and B that
     * disagree, extents that do not fit, a magnitude or bias of the wrong
     * size, a scale that is not finite); empty when it can.
     */
    inline std::string mismatch(const layer& l, const shape_type& weight);

    /// Throws shape_error naming the layer's target unless mismatch() is empty.
    inline void check(const layer& l, const shape_type& weight);

    /// Output features of a weight of shape `weight` updated per `layout`.
    inline std::size_t output_features(factor_layout layout, const shape_type& weight) noexcept;

    /********************
     * Implementation   *
     ********************/

    inline double scaling(double alpha, std::size_t rank, bool rslora)
    {
        if (rank == 0)
        {
            throw parameter_error("", "r", "a LoRA rank must be positive");
        }
        const double r = static_cast<double>(rank);
        return alpha / (rslora ? std::sqrt(r) : r);
    }

    inline std::size_t output_features(factor_layout layout, const shape_type& weight) noexcept
    {
        if (weight.empty())
        {
            return 0;
        }
        return layout == factor_layout::out_in ? weight[0] : weight.back();
    }

    inline std::string mismatch(const layer& l, const shape_type& weight)
    {
        const auto& a = l.a.shape();
        const auto& b = l.b.shape();
        const auto names = " (lora_A '" + l.a.name() + "' " + to_string(a) + ", lora_B '" + l.b.name() + "' " + to_string(b) + ")";
        if (a.size() < 2 || b.size() < 2)
        {
            return "LoRA factors must have at least 2 dimensions" + names;
        }
        const std::size_t r = a[0];
        if (r == 0 || b[1] != r)
        {
            return "rank mismatch: lora_A has " + std::to_string(r) + " rows but lora_B has " + std::to_string(b[1]) + " columns" + names;
        }
        for (std::size_t d = 2; d < b.size(); ++d)
        {
            if (b[d] != 1)
            {
                return "lora_B's trailing extents must be 1" + names;
            }
        }
        if (!std::isfinite(l.scale))
        {
            return "scale is not finite";
        }
        bool fits = false;
        if (l.layout == factor_layout::out_in)
        {
            fits = weight.size() == a.size() && weight[0] == b[0];
            for (std::size_t d = 1; fits && d < a.size(); ++d)
            {
                fits = weight[d] == a[d];
            }
        }
        else
        {
            fits = weight.size() == 2 && a.size() == 2 && b.size() == 2 && weight[0] == a[1] && weight[1] == b[0];
        }
        if (!fits)
        {
            const char* expected = l.layout == factor_layout::out_in ? "[out, in...] = [B rows, A columns...]" : "[in, out] = [A columns, B rows]";
            return "factors do not fit a weight of shape " + to_string(weight) + ", which should be " + expected + names;
        }
        const std::size_t features = output_features(l.layout, weight);
        if (l.magnitude && l.magnitude->size() != features)
        {
            return "DoRA magnitude '" + l.magnitude->name() + "' has " + std::to_string(l.magnitude->size()) + " values for " + std::to_string(features)
                   + " output features";
        }
        if (l.bias && l.bias->size() != features)
        {
            return "bias update '" + l.bias->name() + "' has " + std::to_string(l.bias->size()) + " values for " + std::to_string(features)
                   + " output features";
        }
        return {};
    }

    inline void check(const layer& l, const shape_type& weight)
    {
        const std::string why = mismatch(l, weight);
        if (!why.empty())
        {
            throw shape_error(l.target, "", why);
        }
    }
}

#endif
