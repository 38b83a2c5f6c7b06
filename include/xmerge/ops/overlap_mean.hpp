/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_OVERLAP_MEAN_HPP
#define XMERGE_OPS_OVERLAP_MEAN_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../config.hpp"
#include "../core/arena.hpp"
#include "../core/bound.hpp"
#include "../core/chunk_statistic.hpp"
#include "../core/expression.hpp"
#include "../core/statistic.hpp"
#include "../kernels/active_counts.hpp"
#include "../simd/batch.hpp"
#include "list.hpp"
#include "list_node.hpp"
#include "scalar.hpp"

/**
 * @file
 * The merge rule of RAM (Reinforced Agent Merging): per element, the terms
 * whose magnitude exceeds epsilon are *active*; an element changed by one
 * term alone takes that term (times the term's weight), one changed by
 * several takes their plain mean, and one changed by none stays 0. RAM+
 * sets the weights from how much each term overlaps the others.
 */

namespace xmerge
{
    /**
     * Per element, with c the number of terms k where |t_k| > epsilon:
     * w_k t_k of the one active term when c == 1, the mean of the active
     * terms when c >= 2, and 0 when c == 0. Each term is divided by c before
     * the terms are summed in order, as mergekit does, so float32 inputs give
     * its float32 bits.
     */
    template <class E>
    auto overlap_mean(const expression_list<E>& terms, const std::vector<double>& weights, double epsilon);

    /**
     * overlap_mean with RAM+'s weights, found in one statistics pass: per
     * term k, S_k counts the elements where k is active with others and U_k
     * those where it is active alone; rho_k = S_k / max(U_k, epsilon) and
     * w_k = 1 + r * min(max(rho_k, 0), alpha), both in float32 as mergekit
     * computes them. The counts are over this tensor only (tensor-local).
     */
    template <class E>
    class overlap_rescaled_node : public tensor_expression<overlap_rescaled_node<E>>
    {
    public:
        overlap_rescaled_node(expression_list<E> terms, double r, double alpha, double epsilon);

        const shape_type& shape() const noexcept { return m_terms[0].shape(); }
        std::string name() const { return m_terms[0].name(); }
        const expression_list<E>& terms() const noexcept { return m_terms; }
        double r() const noexcept { return m_r; }
        double alpha() const noexcept { return m_alpha; }
        double epsilon() const noexcept { return m_epsilon; }

        template <class F>
        void for_each_input(F&& f) const
        {
            m_terms.for_each_input(f);
        }

    private:
        expression_list<E> m_terms;
        double m_r;
        double m_alpha;
        double m_epsilon;
    };

    /// overlap_rescaled_node with its type deduced.
    template <class E>
    overlap_rescaled_node<E> overlap_rescaled_mean(const expression_list<E>& terms, double r, double alpha, double epsilon)
    {
        return overlap_rescaled_node<E>(terms, r, alpha, epsilon);
    }

    /// RAM+'s weight of a term active with others at `shared` elements and alone at `unique` ones, in float32 arithmetic.
    inline float overlap_weight(std::uint64_t shared, std::uint64_t unique, double r, double alpha, double epsilon) noexcept;

    namespace detail
    {
        struct overlap_mean_fn
        {
            static constexpr const char* what = "an overlap mean";

            float epsilon;

            template <class Terms>
            XMERGE_FORCE_INLINE auto operator()(const Terms& t) const noexcept
            {
                using B = typename Terms::batch;
                const B eps(epsilon);
                const B zero(0.0f);
                const B one(1.0f);
                B count(0.0f);
                for (std::size_t k = 0; k < t.size(); ++k)
                {
                    count += simd::select(simd::abs(t[k]) > eps, one, zero);
                }
                const auto alone = count == one;
                const B divisor = simd::max(count, one);
                B acc(0.0f);
                for (std::size_t k = 0; k < t.size(); ++k)
                {
                    const B v = t[k];
                    acc += simd::select(simd::abs(v) > eps, simd::select(alone, v * t.weight(k), v / divisor), zero);
                }
                return acc;
            }
        };

        /// Counts of shared and unique activity per term, turned into RAM+'s weights when the pass ends.
        struct overlap_count_kernel
        {
            using partial = std::vector<std::uint64_t>;  // shared counts, then unique counts

            std::size_t k;
            float epsilon;
            double r;
            double alpha;
            std::vector<deferred_scalar> weights;
            bool done = false;

            bool begin_pass(const pass_layout& layout, std::vector<partial>& partials)
            {
                partials.assign(done ? 0 : layout.tasks(), partial(2 * k, 0));
                return !done;
            }

            template <class Bound>
            void accumulate(partial& p, const chunk_view& chunk, const Bound* terms) const
            {
                const float** values = detail::list_chunk_values(chunk.size, terms, k, chunk.scratch);
                kernels::active_counts(values, k, chunk.size, epsilon, p.data(), p.data() + k);
            }

            void end_pass(std::vector<partial>& partials)
            {
                for (std::size_t i = 0; i < k; ++i)
                {
                    std::uint64_t shared = 0, unique = 0;
                    for (const auto& p : partials)
                    {
                        shared += p[i];
                        unique += p[k + i];
                    }
                    weights[i].set(xmerge::overlap_weight(shared, unique, r, alpha, epsilon));
                }
                done = true;
            }
        };

        template <class E>
        class evaluator<overlap_rescaled_node<E>> final : public chunk_statistic<overlap_count_kernel, list_evaluator<E>>
        {
            using base = chunk_statistic<overlap_count_kernel, list_evaluator<E>>;
            using merge_node = list_node<overlap_mean_fn, deferred_scalar, E>;

        public:
            explicit evaluator(const overlap_rescaled_node<E>& node)
                : base(xmerge::numel(node.shape()),
                       overlap_count_kernel{node.terms().size(), static_cast<float>(node.epsilon()), node.r(), node.alpha(),
                                            std::vector<deferred_scalar>(node.terms().size())},
                       node.terms())
                , m_merge_node(overlap_mean_fn{static_cast<float>(node.epsilon())}, this->kernel().weights, node.terms())
                , m_merge(m_merge_node)
            {
            }

            // The merge is bound for the element-wise pass, not for the counting pass.
            std::size_t collect(statistics_registry& r) { return this->collect_after(r, m_merge.collect(r)); }
            auto bind(std::size_t begin, std::size_t n, arena& a) const { return m_merge.bind(begin, n, a); }

        private:
            merge_node m_merge_node;
            evaluator<merge_node> m_merge;
        };
    }

    /********************
     * Implementation   *
     ********************/

    template <class E>
    inline auto overlap_mean(const expression_list<E>& terms, const std::vector<double>& weights, double epsilon)
    {
        return xmerge::combine_weighted(detail::overlap_mean_fn{static_cast<float>(epsilon)}, weights, terms);
    }

    template <class E>
    inline overlap_rescaled_node<E>::overlap_rescaled_node(expression_list<E> terms, double r, double alpha, double epsilon)
        : m_terms(std::move(terms)), m_r(r), m_alpha(alpha), m_epsilon(epsilon)
    {
        detail::check_models(m_terms, "an overlap mean");
    }

    inline float overlap_weight(std::uint64_t shared, std::uint64_t unique, double r, double alpha, double epsilon) noexcept
    {
        // Every step rounded to float32 on its own (an operation of two floats done in double and
        // rounded once is the float32 result), so that no fused multiply-add changes the bits.
        const float s = static_cast<float>(shared);
        const float u = std::max(static_cast<float>(unique), static_cast<float>(epsilon));
        const float rho = static_cast<float>(static_cast<double>(s) / static_cast<double>(u));
        const float clamped = std::min(std::max(rho, 0.0f), static_cast<float>(alpha));
        const float scaled = static_cast<float>(static_cast<double>(static_cast<float>(r)) * static_cast<double>(clamped));
        return static_cast<float>(1.0 + static_cast<double>(scaled));
    }
}

#endif
