/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_SIGN_ELECTION_HPP
#define XMERGE_OPS_SIGN_ELECTION_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>
#include <string>
#include <utility>
#include <vector>

#include "../core/arena.hpp"
#include "../core/bound.hpp"
#include "../core/error.hpp"
#include "../core/expression.hpp"
#include "../core/statistic.hpp"
#include "../simd/batch.hpp"
#include "list.hpp"
#include "scalar.hpp"
#include "weighted_sum.hpp"

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

    /**
     * Sign election and disjoint merge of K (sparsified) task vectors:
     *
     *     e_k = w_k d_k,  s = elected sign,  agree_k = sign(e_k) == s  (a zero never agrees)
     *     result = sum_k agree_k e_k / divisor
     *
     * With sign_consensus::none every entry agrees, and merge_divisor::weights
     * divides by sum_k w_k (1 when its magnitude is below 1e-8), as mergekit's
     * methods without consensus do. Weights may be scalar expressions.
     */
    template <class E, class W>
    class elected_sum_node : public tensor_expression<elected_sum_node<E, W>>
    {
    public:
        elected_sum_node(expression_list<E> terms, std::vector<W> weights, election_options options);

        const shape_type& shape() const noexcept { return m_terms[0].shape(); }
        std::string name() const { return m_terms[0].name(); }
        const expression_list<E>& terms() const noexcept { return m_terms; }
        const std::vector<W>& weights() const noexcept { return m_weights; }
        const election_options& options() const noexcept { return m_options; }

        template <class F>
        void for_each_input(F&& f) const
        {
            m_terms.for_each_input(f);
            for (const auto& w : m_weights)
            {
                w.for_each_input(f);
            }
        }

    private:
        expression_list<E> m_terms;
        std::vector<W> m_weights;
        election_options m_options;
    };

    /// The elected sum of `terms` with numeric weights (checked: finite, one per term).
    template <class E>
    auto elected_sum(const expression_list<E>& terms, const std::vector<double>& weights, election_options options = {});

    /// The elected sum of `terms` with scalar-expression weights.
    template <class E, class S>
    auto elected_sum(const expression_list<E>& terms, const expression_list<S>& weights, election_options options = {});

    namespace detail
    {
        template <class Bound>
        struct bound_elected_sum
        {
            const Bound* terms;
            const float* weights;
            std::size_t count;
            election_options options;
            float plain_divisor;  // for consensus none with divisor weights

            template <class B>
            XMERGE_FORCE_INLINE B packet(std::size_t i) const noexcept
            {
                using traits = simd::batch_traits<B>;
                if (options.consensus == sign_consensus::none)
                {
                    B acc = traits::broadcast(weights[0]) * terms[0].template packet<B>(i);
                    for (std::size_t k = 1; k < count; ++k)
                    {
                        acc = simd::fma(traits::broadcast(weights[k]), terms[k].template packet<B>(i), acc);
                    }
                    return options.divisor == merge_divisor::none ? acc : acc / traits::broadcast(plain_divisor);
                }

                if (count <= max_cached)
                {
                    // Each term once: its packet may load, widen and mask several inputs.
                    B d[max_cached];
                    for (std::size_t k = 0; k < count; ++k)
                    {
                        d[k] = terms[k].template packet<B>(i);
                    }
                    return merge<B>([&](std::size_t k) { return d[k]; });
                }
                return merge<B>([&](std::size_t k) { return terms[k].template packet<B>(i); });
            }

            static constexpr std::size_t max_cached = 16;

            template <class B, class Term>
            XMERGE_FORCE_INLINE B merge(Term&& term) const noexcept
            {
                using traits = simd::batch_traits<B>;
                const B zero = traits::broadcast(0.0f);
                const B one = traits::broadcast(1.0f);
                // The elected sign: positive where the vote is >= 0.
                B vote = zero;
                for (std::size_t k = 0; k < count; ++k)
                {
                    const B d = term(k);
                    const B e = options.elect_on_weighted ? traits::broadcast(weights[k]) * d : d;
                    if (options.consensus == sign_consensus::sum)
                    {
                        vote += e;
                    }
                    else
                    {
                        vote += simd::select(e > zero, one, simd::select(e < zero, -one, zero));
                    }
                }
                const auto positive = vote >= zero;

                B mixed = zero, divisor = zero;
                for (std::size_t k = 0; k < count; ++k)
                {
                    const B w = traits::broadcast(weights[k]);
                    const B e = w * term(k);
                    const auto agree = (positive && (e > zero)) || (!positive && (e < zero));
                    mixed += simd::select(agree, e, zero);
                    if (options.divisor == merge_divisor::weights)
                    {
                        divisor += simd::select(agree, w, zero);
                    }
                    else if (options.divisor == merge_divisor::count)
                    {
                        divisor += simd::select(agree, one, zero);
                    }
                }
                if (options.divisor == merge_divisor::none)
                {
                    return mixed;
                }
                return mixed / simd::select(divisor == zero, one, divisor);
            }
        };

        template <class E, class W>
        class evaluator<elected_sum_node<E, W>>
        {
        public:
            explicit evaluator(const elected_sum_node<E, W>& node)
                : m_terms(node.terms()), m_weights(expression_list<W>(node.weights())), m_options(node.options())
            {
            }

            std::size_t collect(statistics_registry& r) { return std::max(m_terms.collect(r), m_weights.collect(r)); }

            auto bind(std::size_t begin, std::size_t n, arena& a) const
            {
                const std::size_t k = m_terms.size();
                auto* terms = m_terms.bind(begin, n, a);
                auto* weights = a.allocate<float>(k);
                double total = 0.0;
                for (std::size_t i = 0; i < k; ++i)
                {
                    const double w = m_weights[i].value();
                    weights[i] = static_cast<float>(w);
                    total += w;
                }
                const float plain = std::fabs(total) < 1e-8 ? 1.0f : static_cast<float>(total);
                return bound_elected_sum<std::remove_pointer_t<decltype(terms)>>{terms, weights, k, m_options, plain};
            }

        private:
            list_evaluator<E> m_terms;
            list_evaluator<W> m_weights;
            election_options m_options;
        };
    }

    /********************
     * Implementation   *
     ********************/

    template <class E, class W>
    inline elected_sum_node<E, W>::elected_sum_node(expression_list<E> terms, std::vector<W> weights, election_options options)
        : m_terms(std::move(terms)), m_weights(std::move(weights)), m_options(options)
    {
        detail::check_models(m_terms);
        if (m_weights.size() != m_terms.size())
        {
            throw parameter_error(m_terms[0].name(), "weights", "expected " + std::to_string(m_terms.size()) + " values (one per model), got "
                                                                   + std::to_string(m_weights.size()));
        }
    }

    template <class E>
    inline auto elected_sum(const expression_list<E>& terms, const std::vector<double>& weights, election_options options)
    {
        if (terms.empty())
        {
            throw parameter_error("", "models", "a merge needs at least one model");
        }
        detail::check_weights(terms[0].name(), terms.size(), weights);
        std::vector<scalar_constant> w;
        for (double x : weights)
        {
            w.emplace_back(x);
        }
        return elected_sum_node<E, scalar_constant>(terms, std::move(w), options);
    }

    template <class E, class S>
    inline auto elected_sum(const expression_list<E>& terms, const expression_list<S>& weights, election_options options)
    {
        return elected_sum_node<E, S>(terms, weights.items(), options);
    }

}

#endif
