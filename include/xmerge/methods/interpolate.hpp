/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_INTERPOLATE_HPP
#define XMERGE_METHODS_INTERPOLATE_HPP

#include <cmath>
#include <string>
#include <utility>

#include "../core/error.hpp"
#include "../ops/lerp.hpp"

namespace xmerge
{
    /**
     * Weight interpolation (WiSE-FT, backward-compatible weight
     * interpolation): (1 - alpha) * old_model + alpha * new_model.
     *
     * alpha = 0 returns old_model and alpha = 1 new_model exactly; values
     * outside [0, 1] extrapolate. Throws parameter_error for a non-finite alpha.
     */
    template <class A, class B>
    auto interpolate(A&& old_model, B&& new_model, double alpha)
    {
        if (!std::isfinite(alpha))
        {
            throw parameter_error(old_model.name(), "alpha", "must be finite, got " + std::to_string(alpha));
        }
        return xmerge::lerp(std::forward<A>(old_model), std::forward<B>(new_model), alpha);
    }
}

#endif
