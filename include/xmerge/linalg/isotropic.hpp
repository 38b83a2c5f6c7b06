/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LINALG_ISOTROPIC_HPP
#define XMERGE_LINALG_ISOTROPIC_HPP

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../methods/options.hpp"
#include "../methods/registry.hpp"
#include "../ops/any.hpp"
#include "../ops/list.hpp"
#include "dense.hpp"
#include "projection.hpp"
#include "svd.hpp"
#include "task_matrix.hpp"
#include "tsv_m.hpp"

namespace xmerge
{
    /// Parameters of Iso-C.
    struct iso_c_options
    {
        /// Scale of the merged task vector.
        double alpha = 1.0;
        linalg_precision precision = linalg_precision::float32;
    };

    /// Parameters of Iso-CTS.
    struct iso_cts_options
    {
        /// Share of min(m, n) given to the common subspace, in [0, 1].
        double common_space_fraction = 0.8;
        /// Scale of the merged task vector.
        double alpha = 1.0;
        linalg_precision precision = linalg_precision::float32;
    };

    /**
     * Isotropic merging in the common subspace (Iso-C) for one tensor.
     *
     * For a 2-D tensor: the sum of the task vectors S = sum_i d_i = U diag(s) Vt
     * gets a flat spectrum, every singular value replaced by their mean:
     *
     *     result = base + alpha * mean(s) U Vt.
     *
     * Other tensors get base + alpha * mean_i d_i. Cost: one SVD of m x n and
     * one product m x min(m, n) x n.
     */
    inline any_expression iso_c(const expression_list<input_node>& models, const input_node& base, const iso_c_options& options = {});

    /**
     * Isotropic merging in common and task-specific subspaces (Iso-CTS) for
     * one tensor.
     *
     * For a 2-D tensor [m, n] with T task vectors and r = min(m, n): the top c
     * singular triplets of S = sum_i d_i span the common subspace, with
     * c = r - T * round((r - floor(r * fraction)) / T) (so the rest divides
     * evenly among the tasks; halves round to even, and c is raised by T when
     * rounding would make it negative). Each task then contributes the top
     * (r - c) / T triplets of d_i - U_c U_c^T d_i, its part outside the
     * common column space. The blocks (tasks first, common last) are put side
     * by side, U and Vt are replaced by their polar factors and every
     * singular value by their mean s_bar:
     *
     *     result = base + alpha * s_bar polar(U) polar(Vt).
     *
     * With fraction 1 this is Iso-C. Other tensors get base + alpha * mean_i d_i.
     * Cost: T + 3 SVDs (S, the T projected task vectors, and the two
     * concatenated factors, all r wide) and T projections.
     */
    inline any_expression iso_cts(const expression_list<input_node>& models, const input_node& base, const iso_cts_options& options = {});

    /// `iso_c` for the method registry: `alpha` (1.0), `precision` ("float32"); needs a base.
    template <class = void>
    method_info iso_c_method();

    /// `iso_cts` for the method registry: `common_space_fraction` (0.8), `alpha` (1.0), `precision`; needs a base.
    template <class = void>
    method_info iso_cts_method();

    namespace detail
    {
        /// sum_i (x_i - base) as a matrix of T.
        template <class T>
        dense_matrix<T> task_matrix_sum(const expression_list<input_node>& models, const input_node& base);

        /// The common-subspace size c of Iso-CTS for r = min(m, n) and T tasks.
        inline std::size_t iso_cts_common_size(std::size_t r, std::size_t tasks, double fraction);

        template <class T>
        dense_matrix<T> iso_c_matrix(const expression_list<input_node>& models, const input_node& base);

        template <class T>
        dense_matrix<T> iso_cts_matrix(const expression_list<input_node>& models, const input_node& base, double fraction);
    }

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        template <class T>
        inline dense_matrix<T> task_matrix_sum(const expression_list<input_node>& models, const input_node& base)
        {
            dense_matrix<T> sum(std::array<std::size_t, 2>{base.shape()[0], base.shape()[1]}, T(0));
            for (const auto& x : models)
            {
                accumulate_difference<T>(x.tensor(), base.tensor(), T(1), sum.data());
            }
            check_finite_input(sum.data(), sum.size(), models[0].name());
            return sum;
        }

        inline std::size_t iso_cts_common_size(std::size_t r, std::size_t tasks, double fraction)
        {
            const auto first = static_cast<std::size_t>(static_cast<double>(r) * fraction);
            // std::nearbyint rounds halves to even under the default rounding mode.
            auto task_total = static_cast<std::size_t>(std::nearbyint(static_cast<double>(r - first) / static_cast<double>(tasks))) * tasks;
            while (task_total > r)
            {
                task_total -= tasks;
            }
            return r - task_total;
        }

        template <class T>
        inline dense_matrix<T> iso_c_matrix(const expression_list<input_node>& models, const input_node& base)
        {
            const svd_result<T> f = svd<T>(task_matrix_sum<T>(models, base), base.name());
            const std::size_t m = f.u.shape()[0], n = f.vt.shape()[1], r = f.rank();
            double mean = 0.0;
            for (std::size_t j = 0; j < r; ++j)
            {
                mean += static_cast<double>(f.s(j));
            }
            mean = r == 0 ? 0.0 : mean / static_cast<double>(r);
            auto out = uninitialized_matrix<T>(m, n);
            gemm<T>(false, false, m, n, r, static_cast<T>(mean), f.u.data(), r, f.vt.data(), n, T(0), out.data(), n);
            return out;
        }

        template <class T>
        inline dense_matrix<T> iso_cts_matrix(const expression_list<input_node>& models, const input_node& base, double fraction)
        {
            const std::size_t m = base.shape()[0], n = base.shape()[1], r = std::min(m, n), tasks = models.size();
            const std::size_t common = iso_cts_common_size(r, tasks, fraction);
            const std::size_t per_task = (r - common) / tasks;

            const svd_result<T> total = svd<T>(task_matrix_sum<T>(models, base), base.name());
            auto u = uninitialized_matrix<T>(m, r);
            auto vt = uninitialized_matrix<T>(r, n);
            std::vector<T> s(r);
            place_triplets(total, common, tasks * per_task, u, s.data(), vt);

            // Each task's part outside the common column space.
            const auto outside = basic_projection<T>::from_svd(total, rank_rule::fixed(common), projection_kind::left_complement);
            for (std::size_t i = 0; i < tasks; ++i)
            {
                dense_matrix<T> d = task_matrix<T>(models[i], base);
                outside.apply(d.data(), d.data(), m, n, models[i].name());
                const svd_result<T> f = svd<T>(std::move(d), models[i].name());
                place_triplets(f, per_task, i * per_task, u, s.data(), vt);
            }

            double mean = 0.0;
            for (T v : s)
            {
                mean += static_cast<double>(v);
            }
            mean = r == 0 ? 0.0 : mean / static_cast<double>(r);
            std::fill(s.begin(), s.end(), static_cast<T>(mean));
            return orthogonalized_product(std::move(u), s.data(), std::move(vt), base.name());
        }
    }

    inline any_expression iso_c(const expression_list<input_node>& models, const input_node& base, const iso_c_options& options)
    {
        return detail::task_matrix_merge(models, base, options.alpha, options.precision, "Iso-C",
                                         [models, base](auto tag) { return detail::iso_c_matrix<decltype(tag)>(models, base); });
    }

    inline any_expression iso_cts(const expression_list<input_node>& models, const input_node& base, const iso_cts_options& options)
    {
        const double fraction = options.common_space_fraction;
        if (!(fraction >= 0.0 && fraction <= 1.0))
        {
            throw parameter_error(base.name(), "common_space_fraction", "must be in [0, 1], got " + std::to_string(fraction));
        }
        return detail::task_matrix_merge(models, base, options.alpha, options.precision, "Iso-CTS",
                                         [models, base, fraction](auto tag) { return detail::iso_cts_matrix<decltype(tag)>(models, base, fraction); });
    }

    template <class T>
    method_info iso_c_method()
    {
        const auto options = option_set<iso_c_options>()
                                 .global(&iso_c_options::alpha, "alpha", "scale of the merged task vector")
                                 .choice(&iso_c_options::precision, "precision", "float32 or float64 SVDs", detail::precision_choices());
        return xmerge::make_method("iso_c", "isotropic merge: the summed task vector with a flat singular spectrum", true, options,
                           [](const method_inputs& in, const iso_c_options& o) -> any_expression { return xmerge::iso_c(in.models, *in.base, o); });
    }

    template <class T>
    method_info iso_cts_method()
    {
        const auto options = option_set<iso_cts_options>()
                                 .global(&iso_cts_options::common_space_fraction, "common_space_fraction", "share of the rank given to the common subspace")
                                 .global(&iso_cts_options::alpha, "alpha", "scale of the merged task vector")
                                 .choice(&iso_cts_options::precision, "precision", "float32 or float64 SVDs", detail::precision_choices());
        return xmerge::make_method("iso_cts", "isotropic merge in a common subspace plus task-specific subspaces", true, options,
                           [](const method_inputs& in, const iso_cts_options& o) -> any_expression { return xmerge::iso_cts(in.models, *in.base, o); });
    }
}

#endif
