/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LINALG_RANDOMIZED_SVD_HPP
#define XMERGE_LINALG_RANDOMIZED_SVD_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "../core/error.hpp"
#include "../simd/random.hpp"
#include "backend.hpp"
#include "dense.hpp"
#include "low_rank.hpp"
#include "svd.hpp"

/**
 * @file
 * The leading singular triplets of a large matrix from a randomized range
 * finder with subspace iteration (Halko, Martinsson and Tropp, "Finding
 * structure with randomness", SIAM Review 2011, Algorithms 4.4 and 5.1).
 */

namespace xmerge
{
    /// Parameters of randomized_svd().
    struct randomized_svd_options
    {
        /// Extra directions sampled beyond the rank asked for (p in the paper).
        std::size_t oversample = 10;
        /// Subspace (power) iterations (q): each sharpens a slowly decaying spectrum at two more products.
        std::size_t power_iterations = 2;
        /// Seed of the Gaussian test matrix; the result depends on nothing else.
        std::uint64_t seed = 0;
    };

    /**
     * Approximate thin SVD of `a` [m, n] restricted to its leading
     * l = min(rank + oversample, m, n) triplets: a Gaussian test matrix
     * [n, l], Y = A Omega, `power_iterations` rounds of re-orthonormalized
     * products with A^T and A, then an exact SVD of the small Q^T A [l, n].
     * Cost: 2 (q + 1) products of m x n x l and an SVD of l x n, against
     * about 4 m n min(m, n) for a full SVD.
     */
    template <class T>
    svd_result<T> randomized_svd(const dense_matrix<T>& a, std::size_t rank, const randomized_svd_options& options = {}, const std::string& tensor = {});

    /// randomized_svd() truncated: at most t.max_rank() triplets are sampled, so an energy rule needs a finite max_rank.
    template <class T>
    low_rank_factors<T> randomized_truncated_svd(const dense_matrix<T>& a, const truncation& t, const randomized_svd_options& options = {},
                                                 const std::string& tensor = {});

    namespace detail
    {
        /// rows x cols standard normal values, counter-based (Box-Muller over simd::uniform).
        template <class T>
        dense_matrix<T> gaussian_matrix(std::size_t rows, std::size_t cols, std::uint64_t seed);
    }

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        template <class T>
        inline dense_matrix<T> gaussian_matrix(std::size_t rows, std::size_t cols, std::uint64_t seed)
        {
            auto g = uninitialized_matrix<T>(rows, cols);
            const simd::random_key key = simd::make_random_key(seed, simd::hash_name("randomized_svd"), 0);
            const double two_pi = 6.283185307179586;
            const std::size_t n = g.size();
            for (std::size_t i = 0; i < n; i += 2)
            {
                const double u1 = 1.0 - static_cast<double>(simd::uniform<float>(key, i));  // (0, 1]
                const double u2 = static_cast<double>(simd::uniform<float>(key, i + 1));
                const double radius = std::sqrt(-2.0 * std::log(u1));
                g.data()[i] = static_cast<T>(radius * std::cos(two_pi * u2));
                if (i + 1 < n)
                {
                    g.data()[i + 1] = static_cast<T>(radius * std::sin(two_pi * u2));
                }
            }
            return g;
        }
    }

    template <class T>
    inline svd_result<T> randomized_svd(const dense_matrix<T>& a, std::size_t rank, const randomized_svd_options& options, const std::string& tensor)
    {
        const std::size_t m = a.shape()[0], n = a.shape()[1];
        const std::size_t l = std::min({rank + options.oversample, m, n});
        if (rank == 0 || l == 0)
        {
            svd_result<T> empty;
            empty.u = detail::uninitialized_matrix<T>(m, 0);
            empty.s = xt::xtensor<T, 1>::from_shape(std::array<std::size_t, 1>{0});
            empty.vt = detail::uninitialized_matrix<T>(0, n);
            return empty;
        }
        const dense_matrix<T> omega = detail::gaussian_matrix<T>(n, l, options.seed);
        auto y = detail::uninitialized_matrix<T>(m, l);
        detail::gemm<T>(false, false, m, l, n, T(1), a.data(), n, omega.data(), l, T(0), y.data(), l);
        dense_matrix<T> q = detail::orthonormal_columns(y, tensor);
        for (std::size_t it = 0; it < options.power_iterations; ++it)
        {
            // Orthonormalizing between products keeps the small directions from drowning in rounding.
            auto z = detail::uninitialized_matrix<T>(n, l);
            detail::gemm<T>(true, false, n, l, m, T(1), a.data(), n, q.data(), l, T(0), z.data(), l);
            const dense_matrix<T> qz = detail::orthonormal_columns(z, tensor);
            detail::gemm<T>(false, false, m, l, n, T(1), a.data(), n, qz.data(), l, T(0), y.data(), l);
            q = detail::orthonormal_columns(y, tensor);
        }
        auto b = detail::uninitialized_matrix<T>(l, n);
        detail::gemm<T>(true, false, l, n, m, T(1), q.data(), l, a.data(), n, T(0), b.data(), n);
        svd_result<T> small = svd<T>(std::move(b), tensor);
        svd_result<T> out;
        out.s = std::move(small.s);
        out.vt = std::move(small.vt);
        out.u = detail::uninitialized_matrix<T>(m, l);
        detail::gemm<T>(false, false, m, l, l, T(1), q.data(), l, small.u.data(), l, T(0), out.u.data(), l);
        return out;
    }

    template <class T>
    inline low_rank_factors<T> randomized_truncated_svd(const dense_matrix<T>& a, const truncation& t, const randomized_svd_options& options,
                                                        const std::string& tensor)
    {
        const std::size_t k = std::min(a.shape()[0], a.shape()[1]);
        if (t.by_energy() && t.max_rank() >= k)
        {
            throw parameter_error(tensor, "max_rank", "an energy fraction with the randomized finder needs a rank bound below min(m, n) = " + std::to_string(k)
                                                          + "; use the full SVD otherwise");
        }
        double total = 0.0;
        for (std::size_t i = 0; i < a.size(); ++i)
        {
            total += static_cast<double>(a.data()[i]) * a.data()[i];
        }
        return truncate(randomized_svd(a, std::min(t.max_rank(), k), options, tensor), t, total);
    }
}

#endif
