/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_GRAM_HPP
#define XMERGE_OPS_GRAM_HPP

#include <algorithm>
#include <cstddef>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "../core/arena.hpp"
#include "../core/bound.hpp"
#include "../core/chunk_statistic.hpp"
#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../core/expression.hpp"
#include "../core/statistic.hpp"
#include "../kernels/gram.hpp"
#include "computed.hpp"
#include "list.hpp"
#include "scalar.hpp"
#include "weighted_sum.hpp"

namespace xmerge
{
    /// Pairwise dot products <t_i, t_j> of K tensors of n elements each.
    struct gram_matrix
    {
        std::size_t k = 0;
        std::size_t elements = 0;
        std::vector<double> entries;  // k * k, symmetric

        double operator()(std::size_t i, std::size_t j) const noexcept { return entries[i * k + j]; }
        /// <a, b> for a = sum_i a_i t_i and b = sum_j b_j t_j.
        double inner(const std::vector<double>& a, const std::vector<double>& b) const noexcept;
    };

    /// Coefficients of the terms computed from their Gram matrix.
    using gram_rule = std::function<std::vector<double>(const gram_matrix&)>;

    /**
     * sum_k c_k * term_k with c = rule(G), G the Gram matrix of the terms.
     *
     * Every merge that interpolates on a hypersphere or weighs models by their
     * angles (SLERP, Model Stock, multi-SLERP, the Karcher mean) is such a
     * combination: the angles are functions of G, and the result stays in
     * the span of the inputs. One statistics pass reads each term once to
     * build G (K (K + 1) / 2 dot products per chunk), then one fused pass
     * writes the combination; no temporary the size of the tensor.
     */
    template <class E>
    class gram_combination_node : public tensor_expression<gram_combination_node<E>>
    {
    public:
        gram_combination_node(expression_list<E> terms, gram_rule rule);

        const shape_type& shape() const noexcept { return m_terms[0].shape(); }
        std::string name() const { return m_terms[0].name(); }
        const expression_list<E>& terms() const noexcept { return m_terms; }
        const gram_rule& rule() const noexcept { return m_rule; }

        template <class F>
        void for_each_input(F&& f) const
        {
            m_terms.for_each_input(f);
        }

    private:
        expression_list<E> m_terms;
        gram_rule m_rule;
    };

    template <class E>
    gram_combination_node<E> gram_combination(const expression_list<E>& terms, gram_rule rule)
    {
        return gram_combination_node<E>(terms, std::move(rule));
    }

    /// How a tensor is cut into vectors for per-vector geometry.
    enum class vector_axis
    {
        whole,  ///< the flattened tensor is one vector
        last,   ///< vectors along the last dimension (the rows of a matrix)
        first   ///< vectors along the first dimension (the columns of a matrix)
    };

    /**
     * Like gram_combination, but with one Gram matrix and one set of
     * coefficients per vector of the tensor (see vector_axis): the rule is
     * applied to each row's (or column's) Gram matrix, whose `elements` is the
     * vector's length. Computed as a whole: the terms are evaluated into K
     * float32 buffers the size of the tensor, then each vector is combined,
     * in parallel over vectors.
     */
    template <class E>
    auto vector_gram_combination(const expression_list<E>& terms, vector_axis axis, gram_rule rule);

    namespace detail
    {
        /// The Gram matrix of K terms as a chunk-statistic kernel; its coefficients are set when the pass ends.
        struct gram_kernel
        {
            using partial = std::vector<double>;  // the upper triangle, row by row

            std::size_t k;
            std::size_t elements;
            gram_rule rule;
            std::vector<deferred_scalar> coefficients;
            bool done = false;

            bool begin_pass(const pass_layout& layout, std::vector<partial>& partials)
            {
                partials.assign(done ? 0 : layout.tasks(), partial(k * (k + 1) / 2, 0.0));
                return !done;
            }

            template <class Bound>
            void accumulate(partial& p, const chunk_view& chunk, const Bound* terms) const
            {
                const float** values = detail::list_chunk_values(chunk.size, terms, k, chunk.scratch);
                kernels::gram_upper(values, k, chunk.size, p.data());
            }

            void end_pass(std::vector<partial>& partials);
        };

        template <class E>
        class evaluator<gram_combination_node<E>> final : public chunk_statistic<gram_kernel, list_evaluator<E>>
        {
            using base = chunk_statistic<gram_kernel, list_evaluator<E>>;

        public:
            explicit evaluator(const gram_combination_node<E>& node)
                : base(xmerge::numel(node.shape()), gram_kernel{node.terms().size(), xmerge::numel(node.shape()), node.rule(), std::vector<deferred_scalar>(node.terms().size())},
                       node.terms())
                , m_sum_node(weighted_sum_fn{}, this->kernel().coefficients, node.terms())
                , m_sum(m_sum_node)
            {
            }

            // The combination is bound for the element-wise pass, not for the Gram pass.
            std::size_t collect(statistics_registry& r) { return this->collect_after(r, m_sum.collect(r)); }
            auto bind(std::size_t begin, std::size_t n, arena& a) const { return m_sum.bind(begin, n, a); }

        private:
            weighted_sum_node<E, deferred_scalar> m_sum_node;
            evaluator<weighted_sum_node<E, deferred_scalar>> m_sum;
        };

        /// Element index of position j of vector v, for a tensor cut along an axis.
        struct vector_layout
        {
            std::size_t count;   // number of vectors
            std::size_t length;  // elements per vector
            std::size_t stride;  // distance between consecutive elements of a vector
            std::size_t block;   // for axis first: vectors per leading index

            std::size_t at(std::size_t v, std::size_t j) const noexcept
            {
                return stride == 1 ? v * length + j : v + j * stride;
            }
        };

        inline vector_layout layout_of(const shape_type& shape, vector_axis axis);
    }

    /********************
     * Implementation   *
     ********************/

    inline double gram_matrix::inner(const std::vector<double>& a, const std::vector<double>& b) const noexcept
    {
        double s = 0.0;
        for (std::size_t i = 0; i < k; ++i)
        {
            for (std::size_t j = 0; j < k; ++j)
            {
                s += a[i] * entries[i * k + j] * b[j];
            }
        }
        return s;
    }

    template <class E>
    inline gram_combination_node<E>::gram_combination_node(expression_list<E> terms, gram_rule rule) : m_terms(std::move(terms)), m_rule(std::move(rule))
    {
        detail::check_models(m_terms);
    }

    namespace detail
    {
        inline void gram_kernel::end_pass(std::vector<partial>& partials)
        {
            gram_matrix g;
            g.k = k;
            g.elements = elements;
            g.entries.assign(k * k, 0.0);
            for (const auto& upper : partials)
            {
                std::size_t p = 0;
                for (std::size_t i = 0; i < k; ++i)
                {
                    for (std::size_t j = i; j < k; ++j)
                    {
                        g.entries[i * k + j] += upper[p++];
                    }
                }
            }
            for (std::size_t i = 0; i < k; ++i)
            {
                for (std::size_t j = 0; j < i; ++j)
                {
                    g.entries[i * k + j] = g.entries[j * k + i];
                }
            }
            const std::vector<double> c = rule(g);
            for (std::size_t i = 0; i < k; ++i)
            {
                coefficients[i].set(c[i]);
            }
            done = true;
        }

        inline vector_layout layout_of(const shape_type& shape, vector_axis axis)
        {
            const std::size_t n = xmerge::numel(shape);
            if (axis == vector_axis::whole || shape.size() < 2 || n == 0)
            {
                return {n == 0 ? std::size_t{0} : std::size_t{1}, n, 1, 1};
            }
            if (axis == vector_axis::last)
            {
                const std::size_t length = shape.back();
                return {n / length, length, 1, 1};
            }
            const std::size_t length = shape.front();
            return {n / length, length, n / length, n / length};
        }
    }

    template <class E>
    inline auto vector_gram_combination(const expression_list<E>& terms, vector_axis axis, gram_rule rule)
    {
        detail::check_models(terms);
        std::vector<const_tensor_ref> reads;
        terms.for_each_input([&](const const_tensor_ref& r) { reads.push_back(r); });
        const shape_type shape = terms[0].shape();
        auto f = [terms, shape, axis, rule](float* out, const eval_options& options)
        {
            const std::size_t k = terms.size();
            const std::size_t n = xmerge::numel(shape);
            std::vector<std::vector<float>> values(k, std::vector<float>(n));
            for (std::size_t i = 0; i < k; ++i)
            {
                evaluate(terms[i], tensor_ref(values[i].data(), dtype::float32, shape), options);
            }
            const detail::vector_layout layout = detail::layout_of(shape, axis);
            detail::run_tasks(layout.count, options.threads, options.exec, [] { return 0; },
                              [&](int&, std::size_t v)
                              {
                                  gram_matrix g;
                                  g.k = k;
                                  g.elements = layout.length;
                                  g.entries.assign(k * k, 0.0);
                                  for (std::size_t j = 0; j < layout.length; ++j)
                                  {
                                      const std::size_t e = layout.at(v, j);
                                      for (std::size_t a = 0; a < k; ++a)
                                      {
                                          for (std::size_t b = a; b < k; ++b)
                                          {
                                              g.entries[a * k + b] += static_cast<double>(values[a][e]) * values[b][e];
                                          }
                                      }
                                  }
                                  for (std::size_t a = 0; a < k; ++a)
                                  {
                                      for (std::size_t b = 0; b < a; ++b)
                                      {
                                          g.entries[a * k + b] = g.entries[b * k + a];
                                      }
                                  }
                                  const std::vector<double> c = rule(g);
                                  for (std::size_t j = 0; j < layout.length; ++j)
                                  {
                                      const std::size_t e = layout.at(v, j);
                                      double s = 0.0;
                                      for (std::size_t a = 0; a < k; ++a)
                                      {
                                          s += c[a] * values[a][e];
                                      }
                                      out[e] = static_cast<float>(s);
                                  }
                              });
        };
        return xmerge::computed(shape, terms[0].name(), std::move(f), std::move(reads));
    }
}

#endif
