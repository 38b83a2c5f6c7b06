/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_RECIPE_MODEL_REFERENCE_HPP
#define XMERGE_RECIPE_MODEL_REFERENCE_HPP

#include <filesystem>
#include <optional>
#include <string>
#include <system_error>
#include <utility>

#include "../core/error.hpp"

/**
 * @file
 * mergekit's model references: `MODEL` or `MODEL+ADAPTER`, a checkpoint
 * with a PEFT adapter to fold into it before merging.
 */

namespace xmerge
{
    /// The two paths of a `MODEL+ADAPTER` reference.
    struct adapter_reference
    {
        std::string model;
        std::string adapter;
    };

    /**
     * Splits `reference` as mergekit does: exactly one '+', both sides
     * non-empty. A reference that names an existing path (a directory with a
     * '+' in its name) is a plain model. Returns nullopt for a plain model;
     * throws parameter_error naming `origin` for a malformed reference.
     */
    inline std::optional<adapter_reference> split_adapter_reference(const std::string& reference, const std::string& origin = "");

    /********************
     * Implementation   *
     ********************/

    inline std::optional<adapter_reference> split_adapter_reference(const std::string& reference, const std::string& origin)
    {
        const auto plus = reference.find('+');
        std::error_code ec;
        if (plus == std::string::npos || std::filesystem::exists(reference, ec))
        {
            return std::nullopt;
        }
        if (reference.find('+', plus + 1) != std::string::npos || plus == 0 || plus + 1 == reference.size())
        {
            throw parameter_error("", "model", "'" + reference + "' is not a model reference: expected MODEL or MODEL+ADAPTER, with one '+'", origin);
        }
        return adapter_reference{reference.substr(0, plus), reference.substr(plus + 1)};
    }
}

#endif
