/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LINALG_SVD_HPP
#define XMERGE_LINALG_SVD_HPP

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <string>
#include <utility>

#include "../core/error.hpp"
#include "backend.hpp"
#include "dense.hpp"

namespace xmerge
{
    /**
     * How many leading singular triplets of a matrix a subspace keeps.
     *
     * With singular values s_0 >= s_1 >= ... >= s_{k-1}:
     *  - `sum_fraction(f)`: the largest r whose leading values hold at most a
     *    fraction f of sum_j s_j, i.e. r = the first index j with
     *    (s_0 + ... + s_j) / sum > f (k when there is none). This is the split
     *    rank of continual projection merging.
     *  - `energy_fraction(f)`: the same with s_j^2 (the share of the squared
     *    Frobenius norm).
     *  - `fixed(r)`: r, capped at k.
     * A zero matrix keeps nothing under the fraction rules.
     */
    class rank_rule
    {
    public:
        enum class kind
        {
            sum_fraction,
            energy_fraction,
            fixed
        };

        /// f in [0, 1]; throws parameter_error otherwise.
        static rank_rule sum_fraction(double f);
        /// f in [0, 1]; throws parameter_error otherwise.
        static rank_rule energy_fraction(double f);
        static rank_rule fixed(std::size_t r) noexcept { return rank_rule(kind::fixed, static_cast<double>(r)); }

        kind type() const noexcept { return m_kind; }
        double value() const noexcept { return m_value; }

        /// The rank for k singular values in decreasing order.
        template <class T>
        std::size_t select(const T* s, std::size_t k) const noexcept;

    private:
        rank_rule(kind k, double v) noexcept : m_kind(k), m_value(v) {}
        static double check_fraction(double f, const char* name);

        kind m_kind;
        double m_value;
    };

    /// A thin SVD A = u diag(s) vt: u [m, k], s [k] decreasing, vt [k, n], k = min(m, n).
    template <class T>
    struct svd_result
    {
        dense_matrix<T> u;
        xt::xtensor<T, 1> s;
        dense_matrix<T> vt;

        std::size_t rank() const noexcept { return s.size(); }
    };

    /**
     * Thin SVD of a row-major matrix (LAPACK gesdd), consuming it. `tensor`
     * names the matrix in errors. Cost: one gesdd of m x n, about
     * 4 m n min(m, n) flops plus lower-order terms.
     */
    template <class T>
    svd_result<T> svd(dense_matrix<T> a, const std::string& tensor = {});

    /**
     * The orthogonal (polar) factor of a: U Vt from its thin SVD, the
     * matrix with orthonormal rows or columns nearest to a in Frobenius
     * norm. Consumes a. Cost: one SVD of a and one product m x k x n.
     */
    template <class T>
    dense_matrix<T> polar_factor(dense_matrix<T> a, const std::string& tensor = {});

    namespace detail
    {
        /// Row-major C = A * B for contiguous row-major matrices.
        template <class T>
        dense_matrix<T> matmul(const dense_matrix<T>& a, const dense_matrix<T>& b);
    }

    /********************
     * Implementation   *
     ********************/

    inline double rank_rule::check_fraction(double f, const char* name)
    {
        if (!(f >= 0.0 && f <= 1.0))
        {
            throw parameter_error("", name, "must be a fraction in [0, 1], got " + std::to_string(f));
        }
        return f;
    }

    inline rank_rule rank_rule::sum_fraction(double f)
    {
        return rank_rule(kind::sum_fraction, check_fraction(f, "sum_fraction"));
    }

    inline rank_rule rank_rule::energy_fraction(double f)
    {
        return rank_rule(kind::energy_fraction, check_fraction(f, "energy_fraction"));
    }

    template <class T>
    inline std::size_t rank_rule::select(const T* s, std::size_t k) const noexcept
    {
        if (m_kind == kind::fixed)
        {
            return std::min(k, static_cast<std::size_t>(m_value));
        }
        const bool squares = m_kind == kind::energy_fraction;
        const auto term = [&](std::size_t j) { return squares ? static_cast<double>(s[j]) * s[j] : static_cast<double>(s[j]); };
        double total = 0.0;
        for (std::size_t j = 0; j < k; ++j)
        {
            total += term(j);
        }
        if (!(total > 0.0))
        {
            return 0;
        }
        // The same running sum as `total`, so the last share is exactly 1.
        double running = 0.0;
        for (std::size_t j = 0; j < k; ++j)
        {
            running += term(j);
            if (running / total > m_value)
            {
                return j;
            }
        }
        return k;
    }

    template <class T>
    inline svd_result<T> svd(dense_matrix<T> a, const std::string& tensor)
    {
        const std::size_t m = a.shape()[0];
        const std::size_t n = a.shape()[1];
        const std::size_t k = std::min(m, n);
        svd_result<T> r;
        r.u = detail::uninitialized_matrix<T>(m, k);
        r.s = xt::xtensor<T, 1>::from_shape(std::array<std::size_t, 1>{k});
        r.vt = detail::uninitialized_matrix<T>(k, n);
        detail::thin_svd<T>(m, n, a.data(), r.s.data(), r.u.data(), r.vt.data(), tensor);
        return r;
    }

    template <class T>
    inline dense_matrix<T> polar_factor(dense_matrix<T> a, const std::string& tensor)
    {
        const svd_result<T> f = svd<T>(std::move(a), tensor);
        return detail::matmul(f.u, f.vt);
    }

    namespace detail
    {
        template <class T>
        inline dense_matrix<T> matmul(const dense_matrix<T>& a, const dense_matrix<T>& b)
        {
            const std::size_t m = a.shape()[0], k = a.shape()[1], n = b.shape()[1];
            auto c = uninitialized_matrix<T>(m, n);
            gemm<T>(false, false, m, n, k, T(1), a.data(), k, b.data(), n, T(0), c.data(), n);
            return c;
        }
    }
}

#endif
