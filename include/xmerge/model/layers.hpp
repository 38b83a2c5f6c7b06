/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MODEL_LAYERS_HPP
#define XMERGE_MODEL_LAYERS_HPP

#include <algorithm>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

/**
 * @file
 * Layer indices read from tensor names, for parameters that vary across
 * depth ("gradients") and for layer slices. No architecture table is needed:
 * the layer of "model.layers.12.mlp.up_proj.weight" is the first dotted
 * component that is a plain decimal number (12).
 */

namespace xmerge
{
    /// Where a dotted tensor name holds its layer index.
    struct layer_name
    {
        std::size_t index = 0;
        /// Character range of the number in the name.
        std::size_t begin = 0;
        std::size_t end = 0;

        /// The name with the layer number replaced by `layer`.
        std::string renumbered(const std::string& name, std::size_t layer) const;
    };

    /// The first all-digit dotted component of `name`, if any.
    inline std::optional<layer_name> find_layer(const std::string& name);

    /**
     * Position in [0, 1] of a tensor across the depth of a model with
     * `layers` layers (mergekit's t): layer i of n is at i / (n - 1) (1 when
     * n == 1). Tensors outside the layers sit at 0 when their name contains
     * "embed", "wte" or "wpe" (input embeddings come first) and at 1 otherwise
     * (final norms and output heads).
     */
    inline double depth_position(const std::string& name, std::size_t layers);

    /// One more than the largest layer index among `names` (0 when none has one).
    inline std::size_t count_layers(const std::vector<std::string>& names);

    /********************
     * Implementation   *
     ********************/

    inline std::string layer_name::renumbered(const std::string& name, std::size_t layer) const
    {
        return name.substr(0, begin) + std::to_string(layer) + name.substr(end);
    }

    inline std::optional<layer_name> find_layer(const std::string& name)
    {
        std::size_t start = 0;
        while (start <= name.size())
        {
            std::size_t stop = name.find('.', start);
            if (stop == std::string::npos)
            {
                stop = name.size();
            }
            // A component of 1-9 digits (no sign, no overflow): a layer index.
            const std::size_t len = stop - start;
            if (len > 0 && len < 10 && name.find_first_not_of("0123456789", start) >= stop)
            {
                return layer_name{static_cast<std::size_t>(std::stoul(name.substr(start, len))), start, stop};
            }
            start = stop + 1;
        }
        return std::nullopt;
    }

    inline double depth_position(const std::string& name, std::size_t layers)
    {
        if (const auto l = find_layer(name))
        {
            return layers > 1 ? static_cast<double>(l->index) / static_cast<double>(layers - 1) : 1.0;
        }
        const bool input_side = name.find("embed") != std::string::npos || name.find("wte") != std::string::npos || name.find("wpe") != std::string::npos;
        return input_side ? 0.0 : 1.0;
    }

    inline std::size_t count_layers(const std::vector<std::string>& names)
    {
        std::size_t n = 0;
        for (const auto& name : names)
        {
            if (const auto l = find_layer(name))
            {
                n = std::max(n, l->index + 1);
            }
        }
        return n;
    }
}

#endif
