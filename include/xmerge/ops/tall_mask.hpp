/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_TALL_MASK_HPP
#define XMERGE_OPS_TALL_MASK_HPP

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "../config.hpp"
#include "../core/error.hpp"
#include "../simd/batch.hpp"
#include "list.hpp"
#include "list_node.hpp"

/**
 * @file
 * TALL masks (Wang et al., ICML 2024): with tau_MTL = sum_k tau_k, task t
 * claims an element when |tau_t| > lambda_t |tau_MTL - tau_t|, i.e. when
 * the multi-task vector moves the element closer to the fine-tuned model
 * than the base is. The consensus mask keeps the elements claimed by at
 * least k tasks. Every part is one element-wise pass over the K task
 * vectors; the per-task lambdas are the list node's weights.
 */

namespace xmerge
{
    /// What a TALL-mask part gives per element.
    enum class tall_mask_value
    {
        mask,       ///< 1 where the mask keeps the element, else 0
        masked_sum  ///< tau_MTL where the mask keeps the element, else 0
    };

    /**
     * Task `task`'s TALL mask over the task vectors `deltas`, with one
     * lambda per task (only lambda_task is read). Throws parameter_error for
     * a task out of range or a lambda count other than the task count.
     */
    template <class E>
    auto tall_mask(const expression_list<E>& deltas, std::size_t task, const std::vector<double>& lambdas, tall_mask_value value = tall_mask_value::mask);

    /**
     * The consensus mask [sum_t m_t >= k] of the tasks' TALL masks (k = 0
     * keeps every element, k > K none). Throws parameter_error for a lambda
     * count other than the task count.
     */
    template <class E>
    auto consensus_mask(const expression_list<E>& deltas, const std::vector<double>& lambdas, std::size_t k, tall_mask_value value = tall_mask_value::mask);

    namespace detail
    {
        /// Reads every term once (up to `cached` terms) and hands f the sum and an accessor.
        template <class B, std::size_t cached, class Terms, class F>
        XMERGE_FORCE_INLINE B with_term_sum(const Terms& t, F&& f) noexcept
        {
            if (t.size() <= cached)
            {
                B d[cached];
                B sum = d[0] = t[0];
                for (std::size_t k = 1; k < t.size(); ++k)
                {
                    d[k] = t[k];
                    sum += d[k];
                }
                return f(sum, [&](std::size_t k) { return d[k]; });
            }
            B sum = t[0];
            for (std::size_t k = 1; k < t.size(); ++k)
            {
                sum += t[k];
            }
            return f(sum, [&](std::size_t k) { return t[k]; });
        }

        /// Whether task k claims the element: |tau_k| > lambda_k |tau_MTL - tau_k|.
        template <class Terms, class B>
        XMERGE_FORCE_INLINE auto claims(const Terms& t, std::size_t k, const B& d, const B& sum) noexcept
        {
            return simd::abs(d) > t.weight(k) * simd::abs(sum - d);
        }

        /// What a mask part gives where `keep` holds (1 or tau_MTL), else 0.
        template <class B, class M>
        XMERGE_FORCE_INLINE B kept_value(const M& keep, tall_mask_value value, const B& sum) noexcept
        {
            return simd::select(keep, value == tall_mask_value::mask ? B(1.0f) : sum, B(0.0f));
        }

        /// TALL mask of one task; the lambdas are the weights.
        struct tall_mask_fn
        {
            static constexpr const char* what = "a TALL mask";
            static constexpr std::size_t cached = 16;
            std::size_t task = 0;
            tall_mask_value value = tall_mask_value::mask;

            template <class Terms>
            XMERGE_FORCE_INLINE auto operator()(const Terms& t) const noexcept
            {
                using B = typename Terms::batch;
                return with_term_sum<B, cached>(t,
                                                [&](const B& sum, auto term)
                                                {
                                                    return detail::kept_value(detail::claims(t, task, term(task), sum), value, sum);
                                                });
            }
        };

        /// Consensus of the TALL masks of all tasks; the lambdas are the weights.
        struct consensus_mask_fn
        {
            static constexpr const char* what = "a consensus mask";
            static constexpr std::size_t cached = 16;
            float threshold = 2.0f;
            tall_mask_value value = tall_mask_value::mask;

            template <class Terms>
            XMERGE_FORCE_INLINE auto operator()(const Terms& t) const noexcept
            {
                using B = typename Terms::batch;
                return with_term_sum<B, cached>(t,
                                                [&](const B& sum, auto term)
                                                {
                                                    B count(0.0f);
                                                    for (std::size_t k = 0; k < t.size(); ++k)
                                                    {
                                                        count += simd::select(detail::claims(t, k, term(k), sum), B(1.0f), B(0.0f));
                                                    }
                                                    return detail::kept_value(count >= B(threshold), value, sum);
                                                });
            }
        };

        /// Throws unless there is one finite, non-negative lambda per task.
        inline void check_tall_lambdas(const std::string& tensor, std::size_t tasks, const std::vector<double>& lambdas)
        {
            if (tasks == 0)
            {
                throw parameter_error(tensor, "models", "a TALL mask needs at least one task vector");
            }
            if (lambdas.size() != tasks)
            {
                throw parameter_error(tensor, "tall_mask_lambda", "expected " + std::to_string(tasks) + " values (one per task), got " + std::to_string(lambdas.size()));
            }
            for (std::size_t k = 0; k < tasks; ++k)
            {
                if (!(lambdas[k] >= 0.0) || !std::isfinite(lambdas[k]))
                {
                    throw parameter_error(tensor, "tall_mask_lambda", "value for task " + std::to_string(k) + " must be finite and non-negative, got " + std::to_string(lambdas[k]));
                }
            }
        }
    }

    /********************
     * Implementation   *
     ********************/

    template <class E>
    inline auto tall_mask(const expression_list<E>& deltas, std::size_t task, const std::vector<double>& lambdas, tall_mask_value value)
    {
        const std::string tensor = deltas.empty() ? std::string() : deltas[0].name();
        detail::check_tall_lambdas(tensor, deltas.size(), lambdas);
        if (task >= deltas.size())
        {
            throw parameter_error(tensor, "task", "is " + std::to_string(task) + " but there are " + std::to_string(deltas.size()) + " tasks");
        }
        return xmerge::combine_weighted(detail::tall_mask_fn{task, value}, lambdas, deltas);
    }

    template <class E>
    inline auto consensus_mask(const expression_list<E>& deltas, const std::vector<double>& lambdas, std::size_t k, tall_mask_value value)
    {
        detail::check_tall_lambdas(deltas.empty() ? std::string() : deltas[0].name(), deltas.size(), lambdas);
        // Counts are small integers, exact in float; a threshold above K keeps nothing.
        const float threshold = static_cast<float>(k > deltas.size() ? deltas.size() + 1 : k);
        return xmerge::combine_weighted(detail::consensus_mask_fn{threshold, value}, lambdas, deltas);
    }
}

#endif
