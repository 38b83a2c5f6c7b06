/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LINALG_TSV_C_HPP
#define XMERGE_LINALG_TSV_C_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../methods/options.hpp"
#include "../methods/registry.hpp"
#include "../methods/per_task.hpp"
#include "../ops/any.hpp"
#include "../ops/computed.hpp"
#include "../ops/list.hpp"
#include "dense.hpp"
#include "low_rank.hpp"
#include "svd.hpp"
#include "task_matrix.hpp"

namespace xmerge
{
    /// Parameters of TSV-C.
    struct tsv_c_options
    {
        /// Fraction of each task vector's singular triplets kept; unset: 1 / K (the paper's budget of one model).
        std::optional<double> sv_reduction;
        linalg_precision precision = linalg_precision::float32;
    };

    /**
     * Task singular vectors, compression (TSV-C; Gargiulo et al., "Task
     * Singular Vectors: Reducing Task Interference in Model Merging", CVPR
     * 2025): each task keeps a low-rank approximation of its own task
     * vector. For a 2-D tau_t [m, n] with thin SVD U diag(s) V^T,
     *
     *     k = floor(min(m, n) * sv_reduction),   model_t = base + U_k diag(s_k) V_k^T;
     *
     * other tensors are kept as they are (model_t = x_t). One model per
     * task. Cost per task and 2-D tensor: one gesdd of m x n and one
     * product m x k x n; memory: the task vector and its factors.
     */
    inline any_expression tsv_c_model(const expression_list<input_node>& models, const input_node& base, std::size_t task, const tsv_c_options& options = {});

    /// Every task's model_t (see tsv_c_model), in task order; evaluate them together with evaluate_all().
    inline std::vector<any_expression> tsv_c_models(const expression_list<input_node>& models, const input_node& base, const tsv_c_options& options = {});

    /// The rank TSV-C keeps of a 2-D tensor of shape [m, n] for K tasks.
    inline std::size_t tsv_c_rank(std::size_t m, std::size_t n, std::size_t tasks, const tsv_c_options& options, const std::string& tensor = {});

    /**
     * `tsv_c` for the method registry: optional `sv_reduction` (1 / K when
     * unset), `precision`, optional `task`. build() gives task `task`'s
     * model; build_outputs() gives `model.<t>` for every task. Needs a base.
     */
    template <class = void>
    method_info tsv_c_method();

    /********************
     * Implementation   *
     ********************/

    inline std::size_t tsv_c_rank(std::size_t m, std::size_t n, std::size_t tasks, const tsv_c_options& options, const std::string& tensor)
    {
        const double f = options.sv_reduction ? *options.sv_reduction : 1.0 / static_cast<double>(std::max<std::size_t>(tasks, 1));
        if (!(f >= 0.0 && f <= 1.0))
        {
            throw parameter_error(tensor, "sv_reduction", "must be a fraction in [0, 1], got " + std::to_string(f));
        }
        return static_cast<std::size_t>(static_cast<double>(std::min(m, n)) * f);
    }

    inline any_expression tsv_c_model(const expression_list<input_node>& models, const input_node& base, std::size_t task, const tsv_c_options& options)
    {
        detail::check_task_inputs(models, base, "TSV-C");
        const std::string tensor = base.name();
        if (task >= models.size())
        {
            throw parameter_error(tensor, "task", "is " + std::to_string(task) + " but there are " + std::to_string(models.size()) + " models");
        }
        const shape_type& shape = base.shape();
        const std::size_t rank = tsv_c_rank(shape.size() == 2 ? shape[0] : 0, shape.size() == 2 ? shape[1] : 0, models.size(), options, tensor);
        if (shape.size() != 2)
        {
            return models[task];
        }
        const input_node x = models[task];
        return xmerge::computed(shape, tensor,
                                [x, base, rank, options, tensor](float* out)
                                {
                                    detail::with_precision(options.precision,
                                                           [&](auto tag)
                                                           {
                                                               using T = decltype(tag);
                                                               const low_rank_factors<T> f = truncated_svd<T>(detail::task_matrix<T>(x, base), truncation::rank(rank), x.name());
                                                               const dense_matrix<T> product = detail::matmul(f.left, f.right);
                                                               detail::store_base_plus<T>(base.tensor(), T(1), product.data(), out);
                                                           });
                                },
                                {base.tensor(), x.tensor()});
    }

    inline std::vector<any_expression> tsv_c_models(const expression_list<input_node>& models, const input_node& base, const tsv_c_options& options)
    {
        std::vector<any_expression> out;
        for (std::size_t t = 0; t < models.size(); ++t)
        {
            out.push_back(xmerge::tsv_c_model(models, base, t, options));
        }
        return out;
    }

    namespace detail
    {
        struct tsv_c_parameters
        {
            std::optional<double> sv_reduction;
            linalg_precision precision = linalg_precision::float32;
            std::optional<std::size_t> task;

            tsv_c_options compression() const { return {sv_reduction, precision}; }
        };
    }

    template <class T>
    method_info tsv_c_method()
    {
        using P = detail::tsv_c_parameters;
        const auto options = option_set<P>()
                                 .optional(&P::sv_reduction, "sv_reduction", "fraction of each task vector's singular values kept (1 / K when unset)")
                                 .choice(&P::precision, "precision", "float32 or float64 SVDs", detail::precision_choices())
                                 .optional(&P::task, "task", "index of the task whose model build() gives");
        return xmerge::make_method_with_outputs(
            "tsv_c", "per-task low-rank task vectors (TSV compression; one model per task)", true, options,
            [](const method_inputs& in, const P& p) -> any_expression
            { return xmerge::tsv_c_model(in.models, *in.base, detail::selected_task(p.task, in.models.size(), in.tensor, "tsv_c"), p.compression()); },
            [](const method_inputs& in, const P& p)
            {
                std::vector<method_output> out;
                for (std::size_t t = 0; t < in.models.size(); ++t)
                {
                    out.push_back({"model." + std::to_string(t), xmerge::tsv_c_model(in.models, *in.base, t, p.compression())});
                }
                return out;
            });
    }
}

#endif
