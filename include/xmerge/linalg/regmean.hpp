/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LINALG_REGMEAN_HPP
#define XMERGE_LINALG_REGMEAN_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../methods/options.hpp"
#include "../methods/registry.hpp"
#include "../ops/any.hpp"
#include "../ops/computed.hpp"
#include "../ops/list.hpp"
#include "../ops/weighted_sum.hpp"
#include "backend.hpp"
#include "dense.hpp"

namespace xmerge
{
    /// Parameters of RegMean.
    struct regmean_options
    {
        /// a in G~_i = a G_i + (1 - a) diag(G_i), in [0, 1]; 1 uses the Gram matrices as they are.
        double reduce_non_diagonal_ratio = 1.0;
        /**
         * Diagonal loading used only when sum_i G~_i is not positive definite:
         * the solve is retried once with sum_i G~_i + ridge * mean(diag) * I
         * (ridge * I when the diagonal is zero). 0 (the default) throws instead.
         */
        double ridge = 0.0;
        linalg_precision precision = linalg_precision::float32;
    };

    /**
     * RegMean for one Linear weight: with W_i [out, in] and the Gram matrices
     * G_i = X_i^T X_i / n_i [in, in] of the layer's inputs,
     *
     *     result^T = (sum_i G~_i)^-1 sum_i G~_i W_i^T,
     *
     * the minimizer of sum_i ||X_i W^T - X_i W_i^T||^2 (for a = 1). The sum is
     * factored by Cholesky (potrf) and solved for all out columns at once
     * (potrs); no inverse is formed. With an empty `grams` list (a bias, a
     * norm) the result is the plain mean of the models.
     *
     * Cost: K products [out, in] x [in, in] (2 K out in^2 flops), one
     * Cholesky (in^3 / 3) and one solve (2 out in^2); memory: two in x in
     * and one out x in matrices of the working precision, plus conversion
     * buffers for inputs that are not float32.
     *
     * Throws shape_error for weights that are not 2-D or differ in shape, or
     * Gram matrices that are not [in, in]; parameter_error for a Gram count
     * other than the model count, a or ridge out of range, a Gram matrix with
     * a negative or non-finite diagonal, a non-finite entry or one that is not
     * symmetric, a sum that is not positive definite (with ridge = 0, or still
     * not with the ridge), and a result that is not finite.
     */
    inline any_expression regmean(const expression_list<input_node>& models, const expression_list<input_node>& grams, const regmean_options& options = {});

    /// `regmean` for the method registry: reads extra["gram"]; parameters
    /// `reduce_non_diagonal_ratio` (1.0), `ridge` (0.0), `precision` ("float32").
    template <class = void>
    method_info regmean_method();

    namespace detail
    {
        /// Checks one Gram matrix (finite, non-negative diagonal, symmetric to 1e-2 of sqrt(G_ii G_jj)).
        template <class T>
        void check_gram(const T* g, std::size_t n, const std::string& name);

        /// The RegMean solve for one tensor, written as float32 into out [out, in].
        template <class T>
        void regmean_solve(const expression_list<input_node>& models, const expression_list<input_node>& grams, const regmean_options& options,
                           const std::string& tensor, float* out);

        /// p when t is float32 memory and T is float; otherwise t converted into scratch.
        template <class T>
        const T* view_as(const const_tensor_ref& t, std::vector<T>& scratch)
        {
            if constexpr (std::is_same<T, float>::value)
            {
                if (t.type() == dtype::float32)
                {
                    return static_cast<const float*>(t.data());
                }
            }
            scratch.resize(t.size());
            load_scaled<T>(t, scratch.data(), T(1), false);
            return scratch.data();
        }
    }

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        template <class T>
        inline void check_gram(const T* g, std::size_t n, const std::string& name)
        {
            for (std::size_t i = 0; i < n; ++i)
            {
                const T d = g[i * n + i];
                if (!(d >= T(0)) || !std::isfinite(d))
                {
                    throw parameter_error(name, "gram", "diagonal entry " + std::to_string(i) + " is " + std::to_string(static_cast<double>(d))
                                                            + "; a Gram matrix has a finite, non-negative diagonal");
                }
            }
            // Compare tiles with their mirror tiles so both are read row by row.
            constexpr std::size_t tile = 64;
            for (std::size_t bi = 0; bi < n; bi += tile)
            {
                for (std::size_t bj = bi; bj < n; bj += tile)
                {
                    const std::size_t ei = std::min(n, bi + tile), ej = std::min(n, bj + tile);
                    for (std::size_t i = bi; i < ei; ++i)
                    {
                        for (std::size_t j = std::max(bj, i + 1); j < ej; ++j)
                        {
                            const double a = g[i * n + j], b = g[j * n + i];
                            const double scale = std::sqrt(static_cast<double>(g[i * n + i]) * static_cast<double>(g[j * n + j]));
                            if (!(std::fabs(a - b) <= 1e-2 * scale + 1e-30))
                            {
                                const std::string where = "(" + std::to_string(i) + ", " + std::to_string(j) + ")";
                                if (!std::isfinite(a) || !std::isfinite(b))
                                {
                                    throw parameter_error(name, "gram", "entry " + where + " is not finite");
                                }
                                throw parameter_error(name, "gram", "not symmetric at " + where + ": " + std::to_string(a) + " vs " + std::to_string(b)
                                                                        + "; expected X^T X / n of the layer's inputs");
                            }
                        }
                    }
                }
            }
        }

        template <class T>
        inline void regmean_solve(const expression_list<input_node>& models, const expression_list<input_node>& grams, const regmean_options& options,
                                  const std::string& tensor, float* out)
        {
            const std::size_t rows = models[0].shape()[0], in = models[0].shape()[1];
            const T a = static_cast<T>(options.reduce_non_diagonal_ratio);

            // sum of the Gram matrices and R = sum_i W_i G~_i^T [rows, in] (R^T is the right-hand side)
            std::vector<T> sum(in * in, T(0));
            std::vector<T> rhs_storage;
            T* rhs = nullptr;
            if constexpr (std::is_same<T, float>::value)
            {
                rhs = out;
            }
            else
            {
                rhs_storage.resize(rows * in);
                rhs = rhs_storage.data();
            }
            std::vector<T> w_scratch, g_scratch;
            for (std::size_t k = 0; k < models.size(); ++k)
            {
                const T* g = view_as<T>(grams[k].tensor(), g_scratch);
                check_gram(g, in, grams[k].name());
                const T* w = view_as<T>(models[k].tensor(), w_scratch);
                for (std::size_t i = 0; i < in * in; ++i)
                {
                    sum[i] += g[i];
                }
                // a W G^T, then (1 - a) W diag(G) column by column
                gemm<T>(false, true, rows, in, in, a, w, in, g, in, k == 0 ? T(0) : T(1), rhs, in);
                if (a != T(1))
                {
                    for (std::size_t r = 0; r < rows; ++r)
                    {
                        for (std::size_t j = 0; j < in; ++j)
                        {
                            rhs[r * in + j] += (T(1) - a) * w[r * in + j] * g[j * in + j];
                        }
                    }
                }
            }

            // sum_i G~_i: the off-diagonal part scaled by a
            std::vector<T> diagonal(in);
            for (std::size_t i = 0; i < in; ++i)
            {
                for (std::size_t j = 0; j < in; ++j)
                {
                    if (i != j)
                    {
                        sum[i * in + j] *= a;
                    }
                }
                diagonal[i] = sum[i * in + i];
            }

            blas_int info = cholesky<T>(in, sum.data());
            if (info > 0 && options.ridge > 0.0)
            {
                // potrf wrote only the row-major upper triangle: rebuild it from the lower one.
                double mean_diagonal = 0.0;
                for (std::size_t i = 0; i < in; ++i)
                {
                    mean_diagonal += static_cast<double>(diagonal[i]) / static_cast<double>(in);
                }
                const T load = static_cast<T>(options.ridge * (mean_diagonal > 0.0 ? mean_diagonal : 1.0));
                for (std::size_t i = 0; i < in; ++i)
                {
                    for (std::size_t j = i + 1; j < in; ++j)
                    {
                        sum[i * in + j] = sum[j * in + i];
                    }
                    sum[i * in + i] = diagonal[i] + load;
                }
                info = cholesky<T>(in, sum.data());
                if (info > 0)
                {
                    throw parameter_error(tensor, "gram", "the sum of the Gram matrices is not positive definite even with ridge " + std::to_string(options.ridge)
                                                              + " (leading minor " + std::to_string(info) + "); increase 'ridge'");
                }
            }
            else if (info > 0)
            {
                throw parameter_error(tensor, "gram", "the sum of the Gram matrices (off-diagonal scaled by reduce_non_diagonal_ratio) is not positive definite (leading minor "
                                                          + std::to_string(info) + " of " + std::to_string(in) + "); inputs that never vary make it singular: set 'ridge' > 0 or lower reduce_non_diagonal_ratio");
            }
            else if (info < 0)
            {
                throw merge_error(tensor, "gram", "LAPACK potrf rejected argument " + std::to_string(-info));
            }

            // The row-major [rows, in] buffer is the column-major [in, rows] right-hand side;
            // the solution has the same layout, which is W [rows, in] row-major.
            cholesky_solve<T>(in, rows, sum.data(), rhs, tensor);
            if constexpr (!std::is_same<T, float>::value)
            {
                store_float(rhs, rows * in, out);
            }
            check_finite_result(out, rows * in, tensor, "gram");
        }
    }

    inline any_expression regmean(const expression_list<input_node>& models, const expression_list<input_node>& grams, const regmean_options& options)
    {
        if (models.empty())
        {
            throw parameter_error("", "models", "RegMean needs at least one model");
        }
        const std::string tensor = models[0].name();
        const double a = options.reduce_non_diagonal_ratio;
        if (!(a >= 0.0 && a <= 1.0))
        {
            throw parameter_error(tensor, "reduce_non_diagonal_ratio", "must be in [0, 1], got " + std::to_string(a));
        }
        if (!(options.ridge >= 0.0) || !std::isfinite(options.ridge))
        {
            throw parameter_error(tensor, "ridge", "must be finite and non-negative, got " + std::to_string(options.ridge));
        }
        const shape_type shape = models[0].shape();
        detail::check_same_shapes(models, shape, "model", "model 0");
        if (grams.empty())
        {
            return xmerge::mean(models);
        }
        if (grams.size() != models.size())
        {
            throw parameter_error(tensor, "gram", "expected " + std::to_string(models.size()) + " Gram matrices (one per model), got " + std::to_string(grams.size()));
        }
        if (shape.size() != 2)
        {
            throw shape_error(tensor, "gram", "RegMean with Gram matrices needs 2-D weights [out, in], got shape " + xmerge::to_string(shape));
        }
        const shape_type gram_shape{shape[1], shape[1]};
        detail::check_same_shapes(grams, gram_shape, "gram", "a weight of shape " + xmerge::to_string(shape));
        std::vector<const_tensor_ref> reads;
        detail::append_reads(reads, models);
        detail::append_reads(reads, grams);
        return xmerge::computed(shape, tensor,
                        [models, grams, options, tensor](float* out)
                        { detail::with_precision(options.precision, [&](auto tag) { detail::regmean_solve<decltype(tag)>(models, grams, options, tensor, out); }); },
                        std::move(reads));
    }

    template <class T>
    method_info regmean_method()
    {
        const auto options = option_set<regmean_options>()
                                 .global(&regmean_options::reduce_non_diagonal_ratio, "reduce_non_diagonal_ratio", "scale of the off-diagonal Gram entries (1 keeps them)")
                                 .global(&regmean_options::ridge, "ridge", "diagonal loading if the Gram sum is not positive definite (0: throw)")
                                 .choice(&regmean_options::precision, "precision", "float32 or float64 solve", detail::precision_choices());
        return xmerge::make_method("regmean", "regression mean: the weight minimizing the squared output error on every model's inputs (needs Gram matrices)", false,
                           options,
                           [](const method_inputs& in, const regmean_options& o) -> any_expression
                           {
                               const auto it = in.extra.find("gram");
                               const expression_list<input_node> grams = it == in.extra.end() ? expression_list<input_node>{} : it->second;
                               return xmerge::regmean(in.models, grams, o);
                           });
    }
}

#endif
