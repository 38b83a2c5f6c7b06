/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_SIGN_ELECTION_HPP
#define XMERGE_OPS_SIGN_ELECTION_HPP

#include <cmath>
#include <cstddef>
#include <vector>

#include "../config.hpp"
#include "../simd/batch.hpp"
#include "list.hpp"
#include "list_node.hpp"

namespace xmerge
{
    /// How the sign of an element is elected among the models.
    enum class sign_consensus
    {
        none,  ///< no election: every entry takes part
        sum,   ///< the sign of the sum of the entries (TIES); a zero sum counts as +
        count  ///< the sign held by more entries; a tie counts as +
    };

    /// What the merged entries are divided by.
    enum class merge_divisor
    {
        none,     ///< the sum itself
        weights,  ///< the sum of the weights of the entries taking part (0 -> 1), as mergekit
        count     ///< the number of entries taking part (0 -> 1): the TIES paper's disjoint mean
    };

    /// Options of an elected (disjoint) merge.
    struct election_options
    {
        sign_consensus consensus = sign_consensus::sum;
        merge_divisor divisor = merge_divisor::weights;
        /// Elect on the weighted entries w_k d_k (TIES, mergekit) or on the entries d_k (SCE).
        bool elect_on_weighted = true;
    };

    namespace detail
    {
        /**
         * Sign election and disjoint merge of K (sparsified) task vectors:
         *
         *     e_k = w_k d_k,  s = elected sign,  agree_k = sign(e_k) == s  (a zero never agrees)
         *     result = sum_k agree_k e_k / divisor
         *
         * With sign_consensus::none every entry agrees, and merge_divisor::weights
         * divides by sum_k w_k (1 when its magnitude is below 1e-8), as mergekit's
         * methods without consensus do.
         */
        struct elected_sum_fn
        {
            election_options options;

            // Terms are read once each when there are few: a term may load, widen and mask several inputs.
            static constexpr std::size_t max_cached = 16;

            template <class Terms>
            XMERGE_FORCE_INLINE auto operator()(const Terms& t) const noexcept
            {
                using B = typename Terms::batch;
                if (options.consensus == sign_consensus::none)
                {
                    B acc = t.weight(0) * t[0];
                    for (std::size_t k = 1; k < t.size(); ++k)
                    {
                        acc = simd::fma(t.weight(k), t[k], acc);
                    }
                    const double total = t.weight_total();
                    return options.divisor == merge_divisor::none ? acc : acc / B(std::fabs(total) < 1e-8 ? 1.0f : static_cast<float>(total));
                }
                if (t.size() <= max_cached)
                {
                    B d[max_cached];
                    for (std::size_t k = 0; k < t.size(); ++k)
                    {
                        d[k] = t[k];
                    }
                    return merge<B>(t, [&](std::size_t k) { return d[k]; });
                }
                return merge<B>(t, [&](std::size_t k) { return t[k]; });
            }

            template <class B, class Terms, class Term>
            XMERGE_FORCE_INLINE B merge(const Terms& t, Term&& term) const noexcept
            {
                const B zero(0.0f), one(1.0f);
                B vote = zero;  // the elected sign is positive where the vote is >= 0
                for (std::size_t k = 0; k < t.size(); ++k)
                {
                    const B e = options.elect_on_weighted ? t.weight(k) * term(k) : term(k);
                    vote += options.consensus == sign_consensus::sum ? e : simd::select(e > zero, one, simd::select(e < zero, -one, zero));
                }
                // e agrees when it has the elected sign: positive where vote >= 0 (NaN votes elect -)
                const B sign = simd::select(vote >= zero, one, -one);
                B mixed = zero, divisor = zero;
                for (std::size_t k = 0; k < t.size(); ++k)
                {
                    const B w = t.weight(k);
                    const B e = w * term(k);
                    const auto agree = e * sign > zero;
                    mixed += simd::select(agree, e, zero);
                    if (options.divisor != merge_divisor::none)
                    {
                        divisor += simd::select(agree, options.divisor == merge_divisor::weights ? w : one, zero);
                    }
                }
                return options.divisor == merge_divisor::none ? mixed : mixed / simd::select(divisor == zero, one, divisor);
            }
        };
    }

    /// The elected (disjoint) merge of K task vectors with weights; see detail::elected_sum_fn.
    template <class E, class W>
    using elected_sum_node = list_node<detail::elected_sum_fn, W, E>;

    /// The elected sum of `terms` with numeric weights (checked: finite, one per term).
    template <class E>
    auto elected_sum(const expression_list<E>& terms, const std::vector<double>& weights, election_options options = {})
    {
        return xmerge::combine_weighted(detail::elected_sum_fn{options}, weights, terms);
    }

    /// The elected sum of `terms` with scalar-expression weights.
    template <class E, class S>
    auto elected_sum(const expression_list<E>& terms, const expression_list<S>& weights, election_options options = {})
    {
        return xmerge::combine_weighted(detail::elected_sum_fn{options}, weights, terms);
    }
}

#endif
