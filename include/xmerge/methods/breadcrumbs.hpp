/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_BREADCRUMBS_HPP
#define XMERGE_METHODS_BREADCRUMBS_HPP

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "generalized_task_arithmetic.hpp"

namespace xmerge
{
    /**
     * Model Breadcrumbs (Davari and Belilovsky, ECCV 2024): from each task
     * vector drop the floor(gamma * n) largest magnitudes (outliers) and the
     * smallest, keeping floor(density * n) entries; if that leaves too few
     * small entries to drop, fewer large ones are dropped.
     *
     * Differs from mergekit where gamma * n < 1: mergekit's slice then keeps
     * nothing and the task vector vanishes; here the floor(density * n)
     * largest entries are kept, which is what the method means.
     */
    inline gta_options breadcrumbs_options(std::vector<double> weights, std::vector<double> densities, std::vector<double> gammas, bool elect_signs,
                                           double lambda = 1.0)
    {
        gta_options o;
        o.weights = std::move(weights);
        o.densities = std::move(densities);
        o.gammas = std::move(gammas);
        o.method = sparsification::outliers;
        o.consensus = elect_signs ? sign_consensus::sum : sign_consensus::none;
        o.lambda = lambda;
        return o;
    }

    /// `breadcrumbs` for the method registry (normalize false, rescale false).
    template <class T = void>
    method_info breadcrumbs_method()
    {
        return detail::gta_method<T>("breadcrumbs", "task vectors without outliers and small entries (Model Breadcrumbs)", sparsification::outliers,
                                  sign_consensus::none, false, false);
    }

    /// `breadcrumbs_ties` for the method registry (normalize false, rescale false).
    template <class T = void>
    method_info breadcrumbs_ties_method()
    {
        return detail::gta_method<T>("breadcrumbs_ties", "Model Breadcrumbs with sign election", sparsification::outliers, sign_consensus::sum, false,
                                  false);
    }
}

#endif
