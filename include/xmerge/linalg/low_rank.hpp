/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LINALG_LOW_RANK_HPP
#define XMERGE_LINALG_LOW_RANK_HPP

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "backend.hpp"
#include "dense.hpp"
#include "projection.hpp"
#include "svd.hpp"

/**
 * @file
 * Low-rank factorizations M ~ left * right from a truncated SVD: at a
 * fixed rank or at an energy fraction, from a dense matrix or, without
 * forming it, from a product of thin factors.
 */

namespace xmerge
{
    /**
     * How many leading singular triplets a factorization keeps.
     *
     * `rank(r)` keeps min(r, k). `energy(f, max_rank)` keeps the smallest r
     * whose singular values hold at least a fraction f of the matrix's
     * squared Frobenius norm, at most max_rank (so it differs from
     * rank_rule::energy_fraction, which keeps at most the fraction).
     */
    class truncation
    {
    public:
        static truncation rank(std::size_t r) noexcept { return truncation(false, 1.0, r); }
        /// f in [0, 1]; throws parameter_error otherwise.
        static truncation energy(double f, std::size_t max_rank = std::numeric_limits<std::size_t>::max());

        bool by_energy() const noexcept { return m_energy; }
        double fraction() const noexcept { return m_fraction; }
        /// The most triplets it keeps.
        std::size_t max_rank() const noexcept { return m_max_rank; }

        /**
         * The rank for k singular values in decreasing order of a matrix whose
         * squared Frobenius norm is `total` (at least the sum of their squares;
         * more when only the leading ones were computed).
         */
        template <class T>
        std::size_t select(const T* s, std::size_t k, double total) const noexcept;

    private:
        truncation(bool energy, double f, std::size_t max_rank) noexcept : m_energy(energy), m_fraction(f), m_max_rank(max_rank) {}

        bool m_energy;
        double m_fraction;
        std::size_t m_max_rank;
    };

    /// M ~ left * right with left = U_r diag(s_r) [m, r] and right = V_r^T [r, n].
    template <class T>
    struct low_rank_factors
    {
        dense_matrix<T> left;
        dense_matrix<T> right;
        /// The kept singular values, decreasing.
        std::vector<double> singular_values;
        /// ||M||_F^2.
        double total_energy = 0.0;
        /// Sum of the kept singular values squared.
        double kept_energy = 0.0;

        std::size_t rank() const noexcept { return singular_values.size(); }
        /// kept_energy / total_energy (1 for a zero matrix).
        double kept_fraction() const noexcept { return total_energy > 0.0 ? std::min(1.0, kept_energy / total_energy) : 1.0; }
        /// ||M - left * right||_F for an exact SVD: the root of the discarded energy (Eckart-Young).
        double residual_norm() const noexcept { return std::sqrt(std::max(0.0, total_energy - kept_energy)); }
    };

    /// The leading triplets of an SVD as factors; `total_energy` is ||M||_F^2.
    template <class T>
    low_rank_factors<T> truncate(const svd_result<T>& f, const truncation& t, double total_energy);

    /**
     * Truncated SVD of `a` (consumed) with LAPACK gesdd. Cost: one thin SVD
     * of m x n, whatever rank is kept.
     */
    template <class T>
    low_rank_factors<T> truncated_svd(dense_matrix<T> a, const truncation& t, const std::string& tensor = {});

    /**
     * Exact thin SVD of left * right (left [m, k], right [k, n]) without
     * forming the product: QR of left and of right^T, then an SVD of their
     * small core. Cost O((m + n) k^2 + k^3); the result has min(m, n, k)
     * triplets.
     */
    template <class T>
    svd_result<T> product_svd(const dense_matrix<T>& left, const dense_matrix<T>& right, const std::string& tensor = {});

    namespace detail
    {
        /// Thin QR of row-major a [m, n] = q [m, p] r [p, n], p = min(m, n); r is skipped when null.
        template <class T>
        void thin_qr(const dense_matrix<T>& a, dense_matrix<T>& q, dense_matrix<T>* r, const std::string& tensor);

        /// q of thin_qr(a): orthonormal columns spanning a's.
        template <class T>
        dense_matrix<T> orthonormal_columns(const dense_matrix<T>& a, const std::string& tensor)
        {
            dense_matrix<T> q;
            thin_qr<T>(a, q, nullptr, tensor);
            return q;
        }

        /// The transpose of a row-major matrix.
        template <class T>
        dense_matrix<T> transposed(const dense_matrix<T>& a);
    }

    /********************
     * Implementation   *
     ********************/

    inline truncation truncation::energy(double f, std::size_t max_rank)
    {
        if (!(f >= 0.0 && f <= 1.0))
        {
            throw parameter_error("", "energy", "must be a fraction in [0, 1], got " + std::to_string(f));
        }
        return truncation(true, f, max_rank);
    }

    template <class T>
    inline std::size_t truncation::select(const T* s, std::size_t k, double total) const noexcept
    {
        const std::size_t cap = std::min(k, m_max_rank);
        if (!m_energy)
        {
            return cap;
        }
        if (!(total > 0.0))
        {
            return 0;
        }
        double kept = 0.0;
        for (std::size_t j = 0; j < cap; ++j)
        {
            if (kept >= m_fraction * total)
            {
                return j;
            }
            kept += static_cast<double>(s[j]) * s[j];
        }
        return cap;
    }

    template <class T>
    inline low_rank_factors<T> truncate(const svd_result<T>& f, const truncation& t, double total_energy)
    {
        const std::size_t m = f.u.shape()[0], n = f.vt.shape()[1], k = f.s.size();
        const std::size_t r = t.select(f.s.data(), k, total_energy);
        low_rank_factors<T> out;
        out.total_energy = total_energy;
        out.left = detail::uninitialized_matrix<T>(m, r);
        out.right = detail::uninitialized_matrix<T>(r, n);
        for (std::size_t j = 0; j < r; ++j)
        {
            out.singular_values.push_back(static_cast<double>(f.s(j)));
            out.kept_energy += static_cast<double>(f.s(j)) * f.s(j);
        }
        for (std::size_t i = 0; i < m; ++i)
        {
            for (std::size_t j = 0; j < r; ++j)
            {
                out.left(i, j) = f.u(i, j) * f.s(j);
            }
        }
        std::copy(f.vt.data(), f.vt.data() + r * n, out.right.data());
        return out;
    }

    template <class T>
    inline low_rank_factors<T> truncated_svd(dense_matrix<T> a, const truncation& t, const std::string& tensor)
    {
        const svd_result<T> f = svd<T>(std::move(a), tensor);
        double total = 0.0;
        for (std::size_t j = 0; j < f.s.size(); ++j)
        {
            total += static_cast<double>(f.s(j)) * f.s(j);
        }
        return truncate(f, t, total);
    }

    namespace detail
    {
        template <class T>
        inline dense_matrix<T> transposed(const dense_matrix<T>& a)
        {
            return leading_rows_transposed(a, a.shape()[0]);
        }

        template <class T>
        inline void thin_qr(const dense_matrix<T>& a, dense_matrix<T>& q, dense_matrix<T>* r, const std::string& tensor)
        {
            const std::size_t m = a.shape()[0], n = a.shape()[1], p = std::min(m, n);
            q = uninitialized_matrix<T>(m, p);
            if (r)
            {
                *r = dense_matrix<T>::from_shape(std::array<std::size_t, 2>{p, n});
                r->fill(T(0));
            }
            if (p == 0)
            {
                return;
            }
            // LAPACK works on columns: its column-major m x n matrix is the row-major transpose.
            dense_matrix<T> col = transposed(a);
            std::vector<T> tau(p);
            const blas_int lm = blas_dim(m, tensor), ln = blas_dim(n, tensor), lp = blas_dim(p, tensor);
            T query = 0;
            blas_int info = cxxlapack::geqrf<blas_int>(lm, ln, col.data(), lm, tau.data(), &query, blas_int(-1));
            std::vector<T> work(static_cast<std::size_t>(std::max<double>(1.0, std::ceil(static_cast<double>(query)))) + 64);
            info = info == 0 ? cxxlapack::geqrf<blas_int>(lm, ln, col.data(), lm, tau.data(), work.data(), static_cast<blas_int>(work.size())) : info;
            if (info != 0)
            {
                throw merge_error(tensor, "", "LAPACK geqrf failed (info " + std::to_string(info) + ")");
            }
            if (r)
            {
                for (std::size_t j = 0; j < n; ++j)
                {
                    for (std::size_t i = 0; i <= std::min(j, p - 1); ++i)
                    {
                        (*r)(i, j) = col(j, i);
                    }
                }
            }
            info = cxxlapack::orgqr<blas_int>(lm, lp, lp, col.data(), lm, tau.data(), &query, blas_int(-1));
            work.resize(std::max(work.size(), static_cast<std::size_t>(std::ceil(static_cast<double>(query))) + 64));
            info = info == 0 ? cxxlapack::orgqr<blas_int>(lm, lp, lp, col.data(), lm, tau.data(), work.data(), static_cast<blas_int>(work.size())) : info;
            if (info != 0)
            {
                throw merge_error(tensor, "", "LAPACK orgqr failed (info " + std::to_string(info) + ")");
            }
            for (std::size_t i = 0; i < m; ++i)
            {
                for (std::size_t j = 0; j < p; ++j)
                {
                    q(i, j) = col(j, i);
                }
            }
        }
    }

    template <class T>
    inline svd_result<T> product_svd(const dense_matrix<T>& left, const dense_matrix<T>& right, const std::string& tensor)
    {
        const std::size_t m = left.shape()[0], k = left.shape()[1], n = right.shape()[1];
        if (right.shape()[0] != k)
        {
            throw shape_error(tensor, "", "cannot multiply factors of shapes [" + std::to_string(m) + ", " + std::to_string(k) + "] and ["
                                              + std::to_string(right.shape()[0]) + ", " + std::to_string(n) + "]");
        }
        // left = Ql Rl, right^T = Qr Rr, so left right = Ql (Rl Rr^T) Qr^T.
        dense_matrix<T> ql, rl, qr, rr;
        detail::thin_qr(left, ql, &rl, tensor);
        detail::thin_qr(detail::transposed(right), qr, &rr, tensor);
        const std::size_t pl = rl.shape()[0], pr = rr.shape()[0];
        auto core = detail::uninitialized_matrix<T>(pl, pr);
        detail::gemm<T>(false, true, pl, pr, k, T(1), rl.data(), k, rr.data(), k, T(0), core.data(), pr);
        svd_result<T> c = svd<T>(std::move(core), tensor);
        const std::size_t q = c.s.size();
        svd_result<T> out;
        out.s = std::move(c.s);
        out.u = detail::uninitialized_matrix<T>(m, q);
        out.vt = detail::uninitialized_matrix<T>(q, n);
        detail::gemm<T>(false, false, m, q, pl, T(1), ql.data(), pl, c.u.data(), q, T(0), out.u.data(), q);
        detail::gemm<T>(false, true, q, n, pr, T(1), c.vt.data(), pr, qr.data(), pr, T(0), out.vt.data(), n);
        return out;
    }
}

#endif
