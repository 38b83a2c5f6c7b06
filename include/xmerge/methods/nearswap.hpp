/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_NEARSWAP_HPP
#define XMERGE_METHODS_NEARSWAP_HPP

#include <cmath>
#include <string>

#include "../core/error.hpp"
#include "../ops/any.hpp"
#include "../ops/map.hpp"
#include "../simd/batch.hpp"
#include "options.hpp"
#include "registry.hpp"

namespace xmerge
{
    /**
     * NearSwap (mergekit `nearswap`): take the model's value where it is close
     * to the base and move only part of the way where it is far:
     *
     *     w = min(1, t / |base - x|)   (1 where they are equal),
     *     result = w * x + (1 - w) * base.
     *
     * One element-wise pass; t must be positive.
     */
    template <class B, class X>
    auto nearswap(const B& base, const X& model, double t);

    /// `nearswap` for the method registry: the base and exactly one model.
    template <class = void>
    method_info nearswap_method();

    namespace detail
    {
        struct nearswap_parameters
        {
            double t = 0.0;
        };

        struct nearswap_fn
        {
            template <class T>
            T operator()(const T& base, const T& x, const T& t) const noexcept
            {
                const T distance = simd::abs(base - x);
                // w = 1 where t / distance would exceed 1, including distance 0 and NaN
                const T w = simd::select(distance > t, t / distance, T(1.0f));
                return w * x + (T(1.0f) - w) * base;
            }
        };
    }

    /********************
     * Implementation   *
     ********************/

    template <class B, class X>
    inline auto nearswap(const B& base, const X& model, double t)
    {
        if (!(std::isfinite(t) && t > 0.0))
        {
            throw parameter_error(base.name(), "t", "must be positive and finite, got " + std::to_string(t));
        }
        return xmerge::map(detail::nearswap_fn{}, base, model, t);
    }

    template <class T>
    method_info nearswap_method()
    {
        using P = detail::nearswap_parameters;
        const auto options = option_set<P>().required(&P::t, "t", "similarity threshold");
        return xmerge::make_method("nearswap", "take the model where it is near the base, interpolate where it is far", true, options,
                           [](const method_inputs& in, const P& p) -> any_expression
                           {
                               if (in.models.size() != 1)
                               {
                                   throw parameter_error(in.tensor, "models", "nearswap needs the base and exactly one model, got " + std::to_string(in.models.size()));
                               }
                               return xmerge::nearswap(*in.base, in.models[0], p.t);
                           });
    }
}

#endif
