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
        return map(detail::add_scaled_fn{}, base, max_magnitude(task_vectors(models, base)), lambda);
    }

    /// `magmax` for the method registry.
    inline method_info magmax_method()
    {
        method_info m;
        m.name = "magmax";
        m.needs_base = true;
        m.summary = "per element the task-vector entry of largest magnitude (MagMax)";
        m.parameters = {{"lambda", parameter_scope::global, 1.0, "scale of the selected task vector"}};
        m.build = [](const method_inputs& in, const parameters& p) -> any_expression { return magmax(in.models, *in.base, p.number("lambda")); };
        return m;
    }
}

#endif
