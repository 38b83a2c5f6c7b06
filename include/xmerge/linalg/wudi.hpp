/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LINALG_WUDI_HPP
#define XMERGE_LINALG_WUDI_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../methods/options.hpp"
#include "../methods/registry.hpp"
#include "../ops/any.hpp"
#include "../ops/list.hpp"
#include "backend.hpp"
#include "dense.hpp"
#include "svd.hpp"
#include "task_matrix.hpp"

namespace xmerge
{
    /// How WUDI minimizes its loss.
    enum class wudi_solver
    {
        adam,        ///< the reference's loop: Adam from the sum of the task vectors (far from the optimum)
        closed_form  ///< the minimizer, tau G = R
    };

    /// Parameters of WUDI merging.
    struct wudi_options
    {
        wudi_solver solver = wudi_solver::adam;
        /// Adam steps (FusionBench's function default; its configuration uses 400).
        std::size_t iter_num = 300;
        /// Adam's learning rate (fixed in the reference).
        double lr = 1e-5;
        linalg_precision precision = linalg_precision::float32;
    };

    /**
     * WUDI merging (Cheng et al., "Whoever Started the Interference Should
     * End It: Guiding Data-Free Model Merging via Task Vectors", ICML 2025),
     * data-free: for a 2-D tensor with task vectors tau_i [m, n], the merged
     * task vector minimizes
     *
     *     L(tau) = sum_i ||(tau - tau_i) tau_i^T||_F^2 / ||tau_i||_F^2,
     *
     * whose gradient is 2 (tau G - R) with G = sum_i tau_i^T tau_i / ||tau_i||^2
     * [n, n] and R = sum_i tau_i tau_i^T tau_i / ||tau_i||^2 [m, n]. Result:
     * base + tau. Other tensors: base + mean_i tau_i. A zero task vector
     * adds nothing to L (the reference divides by its zero norm).
     *
     * - `wudi_solver::adam` (the reference, FusionBench's wudi_merging):
     *   tau starts at sum_i tau_i and takes `iter_num` steps of Adam
     *   (betas 0.9 / 0.999, eps 1e-8, no weight decay) at rate `lr`. Each
     *   entry moves by about lr per step, so with the reference's 1e-5 and
     *   300-400 steps the loop ends far from the minimum.
     * - `wudi_solver::closed_form`: tau = R G^-1 by a Cholesky factorization
     *   of G, as RegMean. When G is singular or nearly so (its rank is at
     *   most sum_i rank tau_i; a smallest pivot below n eps(T) times the
     *   largest diagonal entry), the minimum-norm minimizer R G^+ instead,
     *   from an SVD of G with singular values below n eps(T) s_max dropped.
     *   Every row of R lies in G's range, so this is the minimizer closest
     *   to the reference's start and the limit of gradient descent from it.
     *
     * Cost per 2-D tensor: K Gram products (n^2 m each) and K products for R
     * (m n^2); then closed form: one Cholesky (n^3 / 3) and a solve
     * (2 m n^2), or one SVD of G and two products when singular; Adam:
     * iter_num products tau G (2 m n^2 each). Memory: G [n, n], R, tau and
     * (Adam) two moment buffers [m, n] of the working precision.
     */
    inline any_expression wudi(const expression_list<input_node>& models, const input_node& base, const wudi_options& options = {});

    /// `wudi` for the method registry: `solver` ("adam" | "closed_form"), `iter_num` (300), `lr` (1e-5), `precision`; needs a base.
    template <class = void>
    method_info wudi_method();

    namespace detail
    {
        /// G, R and the initial point (sum of the task vectors) of WUDI's loss for one 2-D tensor.
        template <class T>
        struct wudi_system
        {
            dense_matrix<T> g;    // [n, n]
            dense_matrix<T> r;    // [m, n]
            dense_matrix<T> sum;  // [m, n]
        };

        /// Builds G, R and sum_i tau_i from the task vectors of 2-D inputs.
        template <class T>
        wudi_system<T> wudi_build_system(const expression_list<input_node>& models, const input_node& base);

        /// The reference's Adam loop from s.sum.
        template <class T>
        dense_matrix<T> wudi_adam(const wudi_system<T>& s, std::size_t steps, double lr);

        /// The minimizer of WUDI's loss (see wudi()).
        template <class T>
        dense_matrix<T> wudi_closed_form(const wudi_system<T>& s, const std::string& tensor);

        /// L(tau) in double for task vectors given as matrices (tests, documentation).
        template <class T>
        double wudi_loss(const dense_matrix<T>& tau, const std::vector<dense_matrix<T>>& tasks);
    }

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        template <class T>
        inline wudi_system<T> wudi_build_system(const expression_list<input_node>& models, const input_node& base)
        {
            const std::size_t m = base.shape()[0], n = base.shape()[1];
            wudi_system<T> s;
            s.g = uninitialized_matrix<T>(n, n);
            s.r = uninitialized_matrix<T>(m, n);
            s.sum = uninitialized_matrix<T>(m, n);
            std::fill(s.g.begin(), s.g.end(), T(0));
            std::fill(s.r.begin(), s.r.end(), T(0));
            std::fill(s.sum.begin(), s.sum.end(), T(0));
            auto gi = uninitialized_matrix<T>(n, n);
            for (std::size_t i = 0; i < models.size(); ++i)
            {
                const dense_matrix<T> d = task_matrix<T>(models[i], base);
                for (std::size_t j = 0; j < d.size(); ++j)
                {
                    s.sum.data()[j] += d.data()[j];
                }
                const double norm2 = squared_norm(d.data(), d.size());
                if (!(norm2 > 0.0))
                {
                    continue;
                }
                // G_i = d^T d / ||d||^2 (upper triangle, mirrored); R += d G_i
                syrk_upper<T>(n, m, static_cast<T>(1.0 / norm2), d.data(), n, T(0), gi.data());
                for (std::size_t a = 0; a < n; ++a)
                {
                    for (std::size_t b = a + 1; b < n; ++b)
                    {
                        gi(b, a) = gi(a, b);
                    }
                }
                for (std::size_t j = 0; j < gi.size(); ++j)
                {
                    s.g.data()[j] += gi.data()[j];
                }
                gemm<T>(false, false, m, n, n, T(1), d.data(), n, gi.data(), n, T(1), s.r.data(), n);
            }
            return s;
        }

        template <class T>
        inline dense_matrix<T> wudi_adam(const wudi_system<T>& s, std::size_t steps, double lr)
        {
            const std::size_t m = s.sum.shape()[0], n = s.sum.shape()[1], size = m * n;
            const double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
            dense_matrix<T> tau = s.sum;
            std::vector<T> grad(size), m1(size, T(0)), m2(size, T(0));
            double power1 = 1.0, power2 = 1.0;
            for (std::size_t step = 1; step <= steps; ++step)
            {
                // grad = 2 (tau G - R)
                std::copy(s.r.begin(), s.r.end(), grad.begin());
                gemm<T>(false, false, m, n, n, T(2), tau.data(), n, s.g.data(), n, T(-2), grad.data(), n);
                power1 *= beta1;
                power2 *= beta2;
                // torch.optim.Adam's step: step size lr / (1 - beta1^t), denominator sqrt(v) / sqrt(1 - beta2^t) + eps
                const T step_size = static_cast<T>(lr / (1.0 - power1));
                const T correction2 = static_cast<T>(std::sqrt(1.0 - power2));
                const T b1 = static_cast<T>(beta1), b2 = static_cast<T>(beta2), e = static_cast<T>(eps);
                T* p = tau.data();
                for (std::size_t j = 0; j < size; ++j)
                {
                    const T g = grad[j];
                    m1[j] = b1 * m1[j] + (T(1) - b1) * g;
                    m2[j] = b2 * m2[j] + (T(1) - b2) * g * g;
                    p[j] -= step_size * m1[j] / (std::sqrt(m2[j]) / correction2 + e);
                }
            }
            return tau;
        }

        template <class T>
        inline dense_matrix<T> wudi_closed_form(const wudi_system<T>& s, const std::string& tensor)
        {
            const std::size_t m = s.r.shape()[0], n = s.r.shape()[1];
            const T tiny = static_cast<T>(n) * std::numeric_limits<T>::epsilon();
            T largest = T(0);
            for (std::size_t i = 0; i < n; ++i)
            {
                largest = std::max(largest, s.g(i, i));
            }
            dense_matrix<T> x = s.r;
            if (!(largest > T(0)))
            {
                std::fill(x.begin(), x.end(), T(0));  // every task vector is zero
                return x;
            }
            dense_matrix<T> factor = s.g;
            const blas_int info = cholesky<T>(n, factor.data());
            bool regular = info == 0;
            for (std::size_t i = 0; regular && i < n; ++i)
            {
                // factor(i, i)^2 is the i-th pivot (a Schur complement), at least G's smallest eigenvalue
                regular = factor(i, i) * factor(i, i) > tiny * largest;
            }
            if (regular)
            {
                // G is symmetric: tau G = R is G tau^T = R^T, i.e. the row-major [m, n] buffer as n x m column-major right-hand sides.
                cholesky_solve<T>(n, m, factor.data(), x.data(), tensor);
                return x;
            }
            // Minimum-norm solution R G^+ = R V diag(1/s) U^T over the singular values kept.
            svd_result<T> f = svd<T>(s.g, tensor);
            const std::size_t k = f.rank();
            std::size_t kept = 0;
            while (kept < k && f.s(kept) > tiny * f.s(0))
            {
                ++kept;
            }
            auto rv = uninitialized_matrix<T>(m, kept);  // R V_kept diag(1/s)
            gemm<T>(false, true, m, kept, n, T(1), s.r.data(), n, f.vt.data(), n, T(0), rv.data(), kept);
            for (std::size_t i = 0; i < m; ++i)
            {
                for (std::size_t j = 0; j < kept; ++j)
                {
                    rv(i, j) /= f.s(j);
                }
            }
            gemm<T>(false, true, m, n, kept, T(1), rv.data(), kept, f.u.data(), k, T(0), x.data(), n);
            return x;
        }

        template <class T>
        inline double wudi_loss(const dense_matrix<T>& tau, const std::vector<dense_matrix<T>>& tasks)
        {
            const std::size_t m = tau.shape()[0], n = tau.shape()[1];
            double loss = 0.0;
            std::vector<double> diff(m * n);
            for (const auto& d : tasks)
            {
                const double norm2 = squared_norm(d.data(), d.size());
                if (!(norm2 > 0.0))
                {
                    continue;
                }
                for (std::size_t j = 0; j < m * n; ++j)
                {
                    diff[j] = static_cast<double>(tau.data()[j]) - static_cast<double>(d.data()[j]);
                }
                // ||diff d^T||^2: rows a of diff against rows b of d
                for (std::size_t a = 0; a < m; ++a)
                {
                    for (std::size_t b = 0; b < m; ++b)
                    {
                        double dot = 0.0;
                        for (std::size_t j = 0; j < n; ++j)
                        {
                            dot += diff[a * n + j] * static_cast<double>(d(b, j));
                        }
                        loss += dot * dot / norm2;
                    }
                }
            }
            return loss;
        }
    }

    inline any_expression wudi(const expression_list<input_node>& models, const input_node& base, const wudi_options& options)
    {
        if (!(options.lr > 0.0) || !std::isfinite(options.lr))
        {
            throw parameter_error(base.name(), "lr", "must be finite and positive, got " + std::to_string(options.lr));
        }
        return detail::task_matrix_merge(models, base, 1.0, options.precision, "WUDI",
                                         [models, base, options](auto tag)
                                         {
                                             using T = decltype(tag);
                                             const detail::wudi_system<T> s = detail::wudi_build_system<T>(models, base);
                                             return options.solver == wudi_solver::adam ? detail::wudi_adam(s, options.iter_num, options.lr)
                                                                                        : detail::wudi_closed_form(s, base.name());
                                         });
    }

    template <class T>
    method_info wudi_method()
    {
        const auto options = option_set<wudi_options>()
                                 .choice(&wudi_options::solver, "solver", "adam (the reference's loop) or closed_form (the minimizer)",
                                         {{"adam", wudi_solver::adam}, {"closed_form", wudi_solver::closed_form}})
                                 .global(&wudi_options::iter_num, "iter_num", "Adam steps")
                                 .global(&wudi_options::lr, "lr", "Adam's learning rate")
                                 .choice(&wudi_options::precision, "precision", "float32 or float64 arithmetic", detail::precision_choices());
        return xmerge::make_method("wudi", "data-free merge minimizing each task vector's interference with the others (WUDI)", true, options,
                                   [](const method_inputs& in, const wudi_options& o) -> any_expression { return xmerge::wudi(in.models, *in.base, o); });
    }
}

#endif
