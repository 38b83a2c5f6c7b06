/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_ONLINE_SWAD_HPP
#define XMERGE_ONLINE_SWAD_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "running_average.hpp"
#include "tensor_copies.hpp"

/**
 * @file
 * SWAD (Cha et al. 2021, "SWAD: Domain Generalization by Seeking Flat
 * Minima"): a dense average of every training iterate inside the valley of
 * the validation loss, whose start and end are read from losses the caller
 * measures every few steps.
 *
 * The iterates between two evaluations form a segment; evaluation i closes
 * segment i with validation loss L_i. With n_converge = N_s, n_tolerance =
 * N_e and tolerance_ratio = r:
 *  - the start s is the first i with L_i <= L_j for every j in (i, i + N_s):
 *    the loss stopped improving over the next N_s - 1 evaluations;
 *  - the threshold is tau = (1 + r) mean(L_s, ..., L_{s + N_s - 1});
 *  - segment i >= s is kept while min(L_i, ..., L_{i + N_e - 1}) <= tau; the
 *    first segment whose next N_e losses all exceed tau ends the valley, and
 *    no later segment is kept. At finish() the segments still undecided are
 *    judged on the losses there are.
 * The result is the mean of every iterate of the kept segments. The
 * authors' code follows the same rule but also counts the start segment
 * more than once and may take up to N_e - N_s segments before s whose
 * losses are under tau; this implementation does neither.
 */

namespace xmerge
{
    /// Parameters of the SWAD valley rule (the paper's defaults).
    struct swad_options
    {
        std::size_t n_converge = 3;
        std::size_t n_tolerance = 6;
        double tolerance_ratio = 0.3;
        /// dtype of the segments held while their fate is undecided.
        dtype storage = dtype::float32;
    };

    /**
     * The SWAD average, accumulated during training. The caller passes every
     * iterate to update() and, every few steps, the validation loss of the
     * current weights to evaluate(). Holds at most max(N_s, N_e) segment
     * averages plus the segment being accumulated and the result (float32).
     */
    class swad
    {
    public:
        /// `like`: the parameters (shapes and names only).
        explicit swad(const std::vector<const_tensor_ref>& like, swad_options options = {}, eval_options eval = {});

        /// Adds one iterate to the current segment.
        void update(const std::vector<const_tensor_ref>& params);
        /// Closes the current segment with the validation loss of the current weights.
        void evaluate(double validation_loss);
        /// Decides the segments still pending (at the end of training).
        void finish();

        /// Writes the mean of the kept iterates; throws parameter_error before the start was found.
        void average(const std::vector<tensor_ref>& outs) const;

        bool started() const noexcept { return m_start != npos; }
        /// True once the loss left the valley (no segment is kept any more).
        bool ended() const noexcept { return m_ended; }
        /// Index of the start segment (npos before it is known).
        std::size_t start() const noexcept { return m_start; }
        /// Indices of the kept segments, in order.
        const std::vector<std::size_t>& kept() const noexcept { return m_kept; }
        double threshold() const noexcept { return m_threshold; }
        /// Iterates in the result.
        std::size_t iterates() const noexcept { return m_iterates; }

        static constexpr std::size_t npos = static_cast<std::size_t>(-1);

    private:
        struct segment
        {
            std::size_t index;
            std::size_t count;
            tensor_copies average;
        };

        void keep(segment& s);
        // Keeps pending segments while their windows (up to `last`) stay under tau.
        void decide(bool final);

        swad_options m_options;
        eval_options m_eval;
        tensor_copies m_current;
        std::size_t m_current_count = 0;
        tensor_copies m_result;
        std::size_t m_iterates = 0;
        std::deque<segment> m_pending;
        std::vector<double> m_losses;
        std::vector<std::size_t> m_kept;
        std::size_t m_start = npos;
        double m_threshold = 0.0;
        bool m_ended = false;
    };

    /********************
     * Implementation   *
     ********************/

    inline swad::swad(const std::vector<const_tensor_ref>& like, swad_options options, eval_options eval)
        : m_options(options)
        , m_eval(eval)
        , m_current(like, dtype::float32)
        , m_result(like, dtype::float32)
    {
        if (options.n_converge == 0 || options.n_tolerance == 0)
        {
            throw parameter_error("", options.n_converge == 0 ? "n_converge" : "n_tolerance", "must be at least 1");
        }
        if (!(std::isfinite(options.tolerance_ratio) && options.tolerance_ratio >= 0.0))
        {
            throw parameter_error("", "tolerance_ratio", "must be non-negative and finite, got " + std::to_string(options.tolerance_ratio));
        }
    }

    inline void swad::update(const std::vector<const_tensor_ref>& params)
    {
        running_average(m_current.refs(), m_eval).blend(params, 1.0 / static_cast<double>(m_current_count + 1));
        ++m_current_count;
    }

    inline void swad::evaluate(double validation_loss)
    {
        if (!std::isfinite(validation_loss))
        {
            throw parameter_error("", "validation_loss", "must be finite, got " + std::to_string(validation_loss));
        }
        if (m_current_count == 0)
        {
            throw parameter_error("", "validation_loss", "no iterate was added since the last evaluation");
        }
        const std::size_t index = m_losses.size();
        m_losses.push_back(validation_loss);
        if (!m_ended)
        {
            tensor_copies copy(m_current.crefs(), m_options.storage);
            copy.assign(m_current.crefs(), m_eval);
            m_pending.push_back({index, m_current_count, std::move(copy)});
        }
        m_current_count = 0;
        if (!started() && index + 1 >= m_options.n_converge)
        {
            const std::size_t first = index + 1 - m_options.n_converge;
            const auto window = m_losses.begin() + static_cast<std::ptrdiff_t>(first);
            if (*std::min_element(window, m_losses.end()) >= *window)
            {
                m_start = first;
                double total = 0.0;
                for (auto it = window; it != m_losses.end(); ++it)
                {
                    total += *it;
                }
                m_threshold = (1.0 + m_options.tolerance_ratio) * total / static_cast<double>(m_options.n_converge);
            }
        }
        // Segments before the start (or before the earliest possible start) are never kept.
        const std::size_t earliest = started() ? m_start : (index + 2 > m_options.n_converge ? index + 2 - m_options.n_converge : 0);
        while (!m_pending.empty() && m_pending.front().index < earliest)
        {
            m_pending.pop_front();
        }
        if (started())
        {
            decide(false);
        }
    }

    inline void swad::finish()
    {
        if (started())
        {
            decide(true);
        }
        m_pending.clear();
    }

    inline void swad::decide(bool final)
    {
        while (!m_ended && !m_pending.empty())
        {
            segment& s = m_pending.front();
            const std::size_t end = s.index + m_options.n_tolerance;
            if (end > m_losses.size() && !final)
            {
                return;
            }
            const auto first = m_losses.begin() + static_cast<std::ptrdiff_t>(s.index);
            const auto last = m_losses.begin() + static_cast<std::ptrdiff_t>(std::min(end, m_losses.size()));
            if (*std::min_element(first, last) > m_threshold)
            {
                m_ended = true;
                m_pending.clear();
                return;
            }
            keep(s);
            m_pending.pop_front();
        }
    }

    inline void swad::keep(segment& s)
    {
        m_iterates += s.count;
        const auto seg = s.average.crefs();
        running_average(m_result.refs(), m_eval).blend(seg, static_cast<double>(s.count) / static_cast<double>(m_iterates));
        m_kept.push_back(s.index);
    }

    inline void swad::average(const std::vector<tensor_ref>& outs) const
    {
        if (m_iterates == 0)
        {
            throw parameter_error("", "validation_loss", started() ? "no segment was kept yet (call finish() at the end of training)"
                                                                    : "the validation loss has not stopped improving yet, so the valley has no start");
        }
        detail::combine({&m_result}, {1.0}, outs, m_eval);
    }
}

#endif
