/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_ONLINE_STOCHASTIC_RESTORE_HPP
#define XMERGE_ONLINE_STOCHASTIC_RESTORE_HPP

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../config.hpp"
#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../core/tensor_ref.hpp"
#include "../ops/input.hpp"
#include "../ops/map.hpp"
#include "../ops/random_mask.hpp"
#include "../simd/batch.hpp"
#include "../simd/random.hpp"

namespace xmerge
{
    /**
     * Stochastic restore (Wang et al., "Continual Test-Time Domain
     * Adaptation", CVPR 2022, CoTTA): after an adaptation step, each element
     * of the adapted weights is set back to the source model's value with
     * probability p, independently; the others keep their adapted values.
     * It bounds how far a model adapting without labels can drift.
     *
     * Updates the caller's weights in place, all tensors in one parallel
     * evaluation, in any dtype. A restored element is the source's value
     * exactly when both tensors have the same dtype (elements are selected,
     * not interpolated). The draw for element j of tensor i at step s is a
     * function of (seed, s, i, j) only: the same for any thread count, chunk
     * size, SIMD width or machine.
     *
     * Throws parameter_error for p outside [0, 1] or a count mismatch, and
     * shape_error when a source tensor's shape differs from its weights'.
     */
    class stochastic_restore
    {
    public:
        stochastic_restore(std::vector<tensor_ref> weights, std::vector<const_tensor_ref> source, double probability, std::uint64_t seed = 0,
                           eval_options options = {});

        /// Restores with the next step's draws (steps count from 0).
        void apply() { apply(m_steps++); }
        /// Restores with the draws of `step` (the same step draws the same elements).
        void apply(std::uint64_t step) const;

        double probability() const noexcept { return m_probability; }
        /// Calls of apply() so far.
        std::uint64_t steps() const noexcept { return m_steps; }

    private:
        std::vector<tensor_ref> m_weights;
        std::vector<const_tensor_ref> m_source;
        double m_probability;
        std::uint64_t m_seed;
        eval_options m_options;
        std::uint64_t m_steps = 0;
    };

    namespace detail
    {
        /// The source's value where the mask is 1, else the weight's.
        struct restore_fn
        {
            template <class B>
            XMERGE_FORCE_INLINE B operator()(const B& mask, const B& source, const B& weight) const noexcept
            {
                return simd::select(mask > B(0.5f), source, weight);
            }
        };
    }

    /********************
     * Implementation   *
     ********************/

    inline stochastic_restore::stochastic_restore(std::vector<tensor_ref> weights, std::vector<const_tensor_ref> source, double probability, std::uint64_t seed,
                                                  eval_options options)
        : m_weights(std::move(weights))
        , m_source(std::move(source))
        , m_probability(probability)
        , m_seed(seed)
        , m_options(options)
    {
        if (!(probability >= 0.0 && probability <= 1.0))
        {
            throw parameter_error("", "probability", "must be in [0, 1], got " + std::to_string(probability));
        }
        if (m_source.size() != m_weights.size())
        {
            throw parameter_error("", "source", "expected " + std::to_string(m_weights.size()) + " tensors (one per weight tensor), got "
                                                    + std::to_string(m_source.size()));
        }
        for (std::size_t i = 0; i < m_weights.size(); ++i)
        {
            if (m_source[i].shape() != m_weights[i].shape())
            {
                throw shape_error(m_weights[i].name(), "source", "source tensor " + std::to_string(i) + " has shape " + xmerge::to_string(m_source[i].shape())
                                                                     + " but the weights have shape " + xmerge::to_string(m_weights[i].shape()));
            }
        }
    }

    inline void stochastic_restore::apply(std::uint64_t step) const
    {
        if (m_weights.empty() || m_probability == 0.0)
        {
            return;
        }
        // A uniform draw u in [0, 1) restores when u < p: p = 1 restores every element.
        const auto restore = [&](std::size_t i)
        {
            const input_node w(m_weights[i]);
            return xmerge::map(detail::restore_fn{}, xmerge::bernoulli_mask(w, m_probability, simd::make_random_key(m_seed, step, i)), input_node(m_source[i]), w);
        };
        std::vector<decltype(restore(0))> updates;
        updates.reserve(m_weights.size());
        for (std::size_t i = 0; i < m_weights.size(); ++i)
        {
            updates.push_back(restore(i));
        }
        xmerge::evaluate_all(updates, m_weights, m_options);
    }
}

#endif
