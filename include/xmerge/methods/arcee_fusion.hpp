/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_ARCEE_FUSION_HPP
#define XMERGE_METHODS_ARCEE_FUSION_HPP

#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../core/parallel.hpp"
#include "../core/tensor_ref.hpp"
#include "../ops/any.hpp"
#include "../ops/computed.hpp"
#include "../ops/map.hpp"
#include "../ops/order_statistics.hpp"
#include "../ops/shared.hpp"
#include "../simd/batch.hpp"
#include "options.hpp"
#include "registry.hpp"

namespace xmerge
{
    /**
     * The importance of each entry of `model` against `base` in mergekit's
     * Arcee Fusion: |x - b| times the divergence of the row it lies in,
     *
     *     kl_row = sum_j p_j log(p_j / q_j),  p = softmax(x_row) + 1e-8, q = softmax(b_row) + 1e-8,
     *
     * rows running along the last dimension (a 1-D tensor is one row, so
     * its importance is |x - b| times one number). Computed as a whole, in
     * double per row, into one float32 tensor; a divergence below zero
     * (rounding, for rows that barely differ) counts as zero.
     */
    template <class E, class B>
    auto arcee_importance(const E& model, const B& base);

    /**
     * Arcee Fusion (mergekit `arcee_fusion`): keep the model's change where
     * its importance is an outlier of the tensor's importance distribution,
     *
     *     threshold = Q(0.5) + 1.5 (Q(0.75) - Q(0.25)),
     *     result    = base + (x - base) [importance >= threshold],
     *
     * Q(q) the value at position floor(q (n - 1)) of the sorted importances
     * (no interpolation), the threshold computed in float32 as mergekit does
     * for float32 tensors. The quantiles are exact over every entry: for
     * tensors above 10^6 entries mergekit estimates them from 10^6 entries
     * drawn at random with replacement (a result that changes from run to
     * run); here they are the exact order statistics, which that sample
     * estimates.
     *
     * Cost: one pass computing the importance (reading both tensors, writing
     * one float32 tensor), one copying it for the selection (linear time),
     * and the element-wise pass; two float32 copies of the tensor at peak.
     */
    template <class E, class B>
    any_expression arcee_fusion(const E& model, const B& base);

    /// `arcee_fusion` for the method registry: exactly one model besides the base.
    template <class = void>
    method_info arcee_fusion_method();

    namespace detail
    {
        /// Per row of `length`: out = |x - b| * KL(softmax(x) + eps || softmax(b) + eps), x in `out` on entry.
        inline void arcee_rows(float* out, const float* b, std::size_t rows, std::size_t length, const eval_options& options)
        {
            constexpr double eps = 1e-8;
            detail::run_tasks(rows, options.threads, options.exec, [] { return 0; },
                              [&](int&, std::size_t r)
                              {
                                  float* x = out + r * length;
                                  const float* y = b + r * length;
                                  double mx = -INFINITY, my = -INFINITY;
                                  for (std::size_t j = 0; j < length; ++j)
                                  {
                                      mx = std::max(mx, static_cast<double>(x[j]));
                                      my = std::max(my, static_cast<double>(y[j]));
                                  }
                                  double zx = 0.0, zy = 0.0;
                                  for (std::size_t j = 0; j < length; ++j)
                                  {
                                      zx += std::exp(static_cast<double>(x[j]) - mx);
                                      zy += std::exp(static_cast<double>(y[j]) - my);
                                  }
                                  double kl = 0.0;
                                  for (std::size_t j = 0; j < length; ++j)
                                  {
                                      const double p = std::exp(static_cast<double>(x[j]) - mx) / zx + eps;
                                      const double q = std::exp(static_cast<double>(y[j]) - my) / zy + eps;
                                      kl += p * std::log(p / q);
                                  }
                                  kl = kl < 0.0 ? 0.0 : kl;
                                  for (std::size_t j = 0; j < length; ++j)
                                  {
                                      x[j] = static_cast<float>(std::fabs(static_cast<double>(x[j]) - static_cast<double>(y[j])) * kl);
                                  }
                              });
        }

        /// median + 1.5 * (q75 - q25), every step rounded to float32 (two floats combined in double and rounded once).
        inline double arcee_threshold(const std::vector<float>& q)
        {
            if (q.size() != 3)
            {
                return 0.0;
            }
            const float spread = static_cast<float>(static_cast<double>(q[2]) - static_cast<double>(q[0]));
            const float margin = static_cast<float>(1.5 * static_cast<double>(spread));
            return static_cast<float>(static_cast<double>(q[1]) + static_cast<double>(margin));
        }

        // base + (x - base) * [importance >= threshold], as mergekit writes it
        struct arcee_blend_fn
        {
            template <class T>
            XMERGE_FORCE_INLINE T operator()(const T& base, const T& x, const T& importance, const T& threshold) const noexcept
            {
                return base + (x - base) * simd::select(importance >= threshold, T(1.0f), T(0.0f));
            }
        };

        struct arcee_parameters
        {
        };
    }

    /********************
     * Implementation   *
     ********************/

    template <class E, class B>
    inline auto arcee_importance(const E& model, const B& base)
    {
        if (model.shape() != base.shape())
        {
            throw shape_error(model.name(), "", "arcee_fusion: the model has shape " + xmerge::to_string(model.shape()) + ", the base "
                                                    + xmerge::to_string(base.shape()));
        }
        std::vector<const_tensor_ref> reads;
        model.for_each_input([&](const const_tensor_ref& r) { reads.push_back(r); });
        base.for_each_input([&](const const_tensor_ref& r) { reads.push_back(r); });
        const shape_type shape = model.shape();
        auto f = [model, base, shape](float* out, const eval_options& options)
        {
            const std::size_t n = xmerge::numel(shape);
            if (n == 0)
            {
                return;
            }
            const std::size_t length = shape.empty() ? 1 : shape.back();
            std::vector<float> b(n);
            xmerge::evaluate(model, tensor_ref(out, dtype::float32, shape), options);
            xmerge::evaluate(base, tensor_ref(b.data(), dtype::float32, shape), options);
            detail::arcee_rows(out, b.data(), n / length, length, options);
        };
        return xmerge::computed(shape, model.name(), std::move(f), std::move(reads));
    }

    template <class E, class B>
    inline any_expression arcee_fusion(const E& model, const B& base)
    {
        const auto importance = xmerge::shared(xmerge::arcee_importance(model, base));
        const std::size_t n = xmerge::numel(model.shape());
        std::vector<std::size_t> positions;
        if (n > 0)
        {
            positions = {xmerge::quantile_position(0.25, n), xmerge::quantile_position(0.5, n), xmerge::quantile_position(0.75, n)};
        }
        const auto threshold = xmerge::order_statistics(importance, std::move(positions), detail::arcee_threshold);
        return xmerge::map(detail::arcee_blend_fn{}, base, model, importance, threshold);
    }

    template <class T>
    method_info arcee_fusion_method()
    {
        using P = detail::arcee_parameters;
        return xmerge::make_method("arcee_fusion", "the model's changes where their divergence-weighted importance is an outlier (Arcee Fusion)", true,
                                   option_set<P>(),
                                   [](const method_inputs& in, const P&) -> any_expression
                                   {
                                       if (in.models.size() != 1)
                                       {
                                           throw parameter_error(in.tensor, "models",
                                                                 "method 'arcee_fusion' takes exactly one model besides the base_model, got "
                                                                     + std::to_string(in.models.size()));
                                       }
                                       return xmerge::arcee_fusion(in.models[0], *in.base);
                                   });
    }
}

#endif
