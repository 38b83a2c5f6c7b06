/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_RANK_PROBABILITY_HPP
#define XMERGE_OPS_RANK_PROBABILITY_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "computed.hpp"

namespace xmerge
{
    /**
     * Keep probabilities that grow with magnitude (DELLA's MagPrune): along
     * dimension 1 (the whole tensor for a 1-D one), the element of rank r
     * among c by |value| (smallest first, lower index first among equal
     * magnitudes) gets
     *
     *     p = (density - epsilon) + 2 epsilon (r - 1) / (c - 1),
     *
     * from density - epsilon for the smallest to density + epsilon for the
     * largest; a line of one element gets density. density >= 1 keeps
     * everything and density <= 0 nothing (probabilities 1 and 0), as in
     * mergekit; otherwise density +/- epsilon must lie in (0, 1). Ranking needs whole
     * lines, so this is computed as a whole: it holds the expression's values
     * and the probabilities (two float32 buffers the size of the tensor) and
     * sorts each line.
     */
    template <class E>
    auto magnitude_rank_probability(const E& e, double density, double epsilon);

    namespace detail
    {
        /// Lines along dimension 1: count, length and the stride between their elements.
        struct line_layout
        {
            std::size_t outer;   // product of dimensions before 1
            std::size_t length;  // dimension 1
            std::size_t inner;   // product of dimensions after 1 (the stride)
        };

        inline line_layout lines_along_dim1(const shape_type& shape)
        {
            if (shape.size() < 2)
            {
                return {1, xmerge::numel(shape), 1};
            }
            std::size_t inner = 1;
            for (std::size_t d = 2; d < shape.size(); ++d)
            {
                inner *= shape[d];
            }
            return {shape[0], shape[1], inner};
        }
    }

    /********************
     * Implementation   *
     ********************/

    template <class E>
    inline auto magnitude_rank_probability(const E& e, double density, double epsilon)
    {
        if (density < 1.0 && density > 0.0 && !(density - epsilon > 0.0 && density + epsilon < 1.0))
        {
            throw parameter_error(e.name(), "epsilon", "density +/- epsilon must lie in (0, 1), got density " + std::to_string(density)
                                                          + " and epsilon " + std::to_string(epsilon));
        }
        std::vector<const_tensor_ref> reads;
        e.for_each_input([&](const const_tensor_ref& r) { reads.push_back(r); });
        const shape_type shape = e.shape();
        auto f = [e, shape, density, epsilon](float* out, const eval_options& options)
        {
            const std::size_t n = xmerge::numel(shape);
            if (density >= 1.0 || density <= 0.0)
            {
                std::fill(out, out + n, density >= 1.0 ? 1.0f : 0.0f);
                return;
            }
            std::vector<float> values(n);
            evaluate(e, tensor_ref(values.data(), dtype::float32, shape), options);
            const detail::line_layout lines = detail::lines_along_dim1(shape);
            const std::size_t count = lines.outer * lines.inner;
            detail::run_tasks(count, options.threads, options.exec, [&] { return std::vector<std::size_t>(lines.length); },
                              [&](std::vector<std::size_t>& order, std::size_t line)
                              {
                                  const std::size_t a = line / lines.inner;
                                  const std::size_t r = line % lines.inner;
                                  const std::size_t first = a * lines.length * lines.inner + r;
                                  const auto at = [&](std::size_t j) { return first + j * lines.inner; };
                                  std::iota(order.begin(), order.end(), std::size_t{0});
                                  std::stable_sort(order.begin(), order.end(),
                                                   [&](std::size_t x, std::size_t y) { return std::fabs(values[at(x)]) < std::fabs(values[at(y)]); });
                                  const double span = static_cast<double>(lines.length) - 1.0;
                                  for (std::size_t rank = 0; rank < lines.length; ++rank)
                                  {
                                      const double position = span > 0.0 ? static_cast<double>(rank) / span : 0.5;
                                      out[at(order[rank])] = static_cast<float>((density - epsilon) + position * 2.0 * epsilon);
                                  }
                              });
        };
        return xmerge::computed(shape, e.name(), std::move(f), std::move(reads));
    }
}

#endif
