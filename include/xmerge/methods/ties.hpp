/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_TIES_HPP
#define XMERGE_METHODS_TIES_HPP

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "generalized_task_arithmetic.hpp"

namespace xmerge
{
    /**
     * TIES-merging (Yadav et al., NeurIPS 2023): trim each task vector to its
     * floor(density * n) largest magnitudes, elect a sign per element (the
     * sign of the weighted sum), and average the agreeing entries.
     *
     *     result = base + lambda * sum_i [agree_i] w_i trim(d_i) / sum_i [agree_i] w_i
     *
     * mergekit `ties`: normalize defaults to true, rescale to false.
     * Set `elected_divisor = merge_divisor::count` for the paper's plain mean
     * over agreeing models.
     */
    inline gta_options ties_options(std::vector<double> weights, std::vector<double> densities, double lambda = 1.0)
    {
        gta_options o;
        o.weights = std::move(weights);
        o.densities = std::move(densities);
        o.method = sparsification::magnitude;
        o.consensus = sign_consensus::sum;
        o.normalize = true;
        o.lambda = lambda;
        return o;
    }

    /// TIES-merging of models against base; see ties_options.
    template <class E, class B>
    any_expression ties(const expression_list<E>& models, const B& base, std::vector<double> weights, std::vector<double> densities, double lambda = 1.0)
    {
        return xmerge::generalized_task_arithmetic(models, base, ties_options(std::move(weights), std::move(densities), lambda));
    }

    /// `ties` for the method registry.
    template <class T = void>
    method_info ties_method()
    {
        return detail::gta_method<T>("ties", "trimmed task vectors with sign election (TIES)", sparsification::magnitude, sign_consensus::sum, true, false);
    }
}

#endif
