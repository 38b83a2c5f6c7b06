/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LINALG_TSV_M_HPP
#define XMERGE_LINALG_TSV_M_HPP

#include <algorithm>
#include <cstddef>
#include <string>
#include <utility>

#include "../methods/options.hpp"
#include "../methods/registry.hpp"
#include "../ops/any.hpp"
#include "../ops/list.hpp"
#include "dense.hpp"
#include "svd.hpp"
#include "task_matrix.hpp"

namespace xmerge
{
    /// Parameters of TSV-M.
    struct tsv_m_options
    {
        /// Scale of the merged task vector.
        double alpha = 1.0;
        linalg_precision precision = linalg_precision::float32;
    };

    /**
     * Task singular vectors merge (TSV-M) for one tensor.
     *
     * For a 2-D tensor with T task vectors d_i = x_i - base [m, n]: each d_i
     * keeps its top k = floor(min(m, n) / T) singular triplets; the kept left
     * vectors are placed side by side in U [m, T k], the singular values in
     * s [T k] and the right vectors in Vt [T k, n]; U and Vt are replaced by
     * their polar factors (which decorrelates the tasks' subspaces), and
     *
     *     result = base + alpha * polar(U) diag(s) polar(Vt).
     *
     * Other tensors get base + alpha * mean_i d_i. With one model the result
     * is base + alpha * d_0.
     *
     * Cost: T SVDs of m x n, one of m x T k and one of T k x n (T + 2 gesdd
     * calls) and two products; memory: the concatenated factors (T k (m + n)
     * values of the working precision) plus the buffers of one SVD at a time.
     */
    inline any_expression tsv_m(const expression_list<input_node>& models, const input_node& base, const tsv_m_options& options = {});

    /// `tsv_m` for the method registry: `alpha` (1.0), `precision` ("float32"); needs a base.
    template <class = void>
    method_info tsv_m_method();

    namespace detail
    {
        /// The merged TSV-M task vector of 2-D inputs.
        template <class T>
        dense_matrix<T> tsv_m_matrix(const expression_list<input_node>& models, const input_node& base);

        /// Copies the leading `count` singular triplets of f into column / row block `first` of u, s, vt.
        template <class T>
        void place_triplets(const svd_result<T>& f, std::size_t count, std::size_t first, dense_matrix<T>& u, T* s, dense_matrix<T>& vt);

        /// polar(u) diag(s) polar(vt).
        template <class T>
        dense_matrix<T> orthogonalized_product(dense_matrix<T> u, const T* s, dense_matrix<T> vt, const std::string& tensor);
    }

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        template <class T>
        inline void place_triplets(const svd_result<T>& f, std::size_t count, std::size_t first, dense_matrix<T>& u, T* s, dense_matrix<T>& vt)
        {
            const std::size_t m = u.shape()[0], width = u.shape()[1], n = vt.shape()[1], k = f.rank();
            for (std::size_t i = 0; i < m; ++i)
            {
                std::copy_n(f.u.data() + i * k, count, u.data() + i * width + first);
            }
            std::copy_n(f.s.data(), count, s + first);
            std::copy_n(f.vt.data(), count * n, vt.data() + first * n);
        }

        template <class T>
        inline dense_matrix<T> orthogonalized_product(dense_matrix<T> u, const T* s, dense_matrix<T> vt, const std::string& tensor)
        {
            const std::size_t width = u.shape()[1];
            dense_matrix<T> pu = polar_factor<T>(std::move(u), tensor);
            const dense_matrix<T> pv = polar_factor<T>(std::move(vt), tensor);
            for (std::size_t i = 0; i < pu.shape()[0]; ++i)
            {
                for (std::size_t j = 0; j < width; ++j)
                {
                    pu(i, j) *= s[j];
                }
            }
            return matmul(pu, pv);
        }

        template <class T>
        inline dense_matrix<T> tsv_m_matrix(const expression_list<input_node>& models, const input_node& base)
        {
            const std::size_t m = base.shape()[0], n = base.shape()[1], tasks = models.size();
            const std::size_t k = std::min(m, n) / tasks;
            auto u = uninitialized_matrix<T>(m, tasks * k);
            auto vt = uninitialized_matrix<T>(tasks * k, n);
            std::vector<T> s(tasks * k);
            for (std::size_t i = 0; i < tasks; ++i)
            {
                const svd_result<T> f = svd<T>(task_matrix<T>(models[i], base), models[i].name());
                place_triplets(f, k, i * k, u, s.data(), vt);
            }
            return orthogonalized_product(std::move(u), s.data(), std::move(vt), base.name());
        }
    }

    inline any_expression tsv_m(const expression_list<input_node>& models, const input_node& base, const tsv_m_options& options)
    {
        return detail::task_matrix_merge(models, base, options.alpha, options.precision, "TSV-M",
                                         [models, base](auto tag) { return detail::tsv_m_matrix<decltype(tag)>(models, base); });
    }

    template <class T>
    method_info tsv_m_method()
    {
        const auto options = option_set<tsv_m_options>()
                                 .global(&tsv_m_options::alpha, "alpha", "scale of the merged task vector")
                                 .choice(&tsv_m_options::precision, "precision", "float32 or float64 SVDs", detail::precision_choices());
        return xmerge::make_method("tsv_m", "task singular vectors: each task's top singular vectors, decorrelated across tasks", true, options,
                           [](const method_inputs& in, const tsv_m_options& o) -> any_expression { return xmerge::tsv_m(in.models, *in.base, o); });
    }
}

#endif
