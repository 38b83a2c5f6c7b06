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
#include "options.hpp"
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
    template <class = void>
    method_info task_arithmetic_method();

    namespace detail
    {
        struct task_arithmetic_parameters
        {
            std::vector<double> weight;
            double lambda = 1.0;
            bool normalize = false;
        };

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
        auto mixed = xmerge::weighted_sum(xmerge::task_vectors(models, base), weights);
        const double divisor = options.normalize ? detail::weight_divisor(weights) : 1.0;
        return xmerge::map(detail::add_scaled_fn{}, base, std::move(mixed), options.lambda / divisor);
    }

    template <class T>
    method_info task_arithmetic_method()
    {
        using P = detail::task_arithmetic_parameters;
        const auto options = option_set<P>()
                                 .per_model(&P::weight, "weight", "weight of each task vector (negative to subtract)")
                                 .global(&P::lambda, "lambda", "scale of the merged task vector")
                                 .global(&P::normalize, "normalize", "divide by the sum of the weights");
        return xmerge::make_method("task_arithmetic", "base plus the weighted sum of task vectors", true, options,
                           [](const method_inputs& in, const P& p) -> any_expression
                           { return xmerge::task_arithmetic(in.models, *in.base, p.weight, {p.lambda, p.normalize}); });
    }
}

#endif
