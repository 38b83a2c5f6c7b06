/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_RAM_HPP
#define XMERGE_METHODS_RAM_HPP

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
#include "registry.hpp"

namespace xmerge
{
    /**
     * RAM, Reinforced Agent Merging (arXiv 2601.13572; mergekit `ram`): an
     * entry of task vector d_i = x_i - base is active when |d_i| > epsilon
     * (strictly). Per element, with c active models,
     *
     *     result = base + d_j                          c == 1 (j the active model)
     *     result = base + (1 / c) sum_{active i} d_i   c >= 2
     *     result = base                                c == 0
     *
     * Unlike an average, an entry changed by one model keeps that model's
     * full change; changes of size epsilon or less are dropped even where no
     * other model changes the entry. With no models the result is the base.
     * One element-wise pass, no statistics.
     */
    template <class E, class B>
    any_expression ram(const expression_list<E>& models, const B& base, double epsilon = 1e-5);

    /// `ram` for the method registry.
    template <class = void>
    method_info ram_method();

    namespace detail
    {
        struct ram_parameters
        {
            double epsilon = 1e-5;
        };

        inline void check_epsilon(const std::string& tensor, double epsilon)
        {
            if (!std::isfinite(epsilon) || epsilon < 0.0)
            {
                throw parameter_error(tensor, "epsilon", "must be a finite number >= 0, got " + std::to_string(epsilon));
            }
        }
    }

    /********************
     * Implementation   *
     ********************/

    template <class E, class B>
    inline any_expression ram(const expression_list<E>& models, const B& base, double epsilon)
    {
        detail::check_epsilon(base.name(), epsilon);
        if (models.empty())
        {
            return base;
        }
        return base + xmerge::overlap_mean(xmerge::task_vectors(models, base), std::vector<double>(models.size(), 1.0), epsilon);
    }

    template <class T>
    method_info ram_method()
    {
        using P = detail::ram_parameters;
        const auto options = option_set<P>().global(&P::epsilon, "epsilon", "a task-vector entry counts when its magnitude exceeds this");
        return xmerge::make_method("ram", "unique changes kept whole, overlapping ones averaged (RAM)", true, options,
                                   [](const method_inputs& in, const P& p) -> any_expression { return xmerge::ram(in.models, *in.base, p.epsilon); });
    }
}

#endif
