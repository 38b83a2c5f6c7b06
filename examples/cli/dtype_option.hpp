// A command-line option naming a float dtype: parsed as recipes spell dtypes,
// refused with the option's name otherwise.
#ifndef XMERGE_CLI_DTYPE_OPTION_HPP
#define XMERGE_CLI_DTYPE_OPTION_HPP

#include <optional>
#include <string>

#include <xmerge/core/error.hpp>
#include <xmerge/recipe/recipe.hpp>

namespace xmerge_cli
{
    /// The dtype `text` names; parameter_error naming `option` for anything else.
    inline xmerge::dtype dtype_option(const std::string& text, const char* option)
    {
        const auto d = xmerge::parse_dtype(text);
        if (!d)
        {
            throw xmerge::parameter_error("", option, "unknown dtype '" + text + "' (float32, bfloat16 or float16)");
        }
        return *d;
    }

    /// As dtype_option, with an empty `text` meaning the option was not given.
    inline std::optional<xmerge::dtype> optional_dtype_option(const std::string& text, const char* option)
    {
        if (text.empty())
        {
            return std::nullopt;
        }
        return xmerge_cli::dtype_option(text, option);
    }
}

#endif
