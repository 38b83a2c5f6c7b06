/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_ONLINE_POSTHOC_EMA_HPP
#define XMERGE_ONLINE_POSTHOC_EMA_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "power_ema.hpp"
#include "tensor_copies.hpp"

/**
 * @file
 * Post-hoc EMA (EDM2): snapshots of power-function EMAs taken during
 * training are combined afterwards into the EMA of any width sigma_rel.
 *
 * A snapshot of width sigma (exponent g) taken at time t averages the
 * iterates with the density p(tau) = (g + 1) tau^g / t^(g + 1) on [0, t].
 * The reconstruction is the combination sum_i x_i snapshot_i whose density
 * sum_i x_i p_i is nearest, in L2 over [0, inf), to the target's p: the
 * normal equations A x = b with A_ij = <p_i, p_j> and b_i = <p_i, p>, in
 * closed form, solved in float64; x is then scaled to sum to 1, as the
 * paper's code does. Snapshots taken after the target time are not used.
 */

namespace xmerge
{
    /// A power-function EMA profile: its width and the training time it was taken at.
    struct ema_profile
    {
        double sigma_rel = 0.0;
        double time = 0.0;
    };

    /// <p_a, p_b>: the L2 inner product of the densities of two profiles.
    inline double power_ema_overlap(const ema_profile& a, const ema_profile& b);

    /**
     * Coefficients x of the snapshots (in the given order) whose combination
     * best reproduces `target`; 0 for snapshots taken after target.time.
     * Throws parameter_error when no snapshot is at or before the target
     * time, for a time that is not positive, for two identical profiles, or
     * when the system is singular.
     */
    inline std::vector<double> posthoc_ema_coefficients(const std::vector<ema_profile>& snapshots, const ema_profile& target);

    /**
     * Relative L2 error of a reconstruction's density: ||sum_i x_i p_i - p|| / ||p||
     * for the coefficients x of posthoc_ema_coefficients (0 when the target
     * is one of the snapshots). It bounds how far the reconstruction can be
     * from the directly tracked average, relative to the spread of the
     * iterates it averages.
     */
    inline double posthoc_ema_error(const std::vector<ema_profile>& snapshots, const std::vector<double>& x, const ema_profile& target);

    /**
     * Snapshots of power-function EMAs held in memory, and their post-hoc
     * reconstruction. Storage is float32 by default; bfloat16 halves the
     * memory of every snapshot and rounds each value once.
     */
    class posthoc_ema
    {
    public:
        explicit posthoc_ema(dtype storage = dtype::float32, eval_options options = {})
            : m_storage(storage)
            , m_options(options)
        {
        }

        /// Copies one averaged parameter set with its profile.
        void add(const ema_profile& profile, const std::vector<const_tensor_ref>& average);
        /// Copies every profile of a tracker at its current time.
        void add(const power_ema& tracker);

        /**
         * Writes the reconstruction of width sigma_rel at time `time` (the
         * latest snapshot's when negative) into outs, one tensor per
         * parameter: one pass reading every used snapshot once.
         */
        void reconstruct(double sigma_rel, const std::vector<tensor_ref>& outs, double time = -1.0) const;

        const std::vector<ema_profile>& profiles() const noexcept { return m_profiles; }
        std::size_t size() const noexcept { return m_profiles.size(); }
        /// The latest snapshot time (0 when empty).
        double latest_time() const noexcept;

    private:
        dtype m_storage;
        eval_options m_options;
        std::vector<ema_profile> m_profiles;
        std::vector<tensor_copies> m_snapshots;
    };

    namespace detail
    {
        /**
         * Solves A X = B in place (A: n x n, B: n x m, row-major) by Gaussian
         * elimination with partial pivoting; X is left in B. Returns false
         * when a pivot is zero or not finite.
         */
        inline bool solve_dense(std::vector<double>& a, std::vector<double>& b, std::size_t n, std::size_t m);
    }

    /********************
     * Implementation   *
     ********************/

    inline double power_ema_overlap(const ema_profile& a, const ema_profile& b)
    {
        const double ga = power_ema_gamma(a.sigma_rel), gb = power_ema_gamma(b.sigma_rel);
        // The integral runs up to the earlier time, where the later density is tau^g / t^(g + 1).
        const double ratio = a.time / b.time;
        const double power = a.time < b.time ? std::pow(ratio, gb) : std::pow(ratio, -ga);
        return (ga + 1.0) * (gb + 1.0) * power / ((ga + gb + 1.0) * std::max(a.time, b.time));
    }

    namespace detail
    {
        inline bool solve_dense(std::vector<double>& a, std::vector<double>& b, std::size_t n, std::size_t m)
        {
            for (std::size_t c = 0; c < n; ++c)
            {
                std::size_t pivot = c;
                for (std::size_t r = c + 1; r < n; ++r)
                {
                    if (std::abs(a[r * n + c]) > std::abs(a[pivot * n + c]))
                    {
                        pivot = r;
                    }
                }
                if (!(std::isfinite(a[pivot * n + c]) && a[pivot * n + c] != 0.0))
                {
                    return false;
                }
                if (pivot != c)
                {
                    std::swap_ranges(a.begin() + static_cast<std::ptrdiff_t>(c * n), a.begin() + static_cast<std::ptrdiff_t>((c + 1) * n),
                                     a.begin() + static_cast<std::ptrdiff_t>(pivot * n));
                    std::swap_ranges(b.begin() + static_cast<std::ptrdiff_t>(c * m), b.begin() + static_cast<std::ptrdiff_t>((c + 1) * m),
                                     b.begin() + static_cast<std::ptrdiff_t>(pivot * m));
                }
                for (std::size_t r = c + 1; r < n; ++r)
                {
                    const double f = a[r * n + c] / a[c * n + c];
                    for (std::size_t k = c; k < n; ++k)
                    {
                        a[r * n + k] -= f * a[c * n + k];
                    }
                    for (std::size_t k = 0; k < m; ++k)
                    {
                        b[r * m + k] -= f * b[c * m + k];
                    }
                }
            }
            for (std::size_t c = n; c-- > 0;)
            {
                for (std::size_t k = 0; k < m; ++k)
                {
                    double v = b[c * m + k];
                    for (std::size_t j = c + 1; j < n; ++j)
                    {
                        v -= a[c * n + j] * b[j * m + k];
                    }
                    b[c * m + k] = v / a[c * n + c];
                }
            }
            return true;
        }
    }

    inline std::vector<double> posthoc_ema_coefficients(const std::vector<ema_profile>& snapshots, const ema_profile& target)
    {
        power_ema_gamma(target.sigma_rel);
        if (!(std::isfinite(target.time) && target.time > 0.0))
        {
            throw parameter_error("", "time", "the reconstruction time must be positive and finite, got " + std::to_string(target.time));
        }
        std::vector<std::size_t> used;
        for (std::size_t i = 0; i < snapshots.size(); ++i)
        {
            const ema_profile& s = snapshots[i];
            power_ema_gamma(s.sigma_rel);
            if (!(std::isfinite(s.time) && s.time > 0.0))
            {
                throw parameter_error("", "snapshots", "snapshot " + std::to_string(i) + " has time " + std::to_string(s.time) + "; times must be positive");
            }
            if (s.time <= target.time)
            {
                for (std::size_t j : used)
                {
                    if (snapshots[j].time == s.time && snapshots[j].sigma_rel == s.sigma_rel)
                    {
                        throw parameter_error("", "snapshots", "snapshots " + std::to_string(j) + " and " + std::to_string(i)
                                                                   + " have the same profile, which makes the system singular");
                    }
                }
                used.push_back(i);
            }
        }
        if (used.empty())
        {
            throw parameter_error("", "time", "no snapshot was taken at or before time " + std::to_string(target.time));
        }
        const std::size_t n = used.size();
        std::vector<double> a(n * n), b(n);
        for (std::size_t r = 0; r < n; ++r)
        {
            for (std::size_t c = 0; c < n; ++c)
            {
                a[r * n + c] = power_ema_overlap(snapshots[used[r]], snapshots[used[c]]);
            }
            b[r] = power_ema_overlap(snapshots[used[r]], target);
        }
        double total = 0.0;
        if (detail::solve_dense(a, b, n, 1))
        {
            for (double v : b)
            {
                total += v;
            }
        }
        if (!(std::isfinite(total) && total != 0.0))
        {
            throw parameter_error("", "snapshots", "the snapshot profiles give a singular system for sigma_rel " + std::to_string(target.sigma_rel));
        }
        std::vector<double> x(snapshots.size(), 0.0);
        for (std::size_t r = 0; r < n; ++r)
        {
            x[used[r]] = b[r] / total;
        }
        return x;
    }

    inline double posthoc_ema_error(const std::vector<ema_profile>& snapshots, const std::vector<double>& x, const ema_profile& target)
    {
        if (x.size() != snapshots.size())
        {
            throw parameter_error("", "x", "expected one coefficient per snapshot");
        }
        // ||q - p||^2 = x^T A x - 2 x^T b + <p, p>
        double quadratic = 0.0, cross = 0.0;
        for (std::size_t i = 0; i < x.size(); ++i)
        {
            if (x[i] == 0.0)
            {
                continue;
            }
            cross += x[i] * power_ema_overlap(snapshots[i], target);
            for (std::size_t j = 0; j < x.size(); ++j)
            {
                if (x[j] != 0.0)
                {
                    quadratic += x[i] * x[j] * power_ema_overlap(snapshots[i], snapshots[j]);
                }
            }
        }
        const double self = power_ema_overlap(target, target);
        return std::sqrt(std::max(0.0, quadratic - 2.0 * cross + self) / self);
    }

    inline void posthoc_ema::add(const ema_profile& profile, const std::vector<const_tensor_ref>& average)
    {
        power_ema_gamma(profile.sigma_rel);
        if (!(std::isfinite(profile.time) && profile.time > 0.0))
        {
            throw parameter_error("", "time", "a snapshot's time must be positive and finite, got " + std::to_string(profile.time));
        }
        if (!m_snapshots.empty())
        {
            detail::check_parameter_set(m_snapshots.front().refs(), average);
        }
        tensor_copies copy(average, m_storage);
        copy.assign(average, m_options);
        m_snapshots.push_back(std::move(copy));
        m_profiles.push_back(profile);
    }

    inline void posthoc_ema::add(const power_ema& tracker)
    {
        for (std::size_t k = 0; k < tracker.profile_count(); ++k)
        {
            const auto& avg = tracker.averages(k);
            add({tracker.sigma_rel(k), tracker.time()}, std::vector<const_tensor_ref>(avg.begin(), avg.end()));
        }
    }

    inline double posthoc_ema::latest_time() const noexcept
    {
        double t = 0.0;
        for (const auto& p : m_profiles)
        {
            t = std::max(t, p.time);
        }
        return t;
    }

    inline void posthoc_ema::reconstruct(double sigma_rel, const std::vector<tensor_ref>& outs, double time) const
    {
        if (m_snapshots.empty())
        {
            throw parameter_error("", "snapshots", "no snapshot was added");
        }
        const std::vector<double> x = posthoc_ema_coefficients(m_profiles, {sigma_rel, time < 0.0 ? latest_time() : time});
        std::vector<const tensor_copies*> sets;
        std::vector<double> weights;
        for (std::size_t i = 0; i < m_snapshots.size(); ++i)
        {
            if (x[i] != 0.0)
            {
                sets.push_back(&m_snapshots[i]);
                weights.push_back(x[i]);
            }
        }
        detail::combine(sets, weights, outs, m_options);
    }
}

#endif
