/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LINALG_OPCM_HPP
#define XMERGE_LINALG_OPCM_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../methods/options.hpp"
#include "../methods/registry.hpp"
#include "../ops/any.hpp"
#include "../ops/arithmetic.hpp"
#include "../ops/computed.hpp"
#include "../ops/input.hpp"
#include "../ops/list.hpp"
#include "../ops/reduce.hpp"
#include "backend.hpp"
#include "dense.hpp"
#include "projection.hpp"
#include "svd.hpp"
#include "task_matrix.hpp"

namespace xmerge
{
    /// Parameters of continual merging by orthogonal projection.
    struct opcm_options
    {
        /// Share of the merged task vector's singular-value sum whose subspace is protected, in [0, 1].
        double alpha = 0.5;
        linalg_precision precision = linalg_precision::float32;
    };

    /**
     * Continual merging by orthogonal projection (OPCM): a merged model that
     * takes fine-tuned models one at a time, with memory that does not grow
     * with their number.
     *
     * The caller owns the merged model, as float32 buffers shaped like the
     * base tensors. The first add() copies the model. Each later model x,
     * with task vectors d = x - base and tau = merged - base (per tensor):
     *
     *  1. for a 2-D tensor, d loses what would interfere with tau: with the
     *     SVD tau = U diag(s) V^T and r = rank_rule::sum_fraction(alpha) on s,
     *     P = U^T d V gets its top-left r x r block and its diagonal zeroed
     *     and d becomes U P V^T (block removal plus the paired terms
     *     u_j^T d v_j for j >= r); other tensors keep d;
     *  2. tau <- lambda * tau + d, where lambda undoes the previous rescaling;
     *  3. the whole merged task vector is rescaled to the running mean of the
     *     models' task-vector norms n_bar (norms over all tensors):
     *     lambda = ||tau|| / n_bar and tau <- tau / lambda.
     *
     * Memory: the merged buffers plus, while one tensor is processed, its
     * SVD and a few matrices of its size. Each add() reads the model twice
     * (its norm, then the merge) and the base and merged buffers a few times
     * in element-wise passes, which cost little next to the SVDs.
     * A merged task vector that is zero protects nothing (its singular
     * vectors would be arbitrary), so the next task vector is added whole.
     */
    class opcm_merger
    {
    public:
        /**
         * `base`: the pretrained tensors; `merged`: float32 buffers of the same
         * shapes receiving the merged model; `evaluation`: threads for the
         * element-wise passes (BLAS and LAPACK use their own). Throws on count,
         * shape or dtype mismatches and on alpha outside [0, 1].
         */
        opcm_merger(std::vector<const_tensor_ref> base, std::vector<tensor_ref> merged, opcm_options options = {}, eval_options evaluation = {});

        /**
         * Merges the next model (one tensor per base tensor, same order and
         * shapes, any dtype). Inputs are checked (shapes, finite task vectors)
         * before the merged model is touched.
         */
        void add(const std::vector<const_tensor_ref>& model);

        /// Models merged so far.
        std::size_t models() const noexcept { return m_models; }
        /// Running mean of the task-vector norms of the models merged so far.
        double mean_task_vector_norm() const noexcept { return m_models == 0 ? 0.0 : m_norm_sum / static_cast<double>(m_models); }
        /// The last rescaling factor lambda (1 after the first model).
        double lambda() const noexcept { return m_lambda; }
        const opcm_options& options() const noexcept { return m_options; }

    private:
        void check(const std::vector<const_tensor_ref>& model) const;

        std::vector<const_tensor_ref> m_base;
        std::vector<tensor_ref> m_merged;
        opcm_options m_options;
        eval_options m_evaluation;
        std::size_t m_models = 0;
        double m_norm_sum = 0.0;
        double m_lambda = 1.0;
    };

    /**
     * OPCM over the models of one tensor, in list order, as a lazy
     * expression: the opcm_merger procedure with the norms of this tensor
     * alone, which is the paper's procedure for a one-tensor model. To
     * rescale by whole-model norms, run an opcm_merger over all tensors.
     */
    inline any_expression opcm(const expression_list<input_node>& models, const input_node& base, const opcm_options& options = {});

    /// `opcm` for the method registry: `alpha` (0.5), `precision` ("float32"); needs a base.
    template <class = void>
    method_info opcm_method();

    namespace detail
    {
        /**
         * d (a 2-D [m, n] task vector) minus what it shares with tau: the block
         * U_r U_r^T d V_r V_r^T and the paired terms (u_j^T d v_j) u_j v_j^T
         * for r <= j < min(m, n), with tau = U diag(s) V^T.
         */
        template <class T>
        void opcm_project(const dense_matrix<T>& tau, dense_matrix<T>& d, double alpha, const std::string& tensor);

        /// merged <- base + lambda * (merged - base) + projected (x - base); returns ||new task vector||^2.
        template <class T>
        double opcm_step(const const_tensor_ref& base, const tensor_ref& merged, const const_tensor_ref& x, double lambda, double alpha);
    }

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        template <class T>
        inline void opcm_project(const dense_matrix<T>& tau, dense_matrix<T>& d, double alpha, const std::string& tensor)
        {
            const std::size_t m = d.shape()[0], n = d.shape()[1];
            const svd_result<T> f = svd<T>(dense_matrix<T>(tau), tensor);
            const std::size_t k = f.rank();
            if (k == 0 || !(f.s(0) > T(0)))
            {
                return;
            }
            const auto rule = rank_rule::sum_fraction(alpha);
            const std::size_t r = rule.select(f.s.data(), k);
            basic_projection<T>::from_svd(f, rule, projection_kind::block_removal).apply(d.data(), d.data(), m, n, tensor);
            if (r == k)
            {
                return;
            }
            // Paired terms j >= r: p_j = u_j^T d v_j, then d -= U_j diag(p) V_j^T.
            const std::size_t w = k - r;
            const T* u_tail = f.u.data() + r;       // [m, w] with row stride k
            const T* vt_tail = f.vt.data() + r * n;  // [w, n]
            auto dv = uninitialized_matrix<T>(m, w);
            gemm<T>(false, true, m, w, n, T(1), d.data(), n, vt_tail, n, T(0), dv.data(), w);
            std::vector<T> p(w, T(0));
            for (std::size_t i = 0; i < m; ++i)
            {
                for (std::size_t j = 0; j < w; ++j)
                {
                    p[j] += u_tail[i * k + j] * dv(i, j);
                }
            }
            auto scaled = uninitialized_matrix<T>(m, w);
            for (std::size_t i = 0; i < m; ++i)
            {
                for (std::size_t j = 0; j < w; ++j)
                {
                    scaled(i, j) = u_tail[i * k + j] * p[j];
                }
            }
            gemm<T>(false, false, m, n, w, T(-1), scaled.data(), w, vt_tail, n, T(1), d.data(), n);
        }

        template <class T>
        inline double opcm_step(const const_tensor_ref& base, const tensor_ref& merged, const const_tensor_ref& x, double lambda, double alpha)
        {
            const auto& shape = base.shape();
            const bool matrix = shape.size() == 2;
            const std::size_t rows = matrix ? shape[0] : 1, cols = matrix ? shape[1] : base.size();
            dense_matrix<T> tau = difference_matrix<T>(merged, base, rows, cols);
            dense_matrix<T> d = difference_matrix<T>(x, base, rows, cols);
            if (matrix)
            {
                opcm_project(tau, d, alpha, base.name());
            }
            const T l = static_cast<T>(lambda);
            for (std::size_t i = 0; i < tau.size(); ++i)
            {
                tau.data()[i] = l * tau.data()[i] + d.data()[i];
            }
            store_base_plus<T>(base, T(1), tau.data(), static_cast<float*>(merged.data()));
            return squared_norm(tau.data(), tau.size());
        }
    }

    inline opcm_merger::opcm_merger(std::vector<const_tensor_ref> base, std::vector<tensor_ref> merged, opcm_options options, eval_options evaluation)
        : m_base(std::move(base))
        , m_merged(std::move(merged))
        , m_options(options)
        , m_evaluation(evaluation)
    {
        if (!(options.alpha >= 0.0 && options.alpha <= 1.0))
        {
            throw parameter_error("", "alpha", "must be in [0, 1], got " + std::to_string(options.alpha));
        }
        if (m_merged.size() != m_base.size())
        {
            throw parameter_error("", "merged", "expected " + std::to_string(m_base.size()) + " buffers (one per base tensor), got " + std::to_string(m_merged.size()));
        }
        for (std::size_t i = 0; i < m_base.size(); ++i)
        {
            if (m_base[i].name().empty())
            {
                m_base[i] = m_base[i].with_name("base." + std::to_string(i));
            }
            if (m_merged[i].shape() != m_base[i].shape())
            {
                throw shape_error(m_base[i].name(), "merged", "merged buffer has shape " + xmerge::to_string(m_merged[i].shape()) + " but the base tensor has shape "
                                                                  + xmerge::to_string(m_base[i].shape()));
            }
            if (m_merged[i].type() != dtype::float32)
            {
                throw layout_error(m_base[i].name(), "merged", std::string("merged buffers must be float32 (they carry the running merge), got ") + name_of(m_merged[i].type()));
            }
            if (xmerge::overlaps(m_merged[i], m_base[i]))
            {
                throw layout_error(m_base[i].name(), "merged", "merged buffer overlaps the base tensor");
            }
        }
    }

    inline void opcm_merger::check(const std::vector<const_tensor_ref>& model) const
    {
        if (model.size() != m_base.size())
        {
            throw parameter_error("", "model", "expected " + std::to_string(m_base.size()) + " tensors (one per base tensor), got " + std::to_string(model.size()));
        }
        for (std::size_t i = 0; i < model.size(); ++i)
        {
            if (model[i].shape() != m_base[i].shape())
            {
                throw shape_error(m_base[i].name(), "model", "tensor " + std::to_string(i) + " of the model has shape " + xmerge::to_string(model[i].shape())
                                                                 + " but the base tensor has shape " + xmerge::to_string(m_base[i].shape()));
            }
        }
    }

    inline void opcm_merger::add(const std::vector<const_tensor_ref>& model)
    {
        check(model);
        // The task vector's norm over the whole model, which also rejects inf and NaN before anything is written.
        double squared = 0.0;
        for (std::size_t i = 0; i < model.size(); ++i)
        {
            const double s = xmerge::value_of(sum_squares(xmerge::input(model[i]) - xmerge::input(m_base[i])), m_evaluation);
            if (!std::isfinite(s))
            {
                throw parameter_error(m_base[i].name(), "model", "task vector of model " + std::to_string(m_models) + " is not finite");
            }
            squared += s;
        }
        const double norm = std::sqrt(squared);

        if (m_models == 0)
        {
            std::vector<input_node> copies;
            for (const auto& t : model)
            {
                copies.emplace_back(t);
            }
            evaluate_all(copies, m_merged, m_evaluation);
            m_models = 1;
            m_norm_sum = norm;
            m_lambda = 1.0;
            return;
        }

        double merged_squared = 0.0;
        detail::with_precision(m_options.precision,
                               [&](auto tag)
                               {
                                   using T = decltype(tag);
                                   for (std::size_t i = 0; i < model.size(); ++i)
                                   {
                                       merged_squared += detail::opcm_step<T>(m_base[i], m_merged[i], model[i], m_lambda, m_options.alpha);
                                   }
                               });
        m_norm_sum += norm;
        ++m_models;
        const double target = mean_task_vector_norm();
        const double merged_norm = std::sqrt(merged_squared);
        if (!(merged_norm > 0.0))
        {
            m_lambda = 1.0;  // everything is zero: nothing to rescale
            return;
        }
        m_lambda = merged_norm / target;
        const double scale = target / merged_norm;
        using rescale_node = decltype(xmerge::input(m_base[0]) + scale * (xmerge::input(m_merged[0]) - xmerge::input(m_base[0])));
        std::vector<rescale_node> rescaled;
        rescaled.reserve(m_base.size());
        for (std::size_t i = 0; i < m_base.size(); ++i)
        {
            rescaled.push_back(xmerge::input(m_base[i]) + scale * (xmerge::input(m_merged[i]) - xmerge::input(m_base[i])));
        }
        evaluate_all(rescaled, m_merged, m_evaluation);
    }

    inline any_expression opcm(const expression_list<input_node>& models, const input_node& base, const opcm_options& options)
    {
        detail::check_task_inputs(models, base, "OPCM");
        const std::string tensor = base.name();
        if (!(options.alpha >= 0.0 && options.alpha <= 1.0))
        {
            throw parameter_error(tensor, "alpha", "must be in [0, 1], got " + std::to_string(options.alpha));
        }
        std::vector<const_tensor_ref> reads{base.tensor()};
        detail::append_reads(reads, models);
        const shape_type shape = base.shape();
        return xmerge::computed(shape, tensor,
                        [models, base, options, shape, tensor](float* out)
                        {
                            opcm_merger merger({base.tensor()}, {tensor_ref(out, dtype::float32, shape, tensor)}, options);
                            for (const auto& x : models)
                            {
                                merger.add({x.tensor()});
                            }
                        },
                        std::move(reads));
    }

    template <class T>
    method_info opcm_method()
    {
        const auto options = option_set<opcm_options>()
                                 .global(&opcm_options::alpha, "alpha", "share of the singular-value sum whose subspace is protected")
                                 .choice(&opcm_options::precision, "precision", "float32 or float64 SVDs", detail::precision_choices());
        return xmerge::make_method("opcm", "continual merging: each new task vector projected off the merged task vector's leading subspace, norm kept at the running mean",
                           true, options, [](const method_inputs& in, const opcm_options& o) -> any_expression { return xmerge::opcm(in.models, *in.base, o); });
    }
}

#endif
