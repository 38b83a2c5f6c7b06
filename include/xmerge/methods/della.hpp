/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_DELLA_HPP
#define XMERGE_METHODS_DELLA_HPP

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "generalized_task_arithmetic.hpp"

namespace xmerge
{
    /**
     * DELLA (Deep et al., 2024): MagPrune keeps each task-vector entry with a
     * probability that grows with its magnitude rank along dimension 1, from
     * density - epsilon to density + epsilon (see magnitude_rank_probability),
     * then rescales and merges linearly (della_linear) or with sign election
     * (della). mergekit rescales to the original L1 norm; the paper divides
     * each kept entry by its own keep probability.
     *
     * Cost: ranking needs whole lines, so each task vector and its
     * probabilities are held in memory (two float32 buffers per model).
     */
    inline gta_options della_options(std::vector<double> weights, std::vector<double> densities, std::vector<double> epsilons, bool elect_signs,
                                     std::uint64_t seed, std::string stream, double lambda = 1.0)
    {
        gta_options o;
        o.weights = std::move(weights);
        o.densities = std::move(densities);
        o.epsilons = std::move(epsilons);
        o.method = sparsification::ranked_random;
        o.consensus = elect_signs ? sign_consensus::sum : sign_consensus::none;
        o.normalize = elect_signs;
        o.rescale = rescale_kind::l1;
        o.seed = seed;
        o.stream = std::move(stream);
        o.lambda = lambda;
        return o;
    }

    /// `della` for the method registry (normalize true, rescale true).
    template <class T = void>
    method_info della_method()
    {
        return detail::gta_method<T>("della", "magnitude-ranked random pruning with sign election (DELLA)", sparsification::ranked_random,
                                  sign_consensus::sum, true, true);
    }

    /// `della_linear` for the method registry (normalize false, rescale true).
    template <class T = void>
    method_info della_linear_method()
    {
        return detail::gta_method<T>("della_linear", "magnitude-ranked random pruning, summed (DELLA)", sparsification::ranked_random, sign_consensus::none,
                                  false, true);
    }
}

#endif
