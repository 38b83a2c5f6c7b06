/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_PCB_HPP
#define XMERGE_METHODS_PCB_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../core/parallel.hpp"
#include "../core/tensor_ref.hpp"
#include "../kernels/order_select.hpp"
#include "../ops/any.hpp"
#include "../ops/computed.hpp"
#include "../ops/list.hpp"
#include "../ops/map.hpp"
#include "../ops/task_vector.hpp"
#include "options.hpp"
#include "registry.hpp"
#include "task_arithmetic.hpp"

namespace xmerge
{
    /// Parameters of PCB merging (names as FusionBench-style configurations spell them).
    struct pcb_options
    {
        double pcb_ratio = 0.1;        ///< share r of each task vector's entries kept (those of highest competition score)
        double min_ratio = 1e-4;       ///< magnitudes below this quantile of each task vector are raised to it
        double max_ratio = 1e-4;       ///< magnitudes above the (1 - max_ratio) quantile are lowered to it
        double scaling_factor = 1.0;   ///< lambda: scale of the merged task vector
    };

    /**
     * PCB merging, Parameter Competition Balancing (Du et al., NeurIPS 2024).
     * Per tensor, with K task vectors t_i = x_i - base of d entries each:
     *
     * 1. clamp outliers: a_i = clamp(|t_i|, lo_i, hi_i), lo_i and hi_i the
     *    magnitudes at ascending positions floor(d min_ratio) and
     *    trunc(d (1 - max_ratio) - 1); c_i = sign(t_i) a_i;
     * 2. intra-balancing: s_i = exp(K norm(a_i)^2), norm(v) = (v - min v) /
     *    (max v - min v) over the tensor;
     * 3. inter-balancing: g_i = tanh(t_i * sum_j t_j) (unclamped t);
     * 4. drop: score_i = s_i g_i; below its value at ascending position
     *    floor(d (1 - pcb_ratio)) a score is raised to that value, and
     *    w_i = norm(score_i), so about the top pcb_ratio share keeps a weight
     *    in (0, 1] and the rest weighs 0;
     * 5. result = base + lambda sum_i w_i c_i / max(sum_i w_i, 1e-12).
     *
     * As in the authors' code, where a norm() divides by zero (a constant
     * vector) it is taken as 0 here instead of NaN. The paper flattens the
     * whole model into one vector per task; like every per-tensor method
     * this computes the quantiles and norms per tensor.
     *
     * Computed as a whole per tensor: one pass evaluates the K task vectors
     * into float32 buffers; then per model two linear-time selections
     * (clamp bounds and drop threshold) and about three passes over d
     * floats. Memory: K + 4 float32 copies of the tensor.
     */
    template <class E, class B>
    any_expression pcb(const expression_list<E>& models, const B& base, const pcb_options& options = {});

    /// `pcb` for the method registry.
    template <class = void>
    method_info pcb_method();

    namespace detail
    {
        /// Python's int(x) of a non-negative-or-small value, kept inside [0, n - 1].
        inline std::size_t pcb_position(double x, std::size_t n) noexcept
        {
            const double t = std::trunc(x);
            return t <= 0.0 ? 0 : std::min(static_cast<std::size_t>(t), n - 1);
        }

        /// Runs f(begin, end) over blocks of [0, n) in parallel.
        template <class F>
        void pcb_blocks(std::size_t n, const eval_options& options, F&& f)
        {
            constexpr std::size_t block = 1 << 16;
            detail::run_tasks((n + block - 1) / block, options.threads, options.exec, [] { return 0; },
                              [&](int&, std::size_t t) { f(t * block, std::min(n, (t + 1) * block)); });
        }

        /// The merged task vector sum_i w_i c_i / max(sum_i w_i, 1e-12) of task vectors in `tau`, into out.
        inline void pcb_merge(const std::vector<std::vector<float>>& tau, std::size_t n, const pcb_options& o, float* out, const eval_options& options)
        {
            const std::size_t k = tau.size();
            std::vector<float> sum(n), total(n, 0.0f), score(n), scratch(n);
            pcb_blocks(n, options,
                       [&](std::size_t b, std::size_t e)
                       {
                           for (std::size_t x = b; x < e; ++x)
                           {
                               double s = 0.0;
                               for (std::size_t i = 0; i < k; ++i)
                               {
                                   s += tau[i][x];
                               }
                               sum[x] = static_cast<float>(s);
                               out[x] = 0.0f;
                           }
                       });
            const std::size_t clamp_at[2] = {pcb_position(static_cast<double>(n) * o.min_ratio, n),
                                             pcb_position(static_cast<double>(n) * (1.0 - o.max_ratio) - 1.0, n)};
            const std::size_t drop_at[2] = {pcb_position(static_cast<double>(n) * (1.0 - o.pcb_ratio), n), n - 1};
            const double kd = static_cast<double>(k);
            for (std::size_t i = 0; i < k; ++i)
            {
                const float* t = tau[i].data();
                for (std::size_t x = 0; x < n; ++x)
                {
                    scratch[x] = std::fabs(t[x]);
                }
                float bounds[2];
                if (clamp_at[0] <= clamp_at[1])
                {
                    kernels::select_positions(scratch.data(), n, clamp_at, 2, bounds);
                }
                else
                {
                    const std::size_t swapped[2] = {clamp_at[1], clamp_at[0]};
                    kernels::select_positions(scratch.data(), n, swapped, 2, bounds);
                    std::swap(bounds[0], bounds[1]);
                }
                const double lo = bounds[0], hi = bounds[1];
                const double a_min = std::min(lo, hi), a_range = hi - a_min;
                pcb_blocks(n, options,
                           [&](std::size_t b, std::size_t e)
                           {
                               for (std::size_t x = b; x < e; ++x)
                               {
                                   const double a = std::min(std::max(static_cast<double>(std::fabs(t[x])), lo), hi);
                                   const double s = a_range > 0.0 ? (a - a_min) / a_range : 0.0;
                                   const double v = std::exp(kd * s * s) * std::tanh(static_cast<double>(t[x]) * static_cast<double>(sum[x]));
                                   score[x] = static_cast<float>(v);
                                   scratch[x] = score[x];
                               }
                           });
                float cut[2];
                kernels::select_positions(scratch.data(), n, drop_at, 2, cut);
                const double floor_score = cut[0], top = cut[1], range = top - floor_score;
                pcb_blocks(n, options,
                           [&](std::size_t b, std::size_t e)
                           {
                               for (std::size_t x = b; x < e; ++x)
                               {
                                   const double v = std::min(std::max(static_cast<double>(score[x]), floor_score), top);
                                   const double w = range > 0.0 ? (v - floor_score) / range : 0.0;
                                   const double a = std::min(std::max(static_cast<double>(std::fabs(t[x])), lo), hi);
                                   const double c = t[x] > 0.0f ? a : (t[x] < 0.0f ? -a : 0.0);
                                   out[x] = static_cast<float>(static_cast<double>(out[x]) + w * c);
                                   total[x] = static_cast<float>(static_cast<double>(total[x]) + w);
                               }
                           });
            }
            pcb_blocks(n, options,
                       [&](std::size_t b, std::size_t e)
                       {
                           for (std::size_t x = b; x < e; ++x)
                           {
                               out[x] = static_cast<float>(static_cast<double>(out[x]) / std::max(static_cast<double>(total[x]), 1e-12));
                           }
                       });
        }

        inline void check_pcb_options(const std::string& tensor, const pcb_options& o)
        {
            if (!(o.pcb_ratio > 0.0 && o.pcb_ratio <= 1.0))
            {
                throw parameter_error(tensor, "pcb_ratio", "must be in (0, 1], got " + std::to_string(o.pcb_ratio));
            }
            for (const auto& [name, v] : {std::pair<const char*, double>{"min_ratio", o.min_ratio}, {"max_ratio", o.max_ratio}})
            {
                if (!(v >= 0.0 && v < 1.0))
                {
                    throw parameter_error(tensor, name, "must be in [0, 1), got " + std::to_string(v));
                }
            }
            detail::check_finite(tensor, "scaling_factor", o.scaling_factor);
        }
    }

    /********************
     * Implementation   *
     ********************/

    template <class E, class B>
    inline any_expression pcb(const expression_list<E>& models, const B& base, const pcb_options& options)
    {
        detail::check_pcb_options(base.name(), options);
        if (models.empty())
        {
            return base;
        }
        const auto deltas = xmerge::task_vectors(models, base);
        detail::check_models(deltas, "PCB merging");
        std::vector<const_tensor_ref> reads;
        deltas.for_each_input([&](const const_tensor_ref& r) { reads.push_back(r); });
        const shape_type shape = base.shape();
        auto f = [deltas, shape, options](float* out, const eval_options& eval)
        {
            const std::size_t n = xmerge::numel(shape);
            if (n == 0)
            {
                return;
            }
            std::vector<std::vector<float>> tau(deltas.size(), std::vector<float>(n));
            for (std::size_t i = 0; i < deltas.size(); ++i)
            {
                xmerge::evaluate(deltas[i], tensor_ref(tau[i].data(), dtype::float32, shape), eval);
            }
            detail::pcb_merge(tau, n, options, out, eval);
        };
        auto merged = xmerge::computed(shape, base.name(), std::move(f), std::move(reads));
        return xmerge::map(detail::add_scaled_fn{}, base, std::move(merged), options.scaling_factor);
    }

    template <class T>
    method_info pcb_method()
    {
        using P = pcb_options;
        const auto options = option_set<P>()
                                 .global(&P::pcb_ratio, "pcb_ratio", "share of each task vector's entries kept, by competition score")
                                 .global(&P::min_ratio, "min_ratio", "lower quantile the magnitudes are clamped to")
                                 .global(&P::max_ratio, "max_ratio", "share of the largest magnitudes clamped down")
                                 .global(&P::scaling_factor, "scaling_factor", "scale of the merged task vector")
                                 .alias("lambda", "scaling_factor");
        return xmerge::make_method("pcb", "task vectors weighted by intra- and inter-model competition (PCB merging)", true, options,
                                   [](const method_inputs& in, const P& p) -> any_expression { return xmerge::pcb(in.models, *in.base, p); });
    }
}

#endif
