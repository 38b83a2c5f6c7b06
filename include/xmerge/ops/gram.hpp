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
#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../core/expression.hpp"
#include "../core/statistic.hpp"
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
        template <class E>
        class evaluator<gram_combination_node<E>> final : public statistic
        {
        public:
            explicit evaluator(const gram_combination_node<E>& node);

            std::size_t collect(statistics_registry& r);
            auto bind(std::size_t begin, std::size_t n, arena& a) const { return m_sum.bind(begin, n, a); }

            std::size_t size() const noexcept override { return m_size; }
            bool begin_pass(const pass_layout& layout) override;
            void accumulate(std::size_t task, std::size_t begin, std::size_t n, arena& a) override;
            void end_pass() override;

        private:
            static weighted_sum_node<E, deferred_scalar> combination(const gram_combination_node<E>& node, std::vector<deferred_scalar>& c);

            list_evaluator<E> m_terms;
            gram_rule m_rule;
            std::vector<deferred_scalar> m_coefficients;
            weighted_sum_node<E, deferred_scalar> m_sum_node;
            evaluator<weighted_sum_node<E, deferred_scalar>> m_sum;
            std::size_t m_size;
            std::vector<std::vector<double>> m_partials;  // per task: the upper triangle
            bool m_done = false;
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
        template <class E>
        inline weighted_sum_node<E, deferred_scalar> evaluator<gram_combination_node<E>>::combination(const gram_combination_node<E>& node,
                                                                                                      std::vector<deferred_scalar>& c)
        {
            c.clear();
            for (std::size_t i = 0; i < node.terms().size(); ++i)
            {
                c.emplace_back();  // each its own value
            }
            return weighted_sum_node<E, deferred_scalar>(node.terms(), c);
        }

        template <class E>
        inline evaluator<gram_combination_node<E>>::evaluator(const gram_combination_node<E>& node)
            : m_terms(node.terms())
            , m_rule(node.rule())
            , m_sum_node(combination(node, m_coefficients))
            , m_sum(m_sum_node)
            , m_size(numel(node.shape()))
        {
        }

        template <class E>
        inline std::size_t evaluator<gram_combination_node<E>>::collect(statistics_registry& r)
        {
            const std::size_t level = std::max(m_sum.collect(r), m_terms.collect(r)) + 1;
            r.add(this, level);
            return level;
        }

        template <class E>
        inline bool evaluator<gram_combination_node<E>>::begin_pass(const pass_layout& layout)
        {
            if (m_done)
            {
                return false;
            }
            const std::size_t k = m_terms.size();
            m_partials.assign(layout.tasks(), std::vector<double>(k * (k + 1) / 2, 0.0));
            return true;
        }

        template <class E>
        inline void evaluator<gram_combination_node<E>>::accumulate(std::size_t task, std::size_t begin, std::size_t n, arena& a)
        {
            using B = simd::batch;
            using traits = simd::batch_traits<B>;
            constexpr std::size_t w = simd::lanes;
            constexpr std::size_t max_terms = 8;  // 36 products in registers
            arena::frame frame(a);
            const std::size_t k = m_terms.size();
            const std::size_t pairs = k * (k + 1) / 2;
            auto* terms = m_terms.bind(begin, n, a);
            auto& partial = m_partials[task];
            const std::size_t full = n - n % w;
            if (k <= max_terms)
            {
                // One load per term and batch; every product accumulates in a register.
                B acc[max_terms * (max_terms + 1) / 2];
                for (std::size_t p = 0; p < pairs; ++p)
                {
                    acc[p] = traits::broadcast(0.0f);
                }
                B v[max_terms];
                for (std::size_t j = 0; j < n; j += w)
                {
                    for (std::size_t i = 0; i < k; ++i)
                    {
                        v[i] = terms[i].template packet<B>(j);
                    }
                    if (j >= full)
                    {
                        // the padding of the last batch must not count
                        const B keep = simd::select(simd::lane_offsets<B>() < B(static_cast<float>(n - full)), B(1.0f), B(0.0f));
                        for (std::size_t i = 0; i < k; ++i)
                        {
                            v[i] = v[i] * keep;
                        }
                    }
                    std::size_t p = 0;
                    for (std::size_t i = 0; i < k; ++i)
                    {
                        for (std::size_t l = i; l < k; ++l)
                        {
                            acc[p] = simd::fma(v[i], v[l], acc[p]);
                            ++p;
                        }
                    }
                }
                for (std::size_t p = 0; p < pairs; ++p)
                {
                    partial[p] += static_cast<double>(traits::reduce_add(acc[p]));
                }
                return;
            }
            auto** values = a.allocate<float*>(k);
            for (std::size_t i = 0; i < k; ++i)
            {
                values[i] = a.buffer();
                store_packets(n, values[i], terms[i]);
            }
            std::size_t p = 0;
            for (std::size_t i = 0; i < k; ++i)
            {
                for (std::size_t l = i; l < k; ++l)
                {
                    partial[p++] += simd::sum(n, [](auto x, auto y) { return x * y; }, values[i], values[l]);
                }
            }
        }

        template <class E>
        inline void evaluator<gram_combination_node<E>>::end_pass()
        {
            const std::size_t k = m_terms.size();
            gram_matrix g;
            g.k = k;
            g.elements = m_size;
            g.entries.assign(k * k, 0.0);
            for (const auto& partial : m_partials)
            {
                std::size_t p = 0;
                for (std::size_t i = 0; i < k; ++i)
                {
                    for (std::size_t j = i; j < k; ++j)
                    {
                        g.entries[i * k + j] += partial[p++];
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
            m_partials.clear();
            const std::vector<double> c = m_rule(g);
            for (std::size_t i = 0; i < k; ++i)
            {
                m_coefficients[i].set(c[i]);
            }
            m_done = true;
        }

        inline vector_layout layout_of(const shape_type& shape, vector_axis axis)
        {
            const std::size_t n = numel(shape);
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
            const std::size_t n = numel(shape);
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
        return computed(shape, terms[0].name(), std::move(f), std::move(reads));
    }
}

#endif
