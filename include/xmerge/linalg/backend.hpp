/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LINALG_BACKEND_HPP
#define XMERGE_LINALG_BACKEND_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <vector>

#include <xtensor-blas/xblas.hpp>
#include <xtensor-blas/xlapack.hpp>

#include "../core/error.hpp"

/**
 * @file
 * The BLAS and LAPACK routines xmerge calls, on row-major float or double
 * buffers, through the cxxblas / cxxlapack bindings that xtensor-blas ships.
 *
 * LAPACK is column-major; a row-major m x n buffer is the column-major
 * n x m transpose, so each wrapper states which matrix LAPACK sees. Every
 * routine reports failures as xmerge exceptions naming the tensor.
 */

namespace xmerge::detail
{
    /// Integer type of the BLAS/LAPACK interface.
    using blas_int = xt::blas_index_t;

    /// n as a BLAS/LAPACK dimension; throws shape_error when it does not fit.
    inline blas_int blas_dim(std::size_t n, const std::string& tensor);

    /**
     * C = alpha * op(A) * op(B) + beta * C with row-major C [m, n]; op(A) is
     * [m, k] (A stored [m, k], or [k, m] when trans_a), op(B) is [k, n].
     * lda, ldb, ldc are row strides.
     */
    template <class T>
    void gemm(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, T alpha, const T* a, std::size_t lda, const T* b,
              std::size_t ldb, T beta, T* c, std::size_t ldc);

    /**
     * Upper triangle of row-major C [n, n] = alpha * A^T A + beta * C for
     * row-major A [k, n] (a symmetric rank-k update; the lower triangle is
     * not touched).
     */
    template <class T>
    void syrk_upper(std::size_t n, std::size_t k, T alpha, const T* a, std::size_t lda, T beta, T* c);

    /**
     * Cholesky factorization of a symmetric n x n matrix in place, reading
     * and writing its row-major upper triangle (LAPACK's column-major lower
     * one); the other triangle is left as it was. Returns 0 on success, or
     * the order of the first leading minor that is not positive.
     */
    template <class T>
    blas_int cholesky(std::size_t n, T* a);

    /**
     * Solves S X = B for the n x n matrix S factored by cholesky(), with B
     * and X column-major n x nrhs (a row-major [nrhs, n] buffer holds B^T).
     */
    template <class T>
    void cholesky_solve(std::size_t n, std::size_t nrhs, const T* factor, T* b, const std::string& tensor);

    /**
     * Thin SVD of the row-major m x n matrix A = U diag(s) Vt, k = min(m, n):
     * u is row-major [m, k], s has k values in decreasing order, vt is
     * row-major [k, n]. A is destroyed. Throws merge_error when LAPACK does
     * not converge.
     */
    template <class T>
    void thin_svd(std::size_t m, std::size_t n, T* a, T* s, T* u, T* vt, const std::string& tensor);

    /********************
     * Implementation   *
     ********************/

    inline blas_int blas_dim(std::size_t n, const std::string& tensor)
    {
        if (n > static_cast<std::size_t>(std::numeric_limits<blas_int>::max()))
        {
            throw shape_error(tensor, "", "dimension " + std::to_string(n) + " is too large for the BLAS/LAPACK integer type");
        }
        return static_cast<blas_int>(n);
    }

    template <class T>
    inline void gemm(bool trans_a, bool trans_b, std::size_t m, std::size_t n, std::size_t k, T alpha, const T* a, std::size_t lda, const T* b,
                     std::size_t ldb, T beta, T* c, std::size_t ldc)
    {
        if (m == 0 || n == 0)
        {
            return;
        }
        if (k == 0)
        {
            // BLAS leaves C alone when k = 0 and beta = 1, but scales by beta otherwise.
            for (std::size_t i = 0; i < m; ++i)
            {
                for (std::size_t j = 0; j < n; ++j)
                {
                    c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
                }
            }
            return;
        }
        cxxblas::gemm<blas_int>(cxxblas::RowMajor, trans_a ? cxxblas::Trans : cxxblas::NoTrans, trans_b ? cxxblas::Trans : cxxblas::NoTrans,
                                blas_dim(m, ""), blas_dim(n, ""), blas_dim(k, ""), alpha, a, blas_dim(lda, ""), b, blas_dim(ldb, ""), beta, c,
                                blas_dim(ldc, ""));
    }

    template <class T>
    inline void syrk_upper(std::size_t n, std::size_t k, T alpha, const T* a, std::size_t lda, T beta, T* c)
    {
        if (n == 0 || k == 0)
        {
            return;
        }
        cxxblas::syrk<blas_int>(cxxblas::RowMajor, cxxblas::Upper, cxxblas::Trans, blas_dim(n, ""), blas_dim(k, ""), alpha, a, blas_dim(lda, ""),
                                beta, c, blas_dim(n, ""));
    }

    template <class T>
    inline blas_int cholesky(std::size_t n, T* a)
    {
        if (n == 0)
        {
            return 0;
        }
        return cxxlapack::potrf<blas_int>('L', blas_dim(n, ""), a, blas_dim(n, ""));
    }

    template <class T>
    inline void cholesky_solve(std::size_t n, std::size_t nrhs, const T* factor, T* b, const std::string& tensor)
    {
        if (n == 0 || nrhs == 0)
        {
            return;
        }
        const blas_int info = cxxlapack::potrs<blas_int>('L', blas_dim(n, tensor), blas_dim(nrhs, tensor), factor, blas_dim(n, tensor), b, blas_dim(n, tensor));
        if (info != 0)
        {
            throw merge_error(tensor, "", "LAPACK potrs rejected argument " + std::to_string(-info));
        }
    }

    template <class T>
    inline void thin_svd(std::size_t m, std::size_t n, T* a, T* s, T* u, T* vt, const std::string& tensor)
    {
        const std::size_t k = std::min(m, n);
        if (k == 0)
        {
            return;
        }
        // LAPACK sees the column-major n x m matrix A^T = V diag(s) U^T: its left
        // factor (column-major n x k) is Vt row-major, its right factor
        // (column-major k x m) is U row-major.
        const blas_int rows = blas_dim(n, tensor);
        const blas_int cols = blas_dim(m, tensor);
        std::vector<blas_int> iwork(8 * k);
        T query = 0;
        blas_int info = cxxlapack::gesdd<blas_int>('S', rows, cols, a, rows, s, vt, rows, u, blas_dim(k, tensor), &query, blas_int(-1), iwork.data());
        if (info != 0)
        {
            throw merge_error(tensor, "", "LAPACK gesdd workspace query failed (info " + std::to_string(info) + ")");
        }
        // The size comes back as a floating-point number, which may round below
        // the true size for large float matrices: leave some room.
        const double wanted = std::ceil(static_cast<double>(query) * (1.0 + 1e-6)) + 64.0;
        if (wanted > static_cast<double>(std::numeric_limits<blas_int>::max()))
        {
            throw shape_error(tensor, "", "matrix " + std::to_string(m) + " x " + std::to_string(n) + " needs more SVD workspace than LAPACK can index");
        }
        std::vector<T> work(static_cast<std::size_t>(wanted));
        info = cxxlapack::gesdd<blas_int>('S', rows, cols, a, rows, s, vt, rows, u, blas_dim(k, tensor), work.data(), static_cast<blas_int>(work.size()),
                                          iwork.data());
        if (info > 0)
        {
            throw merge_error(tensor, "", "the SVD did not converge (LAPACK gesdd info " + std::to_string(info) + ")");
        }
        if (info < 0)
        {
            throw merge_error(tensor, "", "LAPACK gesdd rejected argument " + std::to_string(-info));
        }
    }
}

#endif
