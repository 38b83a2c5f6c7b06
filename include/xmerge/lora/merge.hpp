/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LORA_MERGE_HPP
#define XMERGE_LORA_MERGE_HPP

#include <array>
#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../linalg/dense.hpp"
#include "../linalg/low_rank.hpp"
#include "../methods/ties.hpp"
#include "../ops/input.hpp"
#include "../ops/list.hpp"
#include "extract.hpp"
#include "layer.hpp"

/**
 * @file
 * Merges that respect low rank. Several LoRA layers of one weight are
 * merged through their products s_i B_i A_i, never through A and B apart:
 * the mean of the factors, (sum B_i / n)(sum A_i / n), mixes every B_i
 * with every A_j and is not the mean update. Any element-wise method runs
 * over the products lazily (fold.hpp: updates() against zeros()); this
 * file turns merged updates back into LoRA factors and implements KnOTS.
 */

namespace xmerge::lora
{
    /**
     * sum_i w_i s_i B_i A_i as LoRA factors ([out, in] orientation, B A =
     * the sum), truncated by `rule`, without forming the sum: the SVD of the
     * product of the stacked factors [w_1 s_1 B_1 ... ] [A_1; ...] (see
     * product_svd). Exact up to rounding at rank sum_i r_i. The layers must
     * update weights of one shape; DoRA layers are not products (throws
     * parameter_error: refactorize their dense update instead).
     */
    inline extracted_factors refactorize_sum(const std::vector<layer>& layers, const std::vector<double>& weights, const truncation& rule,
                                             linalg_precision precision = linalg_precision::float32);

    /**
     * A merged update given as any tensor expression, factored by truncated
     * SVD (full or randomized): the Frobenius error of B A is the root of the
     * energy of the discarded singular values (for the full SVD). For an
     * in_out weight the expression is the stored [in, out] update.
     */
    template <class E>
    extracted_factors refactorize(const tensor_expression<E>& update, const factor_options& options = {}, factor_layout layout = factor_layout::out_in);

    /// How KnOTS merges the task-specific right factors.
    enum class knots_merge
    {
        task_arithmetic,  ///< sum_i w_i V_i
        ties              ///< TIES over the V_i: trim to `density`, elect signs, mean of agreeing entries
    };

    /// Parameters of knots().
    struct knots_options
    {
        knots_merge method = knots_merge::ties;
        /// One weight per layer, or one for all (default 1).
        std::vector<double> weights;
        /// TIES: the fraction of each V_i kept (per layer or one for all).
        std::vector<double> densities{1.0};
        /// Scale of the merged update.
        double lambda = 1.0;
        linalg_precision precision = linalg_precision::float32;
    };

    /**
     * KnOTS (Stoica et al., "Model merging with SVD to tie the KnOTS", ICLR
     * 2025): the SVD of the updates side by side, [dW_1 ... dW_T] = U S
     * [V_1^T ... V_T^T], aligns the tasks in one basis U S; the task-specific
     * V_i^T [q, in] are merged (task arithmetic or TIES) into V^T and the
     * merged update is lambda U S V^T. Returned as factors B = lambda U S
     * [out, q], A = V^T [q, in], q <= sum_i r_i, with `singular_values` the
     * shared S. Cost: one product SVD of rank sum_i r_i and the merge of T
     * matrices of q x in.
     */
    inline extracted_factors knots(const std::vector<layer>& layers, const knots_options& options = {});

    namespace detail
    {
        /// A layer's left (s B, [out, r]) and right (A, [r, in...] flattened) factors in T.
        template <class T>
        void product_factors(const layer& l, T weight, dense_matrix<T>& left, std::size_t column, dense_matrix<T>& right, std::size_t row,
                             std::size_t right_column);

        /// out, in (flattened) and the total rank of layers updating one weight; throws unless they agree.
        inline std::array<std::size_t, 3> stacked_extents(const std::vector<layer>& layers, const char* what);

        /// ||left * right||_F^2 via the small Gram matrices.
        template <class T>
        double product_energy(const dense_matrix<T>& left, const dense_matrix<T>& right);
    }

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        inline std::array<std::size_t, 3> stacked_extents(const std::vector<layer>& layers, const char* what)
        {
            if (layers.empty())
            {
                throw parameter_error("", "layers", std::string(what) + " needs at least one layer");
            }
            const std::size_t out = layers[0].b.shape()[0], in = layers[0].a.size() / layers[0].rank();
            std::size_t rank = 0;
            for (const layer& l : layers)
            {
                if (l.is_dora())
                {
                    throw parameter_error(l.target, "layers", "a DoRA update is not a low-rank product; merge its dense update (update()) and refactorize()");
                }
                if (l.rank() == 0 || l.b.shape()[0] != out || l.a.size() / l.rank() != in || l.b.size() / l.rank() != out)
                {
                    throw shape_error(l.target, "layers", "layer factors " + to_string(l.a.shape()) + " and " + to_string(l.b.shape())
                                                              + " do not update a weight of the first layer's shape");
                }
                rank += l.rank();
            }
            return {out, in, rank};
        }

        template <class T>
        inline void product_factors(const layer& l, T weight, dense_matrix<T>& left, std::size_t column, dense_matrix<T>& right, std::size_t row,
                                    std::size_t right_column)
        {
            const std::size_t r = l.rank(), out = l.b.shape()[0], in = l.a.size() / r;
            std::vector<float> a(l.a.size()), b(l.b.size());
            simd::load_as_float(l.a.type(), l.a.data(), 0, a.size(), a.data());
            simd::load_as_float(l.b.type(), l.b.data(), 0, b.size(), b.data());
            const T s = weight * static_cast<T>(l.scale);
            for (std::size_t i = 0; i < out; ++i)
            {
                for (std::size_t k = 0; k < r; ++k)
                {
                    left(i, column + k) = s * static_cast<T>(b[i * r + k]);
                }
            }
            for (std::size_t k = 0; k < r; ++k)
            {
                for (std::size_t j = 0; j < in; ++j)
                {
                    right(row + k, right_column + j) = static_cast<T>(a[k * in + j]);
                }
            }
        }

        template <class T>
        inline double product_energy(const dense_matrix<T>& left, const dense_matrix<T>& right)
        {
            // ||L R||^2 = trace((L^T L)(R R^T))
            const std::size_t m = left.shape()[0], k = left.shape()[1], n = right.shape()[1];
            auto gl = xmerge::detail::uninitialized_matrix<T>(k, k), gr = xmerge::detail::uninitialized_matrix<T>(k, k);
            xmerge::detail::gemm<T>(true, false, k, k, m, T(1), left.data(), k, left.data(), k, T(0), gl.data(), k);
            xmerge::detail::gemm<T>(false, true, k, k, n, T(1), right.data(), n, right.data(), n, T(0), gr.data(), k);
            double s = 0.0;
            for (std::size_t i = 0; i < k * k; ++i)
            {
                s += static_cast<double>(gl.data()[i]) * gr.data()[i];
            }
            return std::max(0.0, s);
        }
    }

    inline extracted_factors refactorize_sum(const std::vector<layer>& layers, const std::vector<double>& weights, const truncation& rule,
                                             linalg_precision precision)
    {
        const auto [out, in, rank] = detail::stacked_extents(layers, "refactorize_sum");
        if (weights.size() != layers.size())
        {
            throw parameter_error(layers[0].target, "weights", "got " + std::to_string(weights.size()) + " weights for " + std::to_string(layers.size()) + " layers");
        }
        return xmerge::detail::with_precision(precision,
                                              [&, out = out, in = in, rank = rank](auto tag)
                                              {
                                                  using T = decltype(tag);
                                                  auto left = xmerge::detail::uninitialized_matrix<T>(out, rank);
                                                  auto right = xmerge::detail::uninitialized_matrix<T>(rank, in);
                                                  std::size_t k = 0;
                                                  for (std::size_t i = 0; i < layers.size(); ++i)
                                                  {
                                                      detail::product_factors<T>(layers[i], static_cast<T>(weights[i]), left, k, right, k, 0);
                                                      k += layers[i].rank();
                                                  }
                                                  const svd_result<T> f = xmerge::product_svd(left, right, layers[0].target);
                                                  double total = 0.0;
                                                  for (std::size_t j = 0; j < f.s.size(); ++j)
                                                  {
                                                      total += static_cast<double>(f.s(j)) * f.s(j);
                                                  }
                                                  return lora::to_factors(xmerge::truncate(f, rule, total));
                                              });
    }

    template <class E>
    inline extracted_factors refactorize(const tensor_expression<E>& update, const factor_options& options, factor_layout layout)
    {
        const E& e = update.derived();
        if (e.shape().size() != 2)
        {
            throw shape_error(e.name(), "", "refactorization needs a 2-D update, got shape " + to_string(e.shape()));
        }
        return xmerge::detail::with_precision(options.precision,
                                              [&](auto tag)
                                              {
                                                  using T = decltype(tag);
                                                  dense_matrix<T> m = xmerge::detail::evaluate_matrix<T>(e);
                                                  if (layout == factor_layout::in_out)
                                                  {
                                                      m = xmerge::detail::transposed(m);
                                                  }
                                                  return lora::factor_update(std::move(m), options, e.name());
                                              });
    }

    inline extracted_factors knots(const std::vector<layer>& layers, const knots_options& options)
    {
        const auto [out, in, rank] = detail::stacked_extents(layers, "knots");
        const std::size_t tasks = layers.size();
        const std::string tensor = layers[0].target;
        const auto weight = [&](std::size_t i) { return options.weights.empty() ? 1.0 : options.weights[options.weights.size() == 1 ? 0 : i]; };
        if (!options.weights.empty() && options.weights.size() != 1 && options.weights.size() != tasks)
        {
            throw parameter_error(tensor, "weights", "expected 1 or " + std::to_string(tasks) + " values, got " + std::to_string(options.weights.size()));
        }
        return xmerge::detail::with_precision(
            options.precision,
            [&, out = out, in = in, rank = rank](auto tag)
            {
                using T = decltype(tag);
                // [dW_1 ... dW_T] = [s_1 B_1 ... s_T B_T] blockdiag(A_1, ..., A_T)
                auto left = xmerge::detail::uninitialized_matrix<T>(out, rank);
                dense_matrix<T> right = dense_matrix<T>::from_shape({rank, tasks * in});
                right.fill(T(0));
                std::size_t k = 0;
                for (std::size_t i = 0; i < tasks; ++i)
                {
                    detail::product_factors<T>(layers[i], T(1), left, k, right, k, i * in);
                    k += layers[i].rank();
                }
                const svd_result<T> f = xmerge::product_svd(left, right, tensor);
                const std::size_t q = f.s.size();
                // The task blocks V_i^T [q, in] of the right singular vectors, as float32 for the merge.
                std::vector<std::vector<float>> blocks(tasks, std::vector<float>(q * in));
                for (std::size_t i = 0; i < tasks; ++i)
                {
                    for (std::size_t r = 0; r < q; ++r)
                    {
                        for (std::size_t j = 0; j < in; ++j)
                        {
                            blocks[i][r * in + j] = static_cast<float>(f.vt(r, i * in + j));
                        }
                    }
                }
                std::vector<float> merged(q * in, 0.0f);
                std::vector<double> w(tasks);
                for (std::size_t i = 0; i < tasks; ++i)
                {
                    w[i] = weight(i);
                }
                if (options.method == knots_merge::task_arithmetic)
                {
                    for (std::size_t i = 0; i < tasks; ++i)
                    {
                        for (std::size_t e = 0; e < merged.size(); ++e)
                        {
                            merged[e] += static_cast<float>(w[i]) * blocks[i][e];
                        }
                    }
                }
                else if (q != 0)
                {
                    expression_list<input_node> inputs;
                    for (std::size_t i = 0; i < tasks; ++i)
                    {
                        inputs.push_back(input(as_tensor(blocks[i].data(), {q, in}, tensor + ": V" + std::to_string(i))));
                    }
                    const std::vector<float> zero(q * in, 0.0f);
                    xmerge::evaluate(xmerge::ties(inputs, input(as_tensor(zero.data(), {q, in}, tensor)), w, options.densities),
                                     as_tensor(merged.data(), {q, in}, tensor));
                }
                extracted_factors r;
                r.left = dense_matrix<float>::from_shape({out, q});
                r.right = dense_matrix<float>::from_shape({q, in});
                for (std::size_t i = 0; i < out; ++i)
                {
                    for (std::size_t j = 0; j < q; ++j)
                    {
                        r.left(i, j) = static_cast<float>(options.lambda * static_cast<double>(f.u(i, j)) * f.s(j));
                    }
                }
                std::copy(merged.begin(), merged.end(), r.right.data());
                for (std::size_t j = 0; j < q; ++j)
                {
                    r.singular_values.push_back(static_cast<double>(f.s(j)));
                }
                r.total_energy = r.kept_energy = detail::product_energy(r.left, r.right);
                return r;
            });
    }
}

#endif
