/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MODEL_LAYERS_HPP
#define XMERGE_MODEL_LAYERS_HPP

#include <algorithm>
#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <vector>

/**
 * @file
 * Layer indices read from tensor names, for parameters that vary across
 * depth ("gradients") and for layer slices. No architecture table is needed:
 * the layer of "model.layers.12.mlp.up_proj.weight" is the first dotted
 * component that is a plain decimal number (12), and the part before it
 * ("model.layers") names the layer stack. A model may have several stacks
 * (a vision tower and a language model), each counted on its own, as
 * mergekit does when it infers an architecture.
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
        /// The layer stack: the name up to the number, without the dot ("model.layers").
        std::string stack(const std::string& name) const;
    };

    /// The first all-digit dotted component of `name`, if any.
    inline std::optional<layer_name> find_layer(const std::string& name);

    /// Layers per stack among `names`: one more than the largest index seen under each stack.
    inline std::map<std::string, std::size_t> count_layers_by_stack(const std::vector<std::string>& names);

    /// One more than the largest layer index among `names` (0 when none has one).
    inline std::size_t count_layers(const std::vector<std::string>& names);

    /**
     * Position in [0, 1] of a tensor across the depth of its layer stack
     * (mergekit's t): layer i of n is at i / (n - 1), 1 when n == 1.
     * Tensors outside the layers (embeddings, final norms, output heads) are
     * at 0, as mergekit plans them (it evaluates gradients there at t = 0).
     */
    inline double depth_position(const std::string& name, std::size_t layers);

    /**
     * Whether a tensor outside the layers comes before them (input
     * embeddings: names containing "embed", "wte" or "wpe") rather than
     * after (final norms, output heads). Layer slices take the former from
     * their first slice and the latter from their last.
     */
    inline bool before_layers(const std::string& name);

    /********************
     * Implementation   *
     ********************/

    inline std::string layer_name::renumbered(const std::string& name, std::size_t layer) const
    {
        return name.substr(0, begin) + std::to_string(layer) + name.substr(end);
    }

    inline std::string layer_name::stack(const std::string& name) const
    {
        return begin == 0 ? std::string() : name.substr(0, begin - 1);
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

    inline std::map<std::string, std::size_t> count_layers_by_stack(const std::vector<std::string>& names)
    {
        std::map<std::string, std::size_t> out;
        for (const auto& name : names)
        {
            if (const auto l = find_layer(name))
            {
                std::size_t& n = out[l->stack(name)];
                n = std::max(n, l->index + 1);
            }
        }
        return out;
    }

    inline std::size_t count_layers(const std::vector<std::string>& names)
    {
        std::size_t n = 0;
        for (const auto& [_, count] : count_layers_by_stack(names))
        {
            n = std::max(n, count);
        }
        return n;
    }

    inline double depth_position(const std::string& name, std::size_t layers)
    {
        if (const auto l = find_layer(name))
        {
            return layers > 1 ? static_cast<double>(l->index) / static_cast<double>(layers - 1) : 1.0;
        }
        return 0.0;
    }

    inline bool before_layers(const std::string& name)
    {
        return name.find("embed") != std::string::npos || name.find("wte") != std::string::npos || name.find("wpe") != std::string::npos;
    }
}

#endif
