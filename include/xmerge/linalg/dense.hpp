/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LINALG_DENSE_HPP
#define XMERGE_LINALG_DENSE_HPP

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../core/expression.hpp"
#include "../core/tensor_ref.hpp"
#include "../core/xtensor_compat.hpp"
#include XMERGE_XTENSOR_TENSOR_HEADER
#include "../ops/input.hpp"
#include "../ops/list.hpp"
#include "../simd/convert.hpp"

/**
 * @file
 * Dense matrices of the linear-algebra methods: the floating-point type
 * they are computed in, and moving parameter memory (float32, bfloat16,
 * float16) in and out of row-major xtensor matrices.
 */

namespace xmerge
{
    /// Floating-point type in which solves and SVDs run.
    enum class linalg_precision
    {
        float32,  ///< LAPACK's s* routines; the default
        float64   ///< d* routines: about twice the time, for ill-conditioned inputs
    };

    /// A row-major dense matrix.
    template <class T>
    using dense_matrix = xt::xtensor<T, 2>;

    /// "float32" or "float64" as a precision; throws parameter_error naming `tensor` otherwise.
    inline linalg_precision parse_precision(const std::string& tensor, const std::string& text);

    namespace detail
    {
        /// The accepted values of a `precision` parameter.
        inline std::vector<std::pair<std::string, linalg_precision>> precision_choices()
        {
            return {{"float32", linalg_precision::float32}, {"float64", linalg_precision::float64}};
        }
    }

    /// A copy of a 2-D tensor (any dtype) as a dense matrix of T; throws shape_error for other ranks.
    template <class T = float>
    dense_matrix<T> to_matrix(const const_tensor_ref& t);

    namespace detail
    {
        /// Calls f(T{}) with T = float or double according to p.
        template <class F>
        decltype(auto) with_precision(linalg_precision p, F&& f)
        {
            if (p == linalg_precision::float64)
            {
                return f(double{});
            }
            return f(float{});
        }

        /// An uninitialized rows x cols matrix.
        template <class T>
        dense_matrix<T> uninitialized_matrix(std::size_t rows, std::size_t cols)
        {
            return dense_matrix<T>::from_shape(std::array<std::size_t, 2>{rows, cols});
        }

        /// dst[i] = scale * t[i] (or += when accumulate) over the whole tensor, converting from its dtype.
        template <class T>
        void load_scaled(const const_tensor_ref& t, T* dst, T scale, bool accumulate);

        /// t's values as a row-major rows x cols matrix of T.
        template <class T>
        dense_matrix<T> load_matrix(const const_tensor_ref& t, std::size_t rows, std::size_t cols);

        /// A 2-D tensor expression evaluated into a matrix of T.
        template <class T, class E>
        dense_matrix<T> evaluate_matrix(const tensor_expression<E>& e);

        /// x - base as a rows x cols matrix of T (rows * cols = base.size()).
        template <class T>
        dense_matrix<T> difference_matrix(const const_tensor_ref& x, const const_tensor_ref& base, std::size_t rows, std::size_t cols);

        /// x - base as a matrix of T of base's 2-D shape.
        template <class T>
        dense_matrix<T> difference_matrix(const const_tensor_ref& x, const const_tensor_ref& base)
        {
            return difference_matrix<T>(x, base, base.shape()[0], base.shape()[1]);
        }

        /// out[i] = m[i] as float32.
        template <class T>
        void store_float(const T* m, std::size_t n, float* out);

        /// Throws shape_error unless every tensor of the list has `shape`.
        template <class E>
        void check_same_shapes(const expression_list<E>& list, const shape_type& shape, const std::string& what, const std::string& reference);

        /// Throws unless every value is finite, naming `tensor` and `what` produced them.
        template <class T>
        void check_finite_result(const T* p, std::size_t n, const std::string& tensor, const std::string& what);

        /// The memory of every leaf, for the output aliasing check of computed nodes.
        inline void append_reads(std::vector<const_tensor_ref>& reads, const expression_list<input_node>& list);
    }

    /********************
     * Implementation   *
     ********************/

    inline linalg_precision parse_precision(const std::string& tensor, const std::string& text)
    {
        if (text == "float32")
        {
            return linalg_precision::float32;
        }
        if (text == "float64")
        {
            return linalg_precision::float64;
        }
        throw parameter_error(tensor, "precision", "must be \"float32\" or \"float64\", got \"" + text + "\"");
    }

    template <class T>
    inline dense_matrix<T> to_matrix(const const_tensor_ref& t)
    {
        if (t.dimension() != 2)
        {
            throw shape_error(t.name(), "", "expected a 2-D tensor, got shape " + xmerge::to_string(t.shape()));
        }
        return detail::load_matrix<T>(t, t.shape()[0], t.shape()[1]);
    }

    namespace detail
    {
        template <class T>
        inline void load_scaled(const const_tensor_ref& t, T* dst, T scale, bool accumulate)
        {
            const std::size_t n = t.size();
            if constexpr (std::is_same<T, float>::value)
            {
                if (t.type() == dtype::float32 && scale == 1.0f && !accumulate)
                {
                    std::copy_n(static_cast<const float*>(t.data()), n, dst);
                    return;
                }
            }
            // Widen a block at a time into a small buffer, then scale in T.
            constexpr std::size_t block = 2048;
            float buf[block];
            for (std::size_t begin = 0; begin < n; begin += block)
            {
                const std::size_t count = std::min(block, n - begin);
                simd::load_as_float(t.type(), t.data(), begin, count, buf);
                T* d = dst + begin;
                if (accumulate)
                {
                    for (std::size_t i = 0; i < count; ++i)
                    {
                        d[i] += scale * static_cast<T>(buf[i]);
                    }
                }
                else
                {
                    for (std::size_t i = 0; i < count; ++i)
                    {
                        d[i] = scale * static_cast<T>(buf[i]);
                    }
                }
            }
        }

        template <class T>
        inline dense_matrix<T> load_matrix(const const_tensor_ref& t, std::size_t rows, std::size_t cols)
        {
            auto m = uninitialized_matrix<T>(rows, cols);
            load_scaled<T>(t, m.data(), T(1), false);
            return m;
        }

        template <class T, class E>
        inline dense_matrix<T> evaluate_matrix(const tensor_expression<E>& e)
        {
            const E& expr = e.derived();
            const auto& shape = expr.shape();
            if constexpr (std::is_same<E, input_node>::value)
            {
                return load_matrix<T>(expr.tensor(), shape[0], shape[1]);
            }
            else if constexpr (std::is_same<T, float>::value)
            {
                auto m = uninitialized_matrix<float>(shape[0], shape[1]);
                evaluate(expr, as_tensor(m.data(), shape, expr.name()));
                return m;
            }
            else
            {
                auto f = uninitialized_matrix<float>(shape[0], shape[1]);
                evaluate(expr, as_tensor(f.data(), shape, expr.name()));
                auto m = uninitialized_matrix<T>(shape[0], shape[1]);
                std::copy(f.data(), f.data() + f.size(), m.data());
                return m;
            }
        }

        template <class T>
        inline dense_matrix<T> difference_matrix(const const_tensor_ref& x, const const_tensor_ref& base, std::size_t rows, std::size_t cols)
        {
            auto m = uninitialized_matrix<T>(rows, cols);
            const std::size_t n = base.size();
            constexpr std::size_t block = 1024;
            float bx[block], bb[block];
            for (std::size_t begin = 0; begin < n; begin += block)
            {
                const std::size_t count = std::min(block, n - begin);
                simd::load_as_float(x.type(), x.data(), begin, count, bx);
                simd::load_as_float(base.type(), base.data(), begin, count, bb);
                T* d = m.data() + begin;
                for (std::size_t i = 0; i < count; ++i)
                {
                    d[i] = static_cast<T>(bx[i]) - static_cast<T>(bb[i]);
                }
            }
            return m;
        }

        template <class T>
        inline void store_float(const T* m, std::size_t n, float* out)
        {
            for (std::size_t i = 0; i < n; ++i)
            {
                out[i] = static_cast<float>(m[i]);
            }
        }

        template <class E>
        inline void check_same_shapes(const expression_list<E>& list, const shape_type& shape, const std::string& what, const std::string& reference)
        {
            for (std::size_t k = 0; k < list.size(); ++k)
            {
                if (list[k].shape() != shape)
                {
                    throw shape_error(list[k].name(), what, what + " " + std::to_string(k) + " has shape " + xmerge::to_string(list[k].shape()) + " but "
                                                                + reference + " has shape " + xmerge::to_string(shape));
                }
            }
        }

        template <class T>
        inline void check_finite_result(const T* p, std::size_t n, const std::string& tensor, const std::string& what)
        {
            for (std::size_t i = 0; i < n; ++i)
            {
                if (!std::isfinite(p[i]))
                {
                    throw parameter_error(tensor, what, "the result is not finite at element " + std::to_string(i)
                                                            + " (an input holds inf or NaN, or the problem is too ill-conditioned for the precision)");
                }
            }
        }

        inline void append_reads(std::vector<const_tensor_ref>& reads, const expression_list<input_node>& list)
        {
            for (const auto& leaf : list)
            {
                reads.push_back(leaf.tensor());
            }
        }
    }
}

#endif
