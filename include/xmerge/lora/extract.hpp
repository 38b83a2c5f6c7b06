/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LORA_EXTRACT_HPP
#define XMERGE_LORA_EXTRACT_HPP

#include <cstddef>
#include <string>
#include <utility>

#include "../core/error.hpp"
#include "../core/tensor_ref.hpp"
#include "../linalg/dense.hpp"
#include "../linalg/low_rank.hpp"
#include "../linalg/randomized_svd.hpp"
#include "layer.hpp"

/**
 * @file
 * Extracting a LoRA from a fine-tune, one weight at a time: the task vector
 * W_ft - W_base, truncated by SVD to B = U_r S_r and A = V_r^T.
 */

namespace xmerge::lora
{
    /// Which SVD extraction runs.
    enum class svd_method
    {
        full,       ///< LAPACK gesdd of the whole task vector
        randomized  ///< randomized range finder (needs a rank, or an energy fraction with a max_rank)
    };

    /// How one weight's update is factored.
    struct factor_options
    {
        /// The rank, or the energy fraction of ||W_ft - W_base||_F^2 to keep.
        truncation rule = truncation::rank(16);
        svd_method method = svd_method::full;
        randomized_svd_options randomized;
        /// float64 doubles the time and halves rounding in the factors.
        linalg_precision precision = linalg_precision::float32;
    };

    /// The factors of one weight's update, as PEFT stores them (scale 1).
    struct extracted_factors
    {
        /// A [r, in] and B [out, r] in float32.
        dense_matrix<float> a;
        dense_matrix<float> b;
        /// The kept singular values, ||update||_F^2 and the kept part of it.
        std::vector<double> singular_values;
        double total_energy = 0.0;
        double kept_energy = 0.0;

        std::size_t rank() const noexcept { return singular_values.size(); }
        double kept_fraction() const noexcept { return total_energy > 0.0 ? std::min(1.0, kept_energy / total_energy) : 1.0; }
    };

    /**
     * The truncated SVD of finetuned - base for one 2-D weight, as LoRA
     * factors for `layout`: for out_in (a [out, in] weight) B = U_r S_r and
     * A = V_r^T; for in_out (an [in, out] weight: embeddings, fan_in_fan_out)
     * the same of the transposed update. Throws shape_error for tensors that
     * are not 2-D or differ in shape, parameter_error for a non-finite update.
     */
    inline extracted_factors extract_factors(const const_tensor_ref& finetuned, const const_tensor_ref& base, const factor_options& options = {},
                                             factor_layout layout = factor_layout::out_in);

    /// A layer (scale 1) over the memory of `f`, updating `target`.
    inline layer as_layer(const extracted_factors& f, std::string target, factor_layout layout = factor_layout::out_in, bool embedding = false);

    /********************
     * Implementation   *
     ********************/

    inline extracted_factors extract_factors(const const_tensor_ref& finetuned, const const_tensor_ref& base, const factor_options& options,
                                             factor_layout layout)
    {
        const std::string& name = finetuned.name();
        if (base.dimension() != 2 || finetuned.shape() != base.shape())
        {
            throw shape_error(name, "", "extraction needs two 2-D tensors of one shape, got " + to_string(finetuned.shape()) + " and base "
                                            + to_string(base.shape()));
        }
        return xmerge::detail::with_precision(options.precision,
                                      [&](auto tag)
                                      {
                                          using T = decltype(tag);
                                          dense_matrix<T> delta = xmerge::detail::difference_matrix<T>(finetuned, base);
                                          if (layout == factor_layout::in_out)
                                          {
                                              delta = xmerge::detail::transposed(delta);
                                          }
                                          for (std::size_t i = 0; i < delta.size(); ++i)
                                          {
                                              if (!std::isfinite(delta.data()[i]))
                                              {
                                                  throw parameter_error(name, "finetuned", "the update is not finite at element " + std::to_string(i));
                                              }
                                          }
                                          const low_rank_factors<T> f = options.method == svd_method::full
                                                                            ? truncated_svd<T>(std::move(delta), options.rule, name)
                                                                            : randomized_truncated_svd<T>(delta, options.rule, options.randomized, name);
                                          extracted_factors out;
                                          out.b = dense_matrix<float>(f.left);
                                          out.a = dense_matrix<float>(f.right);
                                          out.singular_values = f.singular_values;
                                          out.total_energy = f.total_energy;
                                          out.kept_energy = f.kept_energy;
                                          return out;
                                      });
    }

    inline layer as_layer(const extracted_factors& f, std::string target, factor_layout layout, bool embedding)
    {
        layer l;
        l.a = as_tensor(f.a.data(), {f.a.shape()[0], f.a.shape()[1]}, target + ": lora_A");
        l.b = as_tensor(f.b.data(), {f.b.shape()[0], f.b.shape()[1]}, target + ": lora_B");
        l.target = std::move(target);
        l.scale = 1.0;
        l.layout = layout;
        l.embedding = embedding;
        return l;
    }
}

#endif
