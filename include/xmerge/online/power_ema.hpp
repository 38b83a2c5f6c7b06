/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_ONLINE_POWER_EMA_HPP
#define XMERGE_ONLINE_POWER_EMA_HPP

#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "running_average.hpp"

/**
 * @file
 * Power-function EMA (Karras et al. 2024, "Analyzing and Improving the
 * Training Dynamics of Diffusion Models", EDM2): at training time t the
 * average weighs the past iterates by a density proportional to tau^gamma
 * on [0, t], so its width grows with t. Its relative standard deviation
 * sigma_rel (the width as a fraction of t) names a profile.
 *
 * Time convention (as in the paper's code): t is the training time reached
 * after the update, counted in any unit (steps, or images with dt the batch
 * size); the update at time t uses beta = (1 - dt / t)^(gamma + 1), so the
 * first update copies. With dt = 1 the average after step T is exactly
 * sum_i w_i x_i with w_i = (i^(gamma+1) - (i-1)^(gamma+1)) / T^(gamma+1):
 * the continuous profile applied to iterates held constant over each step,
 * which is why the continuous inner products of posthoc_ema.hpp describe
 * tracked averages without a discretisation error.
 */

namespace xmerge
{
    /**
     * The exponent gamma of the profile of relative width sigma_rel: the
     * largest real root of gamma^3 + 7 gamma^2 + (16 - s) gamma + (12 - s)
     * with s = sigma_rel^-2. Throws parameter_error unless
     * 0 < sigma_rel < 1 / sqrt(12) (about 0.2887, the width of gamma = 0,
     * a uniform average).
     */
    inline double power_ema_gamma(double sigma_rel);

    /// sigma_rel of exponent gamma: sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3))).
    inline double power_ema_sigma_rel(double gamma);

    /// beta of the update that advances training time to t by dt: (1 - dt / t)^(gamma + 1).
    inline double power_ema_beta(double gamma, double t, double dt = 1.0);

    /**
     * Power-function EMAs of one parameter set at several widths, updated in
     * place (EDM2 tracks sigma_rel 0.05 and 0.10 and snapshots both).
     *
     * `averages[k]` are the caller's buffers of profile k (any dtype; float32
     * keeps long runs accurate), one tensor per parameter. They need no
     * initialisation: the first update copies. Each update reads the
     * parameters once per profile and rewrites each average once.
     */
    class power_ema
    {
    public:
        power_ema(std::vector<std::vector<tensor_ref>> averages, std::vector<double> sigma_rels = {0.05, 0.10}, eval_options options = {});

        /**
         * Advances training time by dt (1 = one step; a batch size when
         * time counts images) and moves every profile toward params.
         * Throws parameter_error for dt that is not positive and finite.
         */
        void update(const std::vector<const_tensor_ref>& params, double dt = 1.0);

        /// Training time reached by the updates so far.
        double time() const noexcept { return m_time; }
        std::size_t profile_count() const noexcept { return m_sigma_rels.size(); }
        double sigma_rel(std::size_t k) const { return m_sigma_rels.at(k); }
        double gamma(std::size_t k) const { return m_gammas.at(k); }
        const std::vector<tensor_ref>& averages(std::size_t k) const { return m_averages.at(k).averages(); }

    private:
        std::vector<running_average> m_averages;
        std::vector<double> m_sigma_rels;
        std::vector<double> m_gammas;
        double m_time = 0.0;
    };

    /********************
     * Implementation   *
     ********************/

    inline double power_ema_gamma(double sigma_rel)
    {
        const double widest = 1.0 / std::sqrt(12.0);
        if (!(sigma_rel > 0.0 && sigma_rel < widest))
        {
            throw parameter_error("", "sigma_rel", "must be in (0, " + std::to_string(widest) + "), got " + std::to_string(sigma_rel));
        }
        const double s = 1.0 / (sigma_rel * sigma_rel);
        // f(g) = (g + 2)^2 (g + 3) - s (g + 1): f(0) = 12 - s < 0 and f > 0 from
        // sqrt(s) + 1 on; the other two roots lie below 0, so bisection on that
        // bracket finds the largest one.
        const auto f = [s](double g) { return (g + 2.0) * (g + 2.0) * (g + 3.0) - s * (g + 1.0); };
        double lo = 0.0, hi = std::sqrt(s) + 1.0;
        for (int i = 0; i < 200 && hi - lo > 0.0; ++i)
        {
            const double mid = 0.5 * (lo + hi);
            if (mid <= lo || mid >= hi)
            {
                break;
            }
            (f(mid) < 0.0 ? lo : hi) = mid;
        }
        return 0.5 * (lo + hi);
    }

    inline double power_ema_sigma_rel(double gamma)
    {
        return std::sqrt((gamma + 1.0) / ((gamma + 2.0) * (gamma + 2.0) * (gamma + 3.0)));
    }

    inline double power_ema_beta(double gamma, double t, double dt)
    {
        return std::pow(1.0 - dt / t, gamma + 1.0);
    }

    inline power_ema::power_ema(std::vector<std::vector<tensor_ref>> averages, std::vector<double> sigma_rels, eval_options options)
        : m_sigma_rels(std::move(sigma_rels))
    {
        if (averages.size() != m_sigma_rels.size() || m_sigma_rels.empty())
        {
            throw parameter_error("", "averages", "expected one buffer set per sigma_rel (" + std::to_string(m_sigma_rels.size()) + "), got "
                                                      + std::to_string(averages.size()));
        }
        for (std::size_t k = 0; k < averages.size(); ++k)
        {
            m_gammas.push_back(power_ema_gamma(m_sigma_rels[k]));
            if (averages[k].size() != averages[0].size())
            {
                throw parameter_error("", "averages", "profile " + std::to_string(k) + " has " + std::to_string(averages[k].size())
                                                          + " buffers, profile 0 has " + std::to_string(averages[0].size()));
            }
        }
        for (auto& set : averages)
        {
            m_averages.emplace_back(std::move(set), options);
        }
    }

    inline void power_ema::update(const std::vector<const_tensor_ref>& params, double dt)
    {
        if (!(std::isfinite(dt) && dt > 0.0))
        {
            throw parameter_error("", "dt", "must be positive and finite, got " + std::to_string(dt));
        }
        const double t = m_time + dt;
        for (std::size_t k = 0; k < m_averages.size(); ++k)
        {
            m_averages[k].blend(params, 1.0 - power_ema_beta(m_gammas[k], t, dt));
        }
        m_time = t;
    }
}

#endif
