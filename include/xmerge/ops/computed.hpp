/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_COMPUTED_HPP
#define XMERGE_OPS_COMPUTED_HPP

#include <cstddef>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/arena.hpp"
#include "../core/evaluate.hpp"
#include "../core/bound.hpp"
#include "../core/expression.hpp"
#include "../core/statistic.hpp"
#include "../core/tensor_ref.hpp"

namespace xmerge
{
    /**
     * A tensor computed as a whole, once per evaluation, by `f(float* out)`
     * (or `f(float* out, const eval_options&)`, to run nested evaluations with
     * the caller's threads) writing numel(shape) float32 values in row-major
     * order; afterwards it is read like an input (and may be combined with
     * element-wise parts).
     *
     * For what is not element-wise: dense linear algebra (a solve, an SVD
     * per 2-D tensor) or sequential algorithms over the models. f runs in
     * the statistics phase, on the calling thread, and may use its own
     * parallelism (a threaded BLAS). `reads` lists the memory f reads, for
     * the output aliasing check. The result buffer is the one temporary the
     * size of the tensor that such a method needs.
     */
    template <class F>
    class computed_node : public tensor_expression<computed_node<F>>
    {
    public:
        computed_node(shape_type shape, std::string name, F f, std::vector<const_tensor_ref> reads = {})
            : m_shape(std::move(shape)), m_name(std::move(name)), m_f(std::move(f)), m_reads(std::move(reads))
        {
        }

        const shape_type& shape() const noexcept { return m_shape; }
        std::string name() const { return m_name; }
        const F& function() const noexcept { return m_f; }

        template <class G>
        void for_each_input(G&& g) const
        {
            for (const auto& r : m_reads)
            {
                g(r);
            }
        }

    private:
        shape_type m_shape;
        std::string m_name;
        F m_f;
        std::vector<const_tensor_ref> m_reads;
    };

    /// computed_node with its type deduced.
    template <class F>
    auto computed(shape_type shape, std::string name, F f, std::vector<const_tensor_ref> reads = {})
    {
        return computed_node<F>(std::move(shape), std::move(name), std::move(f), std::move(reads));
    }

    namespace detail
    {
        template <class F>
        class evaluator<computed_node<F>> final : public statistic
        {
        public:
            explicit evaluator(const computed_node<F>& node) : m_node(node), m_size(xmerge::numel(node.shape())) {}

            std::size_t collect(statistics_registry& r)
            {
                r.add(this, 1);
                return 1;
            }

            std::size_t size() const noexcept override { return m_size; }

            // The whole computation happens here; no pass over chunks is needed.
            bool begin_pass(const pass_layout& layout) override
            {
                if (!m_values)
                {
                    m_values = std::make_shared<std::vector<float>>(m_size);
                    if constexpr (std::is_invocable<const F&, float*, const eval_options&>::value)
                    {
                        eval_options options;
                        options.threads = layout.threads;
                        options.exec = layout.exec;
                        options.chunk_size = layout.chunk_size;
                        options.chunks_per_task = layout.chunks_per_task;
                        m_node.function()(m_values->data(), options);
                    }
                    else
                    {
                        m_node.function()(m_values->data());
                    }
                }
                return false;
            }

            void accumulate(std::size_t, std::size_t, std::size_t, arena&) override {}
            void end_pass() override {}

            bound_pointer bind(std::size_t begin, std::size_t n, arena& a) const { return bind_memory(m_values->data() + begin, n, a); }

            /// The computed values (after the statistics phase).
            const std::vector<float>& values() const noexcept { return *m_values; }

        private:
            const computed_node<F>& m_node;
            std::size_t m_size;
            std::shared_ptr<std::vector<float>> m_values;
        };
    }
}

#endif
