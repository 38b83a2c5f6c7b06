/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LINALG_TASK_MATRIX_HPP
#define XMERGE_LINALG_TASK_MATRIX_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../methods/task_arithmetic.hpp"
#include "../ops/any.hpp"
#include "../ops/computed.hpp"
#include "../ops/input.hpp"
#include "../ops/list.hpp"
#include "../simd/convert.hpp"
#include "dense.hpp"

/**
 * @file
 * What the SVD-based task-vector merges share: checking the models against
 * the base, task vectors as dense matrices, the mean task vector for tensors
 * that are not 2-D, and writing base + alpha * merged.
 */

namespace xmerge::detail
{
    /// Throws unless there is at least one model and every model has base's shape.
    inline void check_task_inputs(const expression_list<input_node>& models, const input_node& base, const char* method);

    /// Throws parameter_error unless v is finite.
    inline void check_finite_parameter(const std::string& tensor, const char* parameter, double v);

    /// x - base as a 2-D matrix of T; throws parameter_error naming x when a value is not finite.
    template <class T>
    dense_matrix<T> task_matrix(const input_node& x, const input_node& base);

    /// Throws parameter_error naming `tensor` at the first value that is not finite.
    template <class T>
    void check_finite_input(const T* p, std::size_t n, const std::string& tensor);

    /// dst[i] += scale * (x[i] - base[i]) over the whole tensor.
    template <class T>
    void accumulate_difference(const const_tensor_ref& x, const const_tensor_ref& base, T scale, T* dst);

    /// out[i] = base[i] + alpha * m[i], in T, rounded to float32.
    template <class T>
    void store_base_plus(const const_tensor_ref& base, T alpha, const T* m, float* out);

    /// sum_i p[i]^2 in double.
    template <class T>
    double squared_norm(const T* p, std::size_t n) noexcept;

    /**
     * base + alpha * merged, where merged is the matrix solve(T{}) returns
     * for a 2-D tensor (computed once per evaluation in the precision asked
     * for), and the mean task vector for any other tensor.
     */
    template <class Solve>
    any_expression task_matrix_merge(const expression_list<input_node>& models, const input_node& base, double alpha, linalg_precision precision,
                                     const char* method, Solve solve);

    /********************
     * Implementation   *
     ********************/

    inline void check_task_inputs(const expression_list<input_node>& models, const input_node& base, const char* method)
    {
        if (models.empty())
        {
            throw parameter_error(base.name(), "models", std::string(method) + " needs at least one model");
        }
        check_same_shapes(models, base.shape(), "model", "the base ('" + base.name() + "')");
    }

    inline void check_finite_parameter(const std::string& tensor, const char* parameter, double v)
    {
        if (!std::isfinite(v))
        {
            throw parameter_error(tensor, parameter, "must be finite, got " + std::to_string(v));
        }
    }

    template <class T>
    inline void check_finite_input(const T* p, std::size_t n, const std::string& tensor)
    {
        for (std::size_t i = 0; i < n; ++i)
        {
            if (!std::isfinite(p[i]))
            {
                throw parameter_error(tensor, "models", "task vector is not finite at element " + std::to_string(i));
            }
        }
    }

    template <class T>
    inline dense_matrix<T> task_matrix(const input_node& x, const input_node& base)
    {
        dense_matrix<T> d = difference_matrix<T>(x.tensor(), base.tensor());
        check_finite_input(d.data(), d.size(), x.name());
        return d;
    }

    template <class T>
    inline void accumulate_difference(const const_tensor_ref& x, const const_tensor_ref& base, T scale, T* dst)
    {
        const std::size_t n = base.size();
        constexpr std::size_t block = 1024;
        float bx[block], bb[block];
        for (std::size_t begin = 0; begin < n; begin += block)
        {
            const std::size_t count = std::min(block, n - begin);
            simd::load_as_float(x.type(), x.data(), begin, count, bx);
            simd::load_as_float(base.type(), base.data(), begin, count, bb);
            T* d = dst + begin;
            for (std::size_t i = 0; i < count; ++i)
            {
                d[i] += scale * (static_cast<T>(bx[i]) - static_cast<T>(bb[i]));
            }
        }
    }

    template <class T>
    inline void store_base_plus(const const_tensor_ref& base, T alpha, const T* m, float* out)
    {
        const std::size_t n = base.size();
        constexpr std::size_t block = 2048;
        float bb[block];
        for (std::size_t begin = 0; begin < n; begin += block)
        {
            const std::size_t count = std::min(block, n - begin);
            simd::load_as_float(base.type(), base.data(), begin, count, bb);
            for (std::size_t i = 0; i < count; ++i)
            {
                out[begin + i] = static_cast<float>(static_cast<T>(bb[i]) + alpha * m[begin + i]);
            }
        }
    }

    template <class T>
    inline double squared_norm(const T* p, std::size_t n) noexcept
    {
        double s0 = 0.0, s1 = 0.0;
        std::size_t i = 0;
        for (; i + 1 < n; i += 2)
        {
            s0 += static_cast<double>(p[i]) * p[i];
            s1 += static_cast<double>(p[i + 1]) * p[i + 1];
        }
        if (i < n)
        {
            s0 += static_cast<double>(p[i]) * p[i];
        }
        return s0 + s1;
    }

    template <class Solve>
    inline any_expression task_matrix_merge(const expression_list<input_node>& models, const input_node& base, double alpha, linalg_precision precision,
                                            const char* method, Solve solve)
    {
        check_task_inputs(models, base, method);
        const std::string tensor = base.name();
        check_finite_parameter(tensor, "alpha", alpha);
        const shape_type& shape = base.shape();
        if (shape.size() != 2)
        {
            // The mean task vector: what these methods do for biases, norms and convolutions.
            return xmerge::task_arithmetic(models, base, std::vector<double>(models.size(), 1.0 / static_cast<double>(models.size())), {alpha, false});
        }
        std::vector<const_tensor_ref> reads{base.tensor()};
        append_reads(reads, models);
        return xmerge::computed(shape, tensor,
                        [models, base, alpha, precision, solve, tensor](float* out)
                        {
                            with_precision(precision,
                                           [&](auto tag)
                                           {
                                               using T = decltype(tag);
                                               const dense_matrix<T> merged = solve(tag);
                                               check_finite_result(merged.data(), merged.size(), tensor, "models");
                                               store_base_plus<T>(base.tensor(), static_cast<T>(alpha), merged.data(), out);
                                           });
                        },
                        std::move(reads));
    }
}

#endif
