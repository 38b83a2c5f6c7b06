/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_RAMPLUS_TL_HPP
#define XMERGE_METHODS_RAMPLUS_TL_HPP

#include <cmath>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../ops/any.hpp"
#include "../ops/arithmetic.hpp"
#include "../ops/list.hpp"
#include "../ops/overlap_mean.hpp"
#include "../ops/task_vector.hpp"
#include "options.hpp"
#include "ram.hpp"
#include "registry.hpp"

namespace xmerge
{
    /**
     * RAM+, tensor-local (mergekit `ramplus_tl`): RAM whose unique changes
     * are scaled up for models that mostly overlap with others. Per model i,
     * over this tensor, S_i counts the entries where i is active together
     * with another model and U_i those where it is active alone;
     *
     *     rho_i    = S_i / max(U_i, epsilon)       (S_i / epsilon when U_i = 0)
     *     lambda_i = 1 + r * min(max(rho_i, 0), alpha)
     *
     * and an entry changed by model i alone becomes base + lambda_i d_i; the
     * others are as in RAM. rho and lambda are computed in float32, as
     * mergekit does even for float64 tensors.
     *
     * Cost: one statistics pass (the counts) and the element-wise pass.
     */
    template <class E, class B>
    any_expression ramplus_tl(const expression_list<E>& models, const B& base, double r = 0.1, double alpha = 0.2, double epsilon = 1e-5);

    /// `ramplus_tl` for the method registry.
    template <class = void>
    method_info ramplus_tl_method();

    namespace detail
    {
        struct ramplus_parameters
        {
            double r = 0.1;
            double alpha = 0.2;
            double epsilon = 1e-5;
        };
    }

    /********************
     * Implementation   *
     ********************/

    template <class E, class B>
    inline any_expression ramplus_tl(const expression_list<E>& models, const B& base, double r, double alpha, double epsilon)
    {
        detail::check_epsilon(base.name(), epsilon);
        for (const auto& [name, v] : {std::pair<const char*, double>{"r", r}, {"alpha", alpha}})
        {
            if (!std::isfinite(v))
            {
                throw parameter_error(base.name(), name, "must be finite");
            }
        }
        if (models.empty())
        {
            return base;
        }
        return base + xmerge::overlap_rescaled_mean(xmerge::task_vectors(models, base), r, alpha, epsilon);
    }

    template <class T>
    method_info ramplus_tl_method()
    {
        using P = detail::ramplus_parameters;
        const auto options = option_set<P>()
                                 .global(&P::r, "r", "strength of the boost of unique changes")
                                 .global(&P::alpha, "alpha", "upper bound of the overlap ratio rho")
                                 .global(&P::epsilon, "epsilon", "a task-vector entry counts when its magnitude exceeds this");
        return xmerge::make_method("ramplus_tl", "RAM with unique changes boosted by each model's overlap, per tensor (RAM+)", true, options,
                                   [](const method_inputs& in, const P& p) -> any_expression
                                   { return xmerge::ramplus_tl(in.models, *in.base, p.r, p.alpha, p.epsilon); });
    }
}

#endif
