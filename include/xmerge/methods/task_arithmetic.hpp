/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_TASK_ARITHMETIC_HPP
#define XMERGE_METHODS_TASK_ARITHMETIC_HPP

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../ops/arithmetic.hpp"
#include "../ops/list.hpp"
#include "../ops/task_vector.hpp"
#include "../ops/weighted_sum.hpp"
#include "../simd/batch.hpp"
#include "registry.hpp"

namespace xmerge
{
    /// Parameters of task_arithmetic (mergekit names and defaults).
    struct task_arithmetic_options
    {
        /// Scale of the merged task vector.
        double lambda = 1.0;
        /// Divide the weighted sum by sum_i w_i (by 1 when |sum| < 1e-8).
        bool normalize = false;
    };

    /**
     * Task arithmetic: base + lambda * sum_i w_i (x_i - base).
     *
     * A negative weight subtracts a task (task negation). Throws
     * parameter_error for an empty model list, a weight count that differs
     * from the model count, or a non-finite weight or lambda.
     */
    template <class E, class B>
    auto task_arithmetic(const expression_list<E>& models, const B& base, const std::vector<double>& weights, const task_arithmetic_options& options = {});

    /// `task_arithmetic` for the method registry: per-model `weight` (required),
    /// `lambda` (1), `normalize` (false); needs a base model.
    inline method_info task_arithmetic_method();

    namespace detail
    {
        /// mergekit's divisor for a normalized sum of weights: 1 where it is (nearly) zero.
        inline double weight_divisor(const std::vector<double>& weights)
        {
            double s = 0.0;
            for (double w : weights)
            {
                s += w;
            }
            return std::fabs(s) < 1e-8 ? 1.0 : s;
        }

        inline void check_finite(const std::string& tensor, const char* parameter, double v)
        {
            if (!std::isfinite(v))
            {
                throw parameter_error(tensor, parameter, "must be finite, got " + std::to_string(v));
            }
        }

        // base + s * delta in one rounding
        struct add_scaled_fn
        {
            template <class T>
            T operator()(const T& base, const T& delta, const T& s) const noexcept
            {
                return simd::fma(s, delta, base);
            }
        };
    }

    /********************
     * Implementation   *
     ********************/

    template <class E, class B>
    inline auto task_arithmetic(const expression_list<E>& models, const B& base, const std::vector<double>& weights, const task_arithmetic_options& options)
    {
        detail::check_finite(base.name(), "lambda", options.lambda);
        auto mixed = weighted_sum(task_vectors(models, base), weights);
        const double divisor = options.normalize ? detail::weight_divisor(weights) : 1.0;
        return map(detail::add_scaled_fn{}, base, std::move(mixed), options.lambda / divisor);
    }

    inline method_info task_arithmetic_method()
    {
        method_info m;
        m.name = "task_arithmetic";
        m.needs_base = true;
        m.summary = "base plus the weighted sum of task vectors";
        m.parameters = {{"weight", parameter_scope::per_model, std::nullopt, "weight of each task vector (negative to subtract)"},
                        {"lambda", parameter_scope::global, 1.0, "scale of the merged task vector"},
                        {"normalize", parameter_scope::global, false, "divide by the sum of the weights"}};
        m.build = [](const method_inputs& in, const parameters& p) -> any_expression
        {
            return task_arithmetic(in.models, *in.base, p.per_model("weight", in.models.size()), {p.number("lambda"), p.flag("normalize")});
        };
        return m;
    }
}

#endif
