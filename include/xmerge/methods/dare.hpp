/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_DARE_HPP
#define XMERGE_METHODS_DARE_HPP

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "generalized_task_arithmetic.hpp"

namespace xmerge
{
    /**
     * DARE (Yu et al., ICML 2024): drop each task-vector entry with
     * probability 1 - density, rescale the survivors, then merge linearly
     * (dare_linear) or with TIES sign election (dare_ties).
     *
     * The paper rescales by 1 / density (rescale_kind::density, no
     * statistics pass); mergekit matches the L1 norm of the original task
     * vector (rescale_kind::l1, the registry default through `rescale`),
     * which needs one statistics pass. Masks come from the counter-based
     * stream (seed, tensor name, model index): reproducible for any thread
     * count and machine.
     */
    inline gta_options dare_options(std::vector<double> weights, std::vector<double> densities, bool elect_signs, std::uint64_t seed,
                                    std::string stream, rescale_kind rescale = rescale_kind::density, double lambda = 1.0)
    {
        gta_options o;
        o.weights = std::move(weights);
        o.densities = std::move(densities);
        o.method = sparsification::random;
        o.consensus = elect_signs ? sign_consensus::sum : sign_consensus::none;
        o.rescale = rescale;
        o.seed = seed;
        o.stream = std::move(stream);
        o.lambda = lambda;
        return o;
    }

    /// `dare_linear` for the method registry (normalize false, rescale true).
    template <class T = void>
    method_info dare_linear_method()
    {
        return detail::gta_method<T>("dare_linear", "randomly dropped, rescaled task vectors, summed (DARE)", sparsification::random, sign_consensus::none,
                                  false, true);
    }

    /// `dare_ties` for the method registry (normalize false, rescale true).
    template <class T = void>
    method_info dare_ties_method()
    {
        return detail::gta_method<T>("dare_ties", "randomly dropped, rescaled task vectors with sign election (DARE + TIES)", sparsification::random,
                                  sign_consensus::sum, false, true);
    }
}

#endif
