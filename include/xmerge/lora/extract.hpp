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

    /**
     * The factors of one weight's update in float32, as PEFT stores them
     * (scale 1): B = `left` [out, r], A = `right` [r, in], with the kept
     * singular values and energies.
     */
    using extracted_factors = low_rank_factors<float>;

    /**
     * The truncated SVD of finetuned - base for one 2-D weight, as LoRA
     * factors for `layout`: for out_in (a [out, in] weight) B = U_r S_r and
     * A = V_r^T; for in_out (an [in, out] weight: embeddings, fan_in_fan_out)
     * the same of the transposed update. Throws shape_error for tensors that
     * are not 2-D or differ in shape, parameter_error for a non-finite update.
     */
    inline extracted_factors extract_factors(const const_tensor_ref& finetuned, const const_tensor_ref& base, const factor_options& options = {},
                                             factor_layout layout = factor_layout::out_in);

    /**
     * The truncated SVD of an update already in PEFT's orientation ([out, in]:
     * B A = update), consumed. `tensor` names it in errors.
     */
    template <class T>
    extracted_factors factor_update(dense_matrix<T> update, const factor_options& options, const std::string& tensor);

    /// A truncated SVD's factors in float32.
    template <class T>
    extracted_factors to_factors(const low_rank_factors<T>& f);

    /**
     * A layer (scale 1) over the memory of `f`, updating weight `target`.
     * For a convolution weight (`weight_shape` of more than 2 dimensions) the
     * factors are viewed as [r, in, k...] and [out, r, 1...].
     */
    inline layer as_layer(const extracted_factors& f, std::string target, factor_layout layout = factor_layout::out_in, bool embedding = false,
                          const shape_type& weight_shape = {});

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
                                          return lora::factor_update(std::move(delta), options, name);
                                      });
    }

    template <class T>
    inline extracted_factors factor_update(dense_matrix<T> update, const factor_options& options, const std::string& tensor)
    {
        for (std::size_t i = 0; i < update.size(); ++i)
        {
            if (!std::isfinite(update.data()[i]))
            {
                throw parameter_error(tensor, "update", "the update is not finite at element " + std::to_string(i));
            }
        }
        return lora::to_factors(options.method == svd_method::full ? truncated_svd<T>(std::move(update), options.rule, tensor)
                                                                   : randomized_truncated_svd<T>(update, options.rule, options.randomized, tensor));
    }

    template <class T>
    inline extracted_factors to_factors(const low_rank_factors<T>& f)
    {
        extracted_factors out;
        out.left = dense_matrix<float>(f.left);
        out.right = dense_matrix<float>(f.right);
        out.singular_values = f.singular_values;
        out.total_energy = f.total_energy;
        out.kept_energy = f.kept_energy;
        return out;
    }

    inline layer as_layer(const extracted_factors& f, std::string target, factor_layout layout, bool embedding, const shape_type& weight_shape)
    {
        const std::size_t r = f.rank();
        shape_type a_shape{r, f.right.shape()[1]}, b_shape{f.left.shape()[0], r};
        if (weight_shape.size() > 2)
        {
            a_shape = shape_type{r};
            a_shape.insert(a_shape.end(), weight_shape.begin() + 1, weight_shape.end());
            while (b_shape.size() < weight_shape.size())
            {
                b_shape.push_back(1);
            }
        }
        layer l;
        l.a = as_tensor(f.right.data(), a_shape, target + ": lora_A");
        l.b = as_tensor(f.left.data(), b_shape, target + ": lora_B");
        l.target = std::move(target);
        l.scale = 1.0;
        l.layout = layout;
        l.embedding = embedding;
        return l;
    }
}

#endif
