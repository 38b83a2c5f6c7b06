/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_EMR_ELECTION_HPP
#define XMERGE_OPS_EMR_ELECTION_HPP

#include <cstddef>
#include <string>

#include "../config.hpp"
#include "../core/error.hpp"
#include "../simd/batch.hpp"
#include "list.hpp"
#include "list_node.hpp"
#include "tall_mask.hpp"

/**
 * @file
 * EMR-merging's election (Huang et al., NeurIPS 2024) over K task vectors:
 *
 *     flag   = +1 where sum_k tau_k > 0, else -1 (an exact zero sum elects -1)
 *     mask_t = [tau_t * flag > 0]              (a zero entry is never kept)
 *     tau_uni = flag * max_t |mask_t * tau_t|  (0 where no task agrees)
 *
 * One element-wise pass over the K task vectors per part.
 */

namespace xmerge
{
    /// What an EMR part gives per element.
    enum class emr_value
    {
        unified,  ///< tau_uni
        mask,     ///< mask_t as 0/1
        elected   ///< tau_uni * mask_t, task t's unscaled task vector
    };

    /// An EMR part over the task vectors `deltas`; `task` is read by `mask` and `elected`.
    template <class E>
    auto emr_election(const expression_list<E>& deltas, emr_value value, std::size_t task = 0);

    namespace detail
    {
        struct emr_election_fn
        {
            static constexpr const char* what = "an EMR election";
            static constexpr std::size_t cached = 16;
            emr_value value = emr_value::unified;
            std::size_t task = 0;

            template <class Terms>
            XMERGE_FORCE_INLINE auto operator()(const Terms& t) const noexcept
            {
                using B = typename Terms::batch;
                return with_term_sum<B, cached>(t,
                                                [&](const B& sum, auto term)
                                                {
                                                    const B zero(0.0f), one(1.0f);
                                                    const B flag = simd::select(sum > zero, one, -one);
                                                    if (value == emr_value::mask)
                                                    {
                                                        return simd::select(term(task) * flag > zero, one, zero);
                                                    }
                                                    B largest = zero;
                                                    for (std::size_t k = 0; k < t.size(); ++k)
                                                    {
                                                        const B d = term(k);
                                                        largest = simd::max(largest, simd::select(d * flag > zero, simd::abs(d), zero));
                                                    }
                                                    const B unified = flag * largest;
                                                    return value == emr_value::unified ? unified : simd::select(term(task) * flag > zero, unified, zero);
                                                });
            }
        };
    }

    template <class E>
    inline auto emr_election(const expression_list<E>& deltas, emr_value value, std::size_t task)
    {
        const std::string tensor = deltas.empty() ? std::string() : deltas[0].name();
        if (deltas.empty())
        {
            throw parameter_error(tensor, "models", "EMR needs at least one task vector");
        }
        if (value != emr_value::unified && task >= deltas.size())
        {
            throw parameter_error(tensor, "task", "is " + std::to_string(task) + " but there are " + std::to_string(deltas.size()) + " tasks");
        }
        return xmerge::combine(detail::emr_election_fn{value, task}, deltas);
    }
}

#endif
