/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_ORDER_STATISTICS_HPP
#define XMERGE_OPS_ORDER_STATISTICS_HPP

#include <cmath>
#include <cstddef>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "../core/arena.hpp"
#include "../core/bound.hpp"
#include "../core/chunk_statistic.hpp"
#include "../core/error.hpp"
#include "../core/expression.hpp"
#include "../core/statistic.hpp"
#include "../core/tensor_ref.hpp"
#include "../kernels/order_select.hpp"
#include "scalar.hpp"

namespace xmerge
{
    /// A number computed from the values at some positions of a tensor sorted ascending.
    using order_rule = std::function<double(const std::vector<float>&)>;

    /**
     * rule(v) with v[j] the value at ascending position positions[j] of the
     * flattened tensor (NaN sorting last): quantiles without interpolation,
     * exact, computed in the statistics phase. One pass copies the values
     * (one float32 copy of the tensor, freed after), then a linear-time
     * selection finds every position. Positions must be < numel; an empty
     * tensor gives rule of no values.
     */
    template <class E>
    class order_statistics_node : public scalar_expression<order_statistics_node<E>>
    {
    public:
        order_statistics_node(E e, std::vector<std::size_t> positions, order_rule rule);

        const E& operand() const noexcept { return m_e; }
        const std::vector<std::size_t>& positions() const noexcept { return m_positions; }
        const order_rule& rule() const noexcept { return m_rule; }
        std::string name() const { return m_e.name(); }

        template <class F>
        void for_each_input(F&& f) const
        {
            m_e.for_each_input(f);
        }

    private:
        E m_e;
        std::vector<std::size_t> m_positions;
        order_rule m_rule;
    };

    /// order_statistics_node with its type deduced.
    template <class E>
    order_statistics_node<E> order_statistics(const E& e, std::vector<std::size_t> positions, order_rule rule)
    {
        return order_statistics_node<E>(e, std::move(positions), std::move(rule));
    }

    /// The position floor(q (n - 1)) of quantile q among n sorted values, as torch indexes `(q * (n - 1)).long()`.
    inline std::size_t quantile_position(double q, std::size_t n) noexcept
    {
        return n == 0 ? 0 : static_cast<std::size_t>(std::floor(q * static_cast<double>(n - 1)));
    }

    namespace detail
    {
        struct order_statistics_kernel
        {
            using partial = std::vector<float>;

            std::vector<std::size_t> positions;
            order_rule rule;
            double value = 0.0;
            bool done = false;

            bool begin_pass(const pass_layout& layout, std::vector<partial>& partials)
            {
                partials.assign(done ? 0 : layout.tasks(), partial());
                return !done;
            }

            template <class Bound>
            void accumulate(partial& p, const chunk_view& chunk, const Bound& operand) const
            {
                const float* values = detail::chunk_values(chunk.size, operand, chunk.scratch);
                p.insert(p.end(), values, values + chunk.size);
            }

            void end_pass(std::vector<partial>& partials)
            {
                std::vector<float> all;
                if (partials.size() == 1)
                {
                    all.swap(partials[0]);
                }
                else
                {
                    std::size_t total = 0;
                    for (const auto& p : partials)
                    {
                        total += p.size();
                    }
                    all.reserve(total);
                    for (auto& p : partials)
                    {
                        all.insert(all.end(), p.begin(), p.end());
                        partial().swap(p);
                    }
                }
                std::vector<float> selected(positions.size());
                if (!all.empty())
                {
                    kernels::select_positions(all.data(), all.size(), positions.data(), positions.size(), selected.data());
                }
                else
                {
                    selected.clear();
                }
                value = rule(selected);
                done = true;
            }
        };

        template <class E>
        class evaluator<order_statistics_node<E>> final : public chunk_statistic<order_statistics_kernel, evaluator<E>>
        {
        public:
            explicit evaluator(const order_statistics_node<E>& node)
                : chunk_statistic<order_statistics_kernel, evaluator<E>>(xmerge::numel(node.operand().shape()),
                                                                         order_statistics_kernel{node.positions(), node.rule()}, node.operand())
            {
            }

            double value() const noexcept { return this->kernel().value; }
        };
    }

    /********************
     * Implementation   *
     ********************/

    template <class E>
    inline order_statistics_node<E>::order_statistics_node(E e, std::vector<std::size_t> positions, order_rule rule)
        : m_e(std::move(e)), m_positions(std::move(positions)), m_rule(std::move(rule))
    {
        const std::size_t n = xmerge::numel(m_e.shape());
        for (std::size_t j = 0; j < m_positions.size(); ++j)
        {
            if ((n > 0 && m_positions[j] >= n) || (j > 0 && m_positions[j] < m_positions[j - 1]))
            {
                throw parameter_error(m_e.name(), "positions", "order statistics need increasing positions below the tensor's " + std::to_string(n) + " elements");
            }
        }
    }
}

#endif
