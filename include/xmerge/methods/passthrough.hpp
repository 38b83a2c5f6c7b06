/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_PASSTHROUGH_HPP
#define XMERGE_METHODS_PASSTHROUGH_HPP

#include <optional>
#include <string>
#include <vector>

#include "../ops/any.hpp"
#include "../ops/arithmetic.hpp"
#include "options.hpp"
#include "registry.hpp"

namespace xmerge
{
    /**
     * Passthrough (mergekit `passthrough`): one model's tensor, unchanged or
     * multiplied by `scale`. With layer slices it stacks layers of several
     * models ("frankenmerges"); with `scale` and filters it zeroes or damps
     * chosen tensors. A copy is the input's bits (converted only when the
     * output dtype differs); `x * 0` keeps the sign of zero, as torch does.
     */
    template <class E>
    any_expression passthrough(const E& model, std::optional<double> scale = std::nullopt);

    namespace detail
    {
        struct passthrough_parameters
        {
            std::optional<std::vector<double>> scale;
        };
    }

    /// `passthrough` for the method registry: exactly one model, optional per-model `scale`.
    template <class = void>
    method_info passthrough_method();

    /********************
     * Implementation   *
     ********************/

    template <class E>
    inline any_expression passthrough(const E& model, std::optional<double> scale)
    {
        if (!scale)
        {
            return model;
        }
        return xmerge::scale(model, static_cast<float>(*scale));
    }

    template <class T>
    method_info passthrough_method()
    {
        using P = detail::passthrough_parameters;
        const auto options = option_set<P>().per_model(&P::scale, "scale", "multiplier of the tensor (none: copied unchanged)");
        return xmerge::make_method("passthrough", "one model's tensors, optionally scaled (copies, layer stacking)", false, options,
                                   [](const method_inputs& in, const P& p) -> any_expression
                                   {
                                       if (in.models.size() != 1 || in.base)
                                       {
                                           throw parameter_error(in.tensor, "models",
                                                                 "method 'passthrough' takes exactly one model and no base_model, got "
                                                                     + std::to_string(in.models.size() + (in.base ? 1 : 0)));
                                       }
                                       std::optional<double> scale;
                                       if (p.scale)
                                       {
                                           scale = p.scale->front();
                                       }
                                       return xmerge::passthrough(in.models[0], scale);
                                   });
    }
}

#endif
