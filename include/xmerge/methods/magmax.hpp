/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_MAGMAX_HPP
#define XMERGE_METHODS_MAGMAX_HPP

#include <cmath>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../ops/any.hpp"
#include "../ops/arithmetic.hpp"
#include "../ops/list.hpp"
#include "../ops/max_magnitude.hpp"
#include "../ops/task_vector.hpp"
#include "options.hpp"
#include "registry.hpp"
#include "task_arithmetic.hpp"

namespace xmerge
{
    /**
     * MagMax (Marczak et al., ECCV 2024): per element, the task-vector entry
     * of largest magnitude across the models (the first model wins a tie),
     * scaled by lambda and added to the base:
     *
     *     result = base + lambda * d_j,  j = argmax_k |d_k|.
     *
     * One element-wise pass.
     */
    template <class E, class B>
    auto magmax(const expression_list<E>& models, const B& base, double lambda = 1.0)
    {
        detail::check_finite(base.name(), "lambda", lambda);
        return xmerge::map(detail::add_scaled_fn{}, base, xmerge::max_magnitude(xmerge::task_vectors(models, base)), lambda);
    }

    namespace detail
    {
        struct magmax_parameters
        {
            double lambda = 1.0;
        };
    }

    /// `magmax` for the method registry.
    template <class T = void>
    method_info magmax_method()
    {
        using P = detail::magmax_parameters;
        const auto options = option_set<P>().global(&P::lambda, "lambda", "scale of the selected task vector");
        return xmerge::make_method("magmax", "per element the task-vector entry of largest magnitude (MagMax)", true, options,
                           [](const method_inputs& in, const P& p) -> any_expression { return xmerge::magmax(in.models, *in.base, p.lambda); });
    }
}

#endif
