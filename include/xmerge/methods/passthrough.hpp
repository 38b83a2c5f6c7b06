/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_PASSTHROUGH_HPP
#define XMERGE_METHODS_PASSTHROUGH_HPP

#include <optional>
#include <string>

#include "../ops/any.hpp"
#include "../ops/arithmetic.hpp"
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

    /// `passthrough` for the method registry: exactly one model, optional per-model `scale`.
    inline method_info passthrough_method();

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

    inline method_info passthrough_method()
    {
        method_info m;
        m.name = "passthrough";
        m.summary = "one model's tensors, optionally scaled (copies, layer stacking)";
        m.parameters = {{"scale", parameter_scope::per_model, std::nullopt, "multiplier of the tensor (none: copied unchanged)", true}};
        m.build = [](const method_inputs& in, const parameters& p) -> any_expression
        {
            if (in.models.size() != 1 || in.base)
            {
                throw parameter_error(in.tensor, "models", "method 'passthrough' takes exactly one model and no base_model, got "
                                                               + std::to_string(in.models.size() + (in.base ? 1 : 0)));
            }
            std::optional<double> scale;
            if (p.has("scale"))
            {
                scale = p.per_model("scale", 1).front();
            }
            return passthrough(in.models[0], scale);
        };
        return m;
    }
}

#endif
