/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_MAX_MAGNITUDE_HPP
#define XMERGE_OPS_MAX_MAGNITUDE_HPP

#include <cstddef>
#include <utility>

#include "../config.hpp"
#include "../simd/batch.hpp"
#include "list.hpp"
#include "list_node.hpp"
#include "scalar.hpp"

namespace xmerge
{
    namespace detail
    {
        /// The term of largest magnitude; the first wins a tie, and a NaN only when it comes first.
        struct max_magnitude_fn
        {
            static constexpr const char* what = "a magnitude selection";

            template <class Terms>
            XMERGE_FORCE_INLINE auto operator()(const Terms& t) const noexcept
            {
                auto best = t[0];
                auto best_abs = simd::abs(best);
                for (std::size_t k = 1; k < t.size(); ++k)
                {
                    const auto v = t[k];
                    const auto v_abs = simd::abs(v);
                    const auto larger = v_abs > best_abs;
                    best = simd::select(larger, v, best);
                    best_abs = simd::select(larger, v_abs, best_abs);
                }
                return best;
            }
        };
    }

    /// Per element, the entry of largest magnitude among K tensors (MagMax's selection).
    template <class E>
    using max_magnitude_node = list_node<detail::max_magnitude_fn, scalar_constant, E>;

    /// Per element, the term of largest |value|; the first model wins a tie.
    template <class E>
    auto max_magnitude(const expression_list<E>& terms)
    {
        return xmerge::combine(detail::max_magnitude_fn{}, terms);
    }
}

#endif
