/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_ONLINE_DIAGONAL_FISHER_HPP
#define XMERGE_ONLINE_DIAGONAL_FISHER_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../core/tensor_ref.hpp"
#include "../ops/input.hpp"
#include "../ops/map.hpp"
#include "../ops/reduce.hpp"
#include "../simd/batch.hpp"

namespace xmerge
{
    /**
     * fisher[i] += scale * grad[i]^2 for i < n, in place, one fused
     * multiply-add per element (B = simd::batch; B = float is the scalar twin).
     * For training code that keeps its gradients in raw float buffers.
     */
    template <class B = simd::batch>
    void accumulate_squares(float* fisher, const float* grad, std::size_t n, float scale = 1.0f) noexcept;

    /**
     * The diagonal empirical Fisher of a model, accumulated inside a training
     * loop: F = (1 / N) sum_b scale_b g_b^2 over the gradients g_b of N
     * examples, into float32 buffers the caller owns (one per parameter
     * tensor).
     *
     * add() squares and accumulates every gradient tensor in one parallel,
     * vectorized, in-place evaluation (gradients may be float32, bfloat16 or
     * float16); finish() divides by the example count. Per-example gradients
     * (add(g, 1)) give the empirical Fisher; the gradient of a mean loss over
     * a batch of B examples, added with examples = B and scale = B, gives the
     * cheaper batch approximation B g^2.
     */
    class diagonal_fisher
    {
    public:
        /// float32 buffers of the parameters' shapes, set to zero here.
        explicit diagonal_fisher(std::vector<tensor_ref> fishers, eval_options options = {});

        /**
         * fisher_i += scale * g_i^2 for every tensor; `examples` is the number
         * of examples these gradients stand for. Throws parameter_error after
         * finish() (until reset()), for a tensor count other than the
         * buffers', or a non-finite or negative scale; shape_error for a
         * gradient of another shape.
         */
        void add(const std::vector<const_tensor_ref>& gradients, std::size_t examples = 1, double scale = 1.0);

        /**
         * Divides every buffer by the example count, leaving the Fisher.
         * Throws parameter_error when no example was added or when a value is
         * not finite (a gradient held inf or NaN).
         */
        void finish();

        /// Zeros the buffers and the count.
        void reset();

        std::size_t examples() const noexcept { return m_examples; }
        bool finished() const noexcept { return m_finished; }
        const std::vector<tensor_ref>& fishers() const noexcept { return m_fishers; }

    private:
        std::vector<tensor_ref> m_fishers;
        eval_options m_options;
        std::size_t m_examples = 0;
        bool m_finished = false;
    };

    namespace detail
    {
        // f + s * g * g
        struct accumulate_square_fn
        {
            template <class T>
            T operator()(const T& f, const T& g, const T& s) const noexcept
            {
                return simd::fma(s * g, g, f);
            }
        };

        // f * s
        struct scale_fn
        {
            template <class T>
            T operator()(const T& f, const T& s) const noexcept
            {
                return f * s;
            }
        };
    }

    /********************
     * Implementation   *
     ********************/

    template <class B>
    inline void accumulate_squares(float* fisher, const float* grad, std::size_t n, float scale) noexcept
    {
        simd::transform<B>(n, fisher, detail::accumulate_square_fn{}, static_cast<const float*>(fisher), grad, scale);
    }

    inline diagonal_fisher::diagonal_fisher(std::vector<tensor_ref> fishers, eval_options options)
        : m_fishers(std::move(fishers))
        , m_options(options)
    {
        for (std::size_t i = 0; i < m_fishers.size(); ++i)
        {
            if (m_fishers[i].name().empty())
            {
                m_fishers[i] = m_fishers[i].with_name("fisher." + std::to_string(i));
            }
            if (m_fishers[i].type() != dtype::float32)
            {
                throw layout_error(m_fishers[i].name(), "fishers", std::string("Fisher buffers must be float32 (squared gradients underflow 16-bit types), got ")
                                                                       + name_of(m_fishers[i].type()));
            }
        }
        reset();
    }

    inline void diagonal_fisher::add(const std::vector<const_tensor_ref>& gradients, std::size_t examples, double scale)
    {
        if (m_finished)
        {
            throw parameter_error("", "gradients", "the Fisher was already finished; call reset() to start a new one");
        }
        if (!std::isfinite(scale) || scale < 0.0)
        {
            throw parameter_error("", "scale", "must be finite and non-negative, got " + std::to_string(scale));
        }
        if (gradients.size() != m_fishers.size())
        {
            throw parameter_error("", "gradients", "expected " + std::to_string(m_fishers.size()) + " tensors (one per Fisher buffer), got "
                                                       + std::to_string(gradients.size()));
        }
        for (std::size_t i = 0; i < gradients.size(); ++i)
        {
            if (gradients[i].shape() != m_fishers[i].shape())
            {
                throw shape_error(m_fishers[i].name(), "gradients", "gradient " + std::to_string(i) + " has shape " + xmerge::to_string(gradients[i].shape())
                                                                        + " but its Fisher buffer has shape " + xmerge::to_string(m_fishers[i].shape()));
            }
        }
        using update = decltype(xmerge::map(detail::accumulate_square_fn{}, xmerge::input(m_fishers[0]), xmerge::input(gradients[0]), scale));
        std::vector<update> updates;
        updates.reserve(m_fishers.size());
        for (std::size_t i = 0; i < m_fishers.size(); ++i)
        {
            updates.push_back(xmerge::map(detail::accumulate_square_fn{}, xmerge::input(m_fishers[i]), xmerge::input(gradients[i]), scale));
        }
        evaluate_all(updates, m_fishers, m_options);
        m_examples += examples;
    }

    inline void diagonal_fisher::finish()
    {
        if (m_finished)
        {
            return;
        }
        if (m_examples == 0)
        {
            throw parameter_error("", "examples", "no example was added, so the Fisher is undefined");
        }
        const double inverse = 1.0 / static_cast<double>(m_examples);
        using divided = decltype(xmerge::map(detail::scale_fn{}, xmerge::input(m_fishers[0]), inverse));
        std::vector<divided> updates;
        updates.reserve(m_fishers.size());
        for (const auto& f : m_fishers)
        {
            updates.push_back(xmerge::map(detail::scale_fn{}, xmerge::input(f), inverse));
        }
        evaluate_all(updates, m_fishers, m_options);
        for (const auto& f : m_fishers)
        {
            // Squares are non-negative: the sum is finite exactly when every value is.
            if (!std::isfinite(xmerge::value_of(total(xmerge::input(f)), m_options)))
            {
                throw parameter_error(f.name(), "gradients", "the Fisher holds inf or NaN: a gradient was not finite");
            }
        }
        m_finished = true;
    }

    inline void diagonal_fisher::reset()
    {
        for (const auto& f : m_fishers)
        {
            std::fill_n(static_cast<float*>(f.data()), f.size(), 0.0f);
        }
        m_examples = 0;
        m_finished = false;
    }
}

#endif
