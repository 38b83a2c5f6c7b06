/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LINALG_PROJECTION_HPP
#define XMERGE_LINALG_PROJECTION_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/expression.hpp"
#include "../ops/any.hpp"
#include "../ops/computed.hpp"
#include "backend.hpp"
#include "dense.hpp"
#include "svd.hpp"

namespace xmerge
{
    /**
     * Which part of a 2-D task vector D [m, n] a projection keeps, for
     * orthonormal bases L [m, p] (left) and R [n, q] (right).
     */
    enum class projection_kind
    {
        left_complement,       ///< (I - L L^T) D: the column space of L removed
        right_complement,      ///< D (I - R R^T): the row space of R removed
        two_sided_complement,  ///< (I - L L^T) D (I - R R^T)
        block_removal,         ///< D - L L^T D R R^T: only the block coupling L and R removed
        in_subspace            ///< L L^T D R R^T: the block itself
    };

    /**
     * An orthogonal projection of 2-D task vectors onto (or off) subspaces
     * spanned by orthonormal bases, computed with matrix products only.
     *
     * Every kind is idempotent, and a removal leaves nothing in the removed
     * block: L^T P(D) R = 0 for block_removal and the complements. Cost per
     * application: about 4 m n (p + q) flops (block_removal and in_subspace:
     * 2 m n (p + q) + 2 p q (m + n)), with p x n, m x q and p x q temporaries.
     *
     * T is float or double (`projection` is the float32 one).
     */
    template <class T>
    class basic_projection
    {
    public:
        /**
         * Bases with orthonormal columns: left [m, p], right [n, q]. A kind that
         * does not use a side accepts an empty matrix there (shape [0, 0]).
         * Throws parameter_error when a basis the kind needs is missing or its
         * columns are not orthonormal (to 1e-4 in float, 1e-9 in double).
         */
        basic_projection(dense_matrix<T> left, dense_matrix<T> right, projection_kind kind);

        /**
         * Bases from a thin SVD of an m x n matrix: the leading r left and
         * right singular vectors, r chosen by `rule` on its singular values.
         * (Their orthonormality comes from LAPACK and is not checked again.)
         */
        static basic_projection from_svd(const svd_result<T>& f, const rank_rule& rule, projection_kind kind);

        projection_kind kind() const noexcept { return m_kind; }
        const dense_matrix<T>& left() const noexcept { return m_left; }
        const dense_matrix<T>& right() const noexcept { return m_right; }

        /// out = P(d) for row-major d and out of shape [m, n]; out may be d.
        void apply(const T* d, T* out, std::size_t m, std::size_t n, const std::string& tensor = {}) const;

        /// P(d) as a new matrix.
        dense_matrix<T> operator()(const dense_matrix<T>& d) const;

        /**
         * P(e) for a 2-D tensor expression (a task vector such as
         * `task_vector(x, base)`), as a lazy expression computed once per
         * evaluation. Throws shape_error when e is not [m, n].
         */
        template <class E>
        any_expression operator()(const tensor_expression<E>& e) const;

    private:
        struct trusted_bases
        {
        };
        basic_projection(dense_matrix<T> left, dense_matrix<T> right, projection_kind kind, trusted_bases);

        void check_shape(std::size_t m, std::size_t n, const std::string& tensor) const;
        // out = d - L (L^T d)
        void remove_left(const T* d, T* out, std::size_t m, std::size_t n) const;
        // out = d - (d R) R^T
        void remove_right(const T* d, T* out, std::size_t m, std::size_t n) const;
        // (L (L^T d R)) as [m, q]
        dense_matrix<T> left_block(const T* d, std::size_t m, std::size_t n) const;

        dense_matrix<T> m_left;
        dense_matrix<T> m_right;
        projection_kind m_kind;
    };

    /// The float32 projection.
    using projection = basic_projection<float>;

    namespace detail
    {
        /// Throws parameter_error naming `side` unless basis^T basis = I within tol.
        template <class T>
        void check_orthonormal(const dense_matrix<T>& basis, const char* side);

        /// The leading r columns of a row-major matrix.
        template <class T>
        dense_matrix<T> leading_columns(const dense_matrix<T>& a, std::size_t r);

        /// The leading r rows of a row-major matrix, transposed: [cols, r].
        template <class T>
        dense_matrix<T> leading_rows_transposed(const dense_matrix<T>& a, std::size_t r);
    }

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        template <class T>
        inline void check_orthonormal(const dense_matrix<T>& basis, const char* side)
        {
            const std::size_t m = basis.shape()[0], p = basis.shape()[1];
            if (p == 0)
            {
                return;
            }
            if (p > m)
            {
                throw parameter_error("", side, "basis of shape [" + std::to_string(m) + ", " + std::to_string(p) + "] has more columns than rows, so its columns cannot be orthonormal");
            }
            auto gram = uninitialized_matrix<T>(p, p);
            syrk_upper<T>(p, m, T(1), basis.data(), p, T(0), gram.data());
            const double tol = sizeof(T) == sizeof(float) ? 1e-4 : 1e-9;
            double worst = 0.0;
            for (std::size_t i = 0; i < p; ++i)
            {
                for (std::size_t j = i; j < p; ++j)
                {
                    const double e = std::fabs(static_cast<double>(gram(i, j)) - (i == j ? 1.0 : 0.0));
                    worst = std::isnan(e) ? INFINITY : std::max(worst, e);
                }
            }
            if (!(worst <= tol))
            {
                throw parameter_error("", side, "basis columns are not orthonormal (largest deviation of B^T B from I is " + std::to_string(worst) + ")");
            }
        }

        template <class T>
        inline dense_matrix<T> leading_columns(const dense_matrix<T>& a, std::size_t r)
        {
            const std::size_t m = a.shape()[0], k = a.shape()[1];
            auto out = uninitialized_matrix<T>(m, r);
            for (std::size_t i = 0; i < m; ++i)
            {
                std::copy_n(a.data() + i * k, r, out.data() + i * r);
            }
            return out;
        }

        template <class T>
        inline dense_matrix<T> leading_rows_transposed(const dense_matrix<T>& a, std::size_t r)
        {
            const std::size_t n = a.shape()[1];
            auto out = uninitialized_matrix<T>(n, r);
            for (std::size_t j = 0; j < r; ++j)
            {
                for (std::size_t i = 0; i < n; ++i)
                {
                    out(i, j) = a(j, i);
                }
            }
            return out;
        }
    }

    template <class T>
    inline basic_projection<T>::basic_projection(dense_matrix<T> left, dense_matrix<T> right, projection_kind kind, trusted_bases)
        : m_left(std::move(left))
        , m_right(std::move(right))
        , m_kind(kind)
    {
        if (kind != projection_kind::right_complement && m_left.shape()[0] == 0)
        {
            throw parameter_error("", "left", "this projection kind needs a left basis");
        }
        if (kind != projection_kind::left_complement && m_right.shape()[0] == 0)
        {
            throw parameter_error("", "right", "this projection kind needs a right basis");
        }
    }

    template <class T>
    inline basic_projection<T>::basic_projection(dense_matrix<T> left, dense_matrix<T> right, projection_kind kind)
        : basic_projection(std::move(left), std::move(right), kind, trusted_bases{})
    {
        const bool needs_left = kind != projection_kind::right_complement;
        const bool needs_right = kind != projection_kind::left_complement;
        if (needs_left)
        {
            detail::check_orthonormal(m_left, "left");
        }
        if (needs_right)
        {
            detail::check_orthonormal(m_right, "right");
        }
    }

    template <class T>
    inline basic_projection<T> basic_projection<T>::from_svd(const svd_result<T>& f, const rank_rule& rule, projection_kind kind)
    {
        const std::size_t r = rule.select(f.s.data(), f.rank());
        const bool left = kind != projection_kind::right_complement;
        const bool right = kind != projection_kind::left_complement;
        return basic_projection(left ? detail::leading_columns(f.u, r) : dense_matrix<T>(), right ? detail::leading_rows_transposed(f.vt, r) : dense_matrix<T>(),
                                kind, trusted_bases{});
    }

    template <class T>
    inline void basic_projection<T>::check_shape(std::size_t m, std::size_t n, const std::string& tensor) const
    {
        const bool uses_left = m_kind != projection_kind::right_complement;
        const bool uses_right = m_kind != projection_kind::left_complement;
        if ((uses_left && m != m_left.shape()[0]) || (uses_right && n != m_right.shape()[0]))
        {
            const std::string rows = uses_left ? std::to_string(m_left.shape()[0]) : "any";
            const std::string cols = uses_right ? std::to_string(m_right.shape()[0]) : "any";
            throw shape_error(tensor, "", "a projection with bases for [" + rows + ", " + cols + "] cannot apply to shape [" + std::to_string(m) + ", "
                                              + std::to_string(n) + "]");
        }
    }

    template <class T>
    inline void basic_projection<T>::remove_left(const T* d, T* out, std::size_t m, std::size_t n) const
    {
        const std::size_t p = m_left.shape()[1];
        auto a = detail::uninitialized_matrix<T>(p, n);
        detail::gemm<T>(true, false, p, n, m, T(1), m_left.data(), p, d, n, T(0), a.data(), n);
        if (out != d)
        {
            std::copy(d, d + m * n, out);
        }
        detail::gemm<T>(false, false, m, n, p, T(-1), m_left.data(), p, a.data(), n, T(1), out, n);
    }

    template <class T>
    inline void basic_projection<T>::remove_right(const T* d, T* out, std::size_t m, std::size_t n) const
    {
        const std::size_t q = m_right.shape()[1];
        auto b = detail::uninitialized_matrix<T>(m, q);
        detail::gemm<T>(false, false, m, q, n, T(1), d, n, m_right.data(), q, T(0), b.data(), q);
        if (out != d)
        {
            std::copy(d, d + m * n, out);
        }
        detail::gemm<T>(false, true, m, n, q, T(-1), b.data(), q, m_right.data(), q, T(1), out, n);
    }

    template <class T>
    inline dense_matrix<T> basic_projection<T>::left_block(const T* d, std::size_t m, std::size_t n) const
    {
        const std::size_t p = m_left.shape()[1], q = m_right.shape()[1];
        // Contract the smaller side first: L^T d is p x n, d R is m x q.
        auto c = detail::uninitialized_matrix<T>(p, q);
        if (p * n <= m * q)
        {
            auto a = detail::uninitialized_matrix<T>(p, n);
            detail::gemm<T>(true, false, p, n, m, T(1), m_left.data(), p, d, n, T(0), a.data(), n);
            detail::gemm<T>(false, false, p, q, n, T(1), a.data(), n, m_right.data(), q, T(0), c.data(), q);
        }
        else
        {
            auto b = detail::uninitialized_matrix<T>(m, q);
            detail::gemm<T>(false, false, m, q, n, T(1), d, n, m_right.data(), q, T(0), b.data(), q);
            detail::gemm<T>(true, false, p, q, m, T(1), m_left.data(), p, b.data(), q, T(0), c.data(), q);
        }
        auto e = detail::uninitialized_matrix<T>(m, q);
        detail::gemm<T>(false, false, m, q, p, T(1), m_left.data(), p, c.data(), q, T(0), e.data(), q);
        return e;
    }

    template <class T>
    inline void basic_projection<T>::apply(const T* d, T* out, std::size_t m, std::size_t n, const std::string& tensor) const
    {
        check_shape(m, n, tensor);
        switch (m_kind)
        {
            case projection_kind::left_complement:
                remove_left(d, out, m, n);
                break;
            case projection_kind::right_complement:
                remove_right(d, out, m, n);
                break;
            case projection_kind::two_sided_complement:
                remove_left(d, out, m, n);
                remove_right(out, out, m, n);
                break;
            case projection_kind::block_removal:
            case projection_kind::in_subspace:
            {
                const std::size_t q = m_right.shape()[1];
                const dense_matrix<T> e = left_block(d, m, n);
                const bool removal = m_kind == projection_kind::block_removal;
                if (removal && out != d)
                {
                    std::copy(d, d + m * n, out);
                }
                detail::gemm<T>(false, true, m, n, q, removal ? T(-1) : T(1), e.data(), q, m_right.data(), q, removal ? T(1) : T(0), out, n);
                break;
            }
        }
    }

    template <class T>
    inline dense_matrix<T> basic_projection<T>::operator()(const dense_matrix<T>& d) const
    {
        auto out = detail::uninitialized_matrix<T>(d.shape()[0], d.shape()[1]);
        apply(d.data(), out.data(), d.shape()[0], d.shape()[1]);
        return out;
    }

    template <class T>
    template <class E>
    inline any_expression basic_projection<T>::operator()(const tensor_expression<E>& e) const
    {
        const E& expr = e.derived();
        const shape_type& shape = expr.shape();
        if (shape.size() != 2)
        {
            throw shape_error(expr.name(), "", "a projection applies to 2-D tensors, got shape " + xmerge::to_string(shape));
        }
        check_shape(shape[0], shape[1], expr.name());
        std::vector<const_tensor_ref> reads;
        expr.for_each_input([&](const const_tensor_ref& r) { reads.push_back(r); });
        auto self = std::make_shared<const basic_projection>(*this);
        return xmerge::computed(shape, expr.name(),
                        [self, expr](float* out)
                        {
                            const auto& s = expr.shape();
                            dense_matrix<T> d = detail::evaluate_matrix<T>(expr);
                            self->apply(d.data(), d.data(), s[0], s[1], expr.name());
                            detail::store_float(d.data(), d.size(), out);
                        },
                        std::move(reads));
    }
}

#endif
