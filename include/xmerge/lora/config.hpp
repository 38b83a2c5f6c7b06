/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LORA_CONFIG_HPP
#define XMERGE_LORA_CONFIG_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <fstream>
#include <iterator>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "layer.hpp"

/**
 * @file
 * PEFT's adapter_config.json for LoRA: the fields that decide how an
 * adapter's tensors fold into a model, read and written, and PEFT's rule
 * for per-module ranks and alphas.
 */

namespace xmerge::lora
{
    /// The LoRA fields of adapter_config.json (PEFT's names and defaults).
    struct adapter_config
    {
        std::size_t r = 8;
        double lora_alpha = 8.0;
        bool use_rslora = false;
        bool use_dora = false;
        /// The base stores its weights [in, out] (GPT-2's Conv1D).
        bool fan_in_fan_out = false;
        /// lora_B carries a bias whose scaled value is added to the base bias.
        bool lora_bias = false;
        /// "none", "all" or "lora_only": which base biases the adapter saves in full.
        std::string bias = "none";
        /// Module names (a module matches when its name is one of them or ends with "." + one).
        std::vector<std::string> target_modules;
        /// Set instead of target_modules when the file gives one regular expression.
        std::string target_modules_regex;
        /// Per-module rank and alpha: regular expressions over module names, first match wins (file order).
        std::vector<std::pair<std::string, std::size_t>> rank_pattern;
        std::vector<std::pair<std::string, double>> alpha_pattern;
        /// Modules whose tensors the adapter holds in full.
        std::vector<std::string> modules_to_save;
        std::string base_model_name_or_path;
        /// Every other field, kept as read and written back unchanged.
        nlohmann::ordered_json other = nlohmann::ordered_json::object();

        /// The rank of a module ("model.layers.0.self_attn.q_proj"): rank_pattern's first match, else r.
        std::size_t rank_for(const std::string& module) const;
        /// The alpha of a module: alpha_pattern's first match, else lora_alpha.
        double alpha_for(const std::string& module) const;
        /// The scale of a module's update (see scaling()).
        double scale_for(const std::string& module) const { return scaling(alpha_for(module), rank_for(module), use_rslora); }
    };

    /**
     * PEFT's pattern rule: `pattern` (a regular expression) matches `module`
     * when the whole name is `(.*\.)?(pattern)`, i.e. the pattern matches the
     * name or a dot-separated tail of it.
     */
    inline bool pattern_matches(const std::string& pattern, const std::string& module);

    namespace detail
    {
        /// Patterns compiled once, for looking up many modules (first match in order wins).
        template <class Value>
        class pattern_table
        {
        public:
            explicit pattern_table(const std::vector<std::pair<std::string, Value>>& patterns)
            {
                for (const auto& [pattern, value] : patterns)
                {
                    m_entries.emplace_back(std::regex("(.*\\.)?(" + pattern + ")"), value);
                }
            }

            /// The value of the first pattern matching `module`, else `fallback`.
            Value find(const std::string& module, Value fallback) const
            {
                for (const auto& [re, value] : m_entries)
                {
                    if (std::regex_match(module, re))
                    {
                        return value;
                    }
                }
                return fallback;
            }

        private:
            std::vector<std::pair<std::regex, Value>> m_entries;
        };
    }

    /// `name` with regular-expression characters escaped, a pattern matching only that name (and tails equal to it).
    inline std::string escape_pattern(const std::string& name);

    /// Parses adapter_config.json text; throws io_error naming `origin` and the field at fault.
    inline adapter_config parse_adapter_config(const std::string& text, const std::string& origin);

    /// Reads and parses an adapter_config.json file.
    inline adapter_config read_adapter_config(const std::string& path);

    /// The JSON text of a config (PEFT's field names, 2-space indent).
    inline std::string to_json(const adapter_config& config);

    /********************
     * Implementation   *
     ********************/

    inline bool pattern_matches(const std::string& pattern, const std::string& module)
    {
        return std::regex_match(module, std::regex("(.*\\.)?(" + pattern + ")"));
    }

    inline std::string escape_pattern(const std::string& name)
    {
        std::string out;
        for (char c : name)
        {
            if (std::string(".^$|()[]{}*+?\\").find(c) != std::string::npos)
            {
                out += '\\';
            }
            out += c;
        }
        return out;
    }

    inline std::size_t adapter_config::rank_for(const std::string& module) const
    {
        return detail::pattern_table<std::size_t>(rank_pattern).find(module, r);
    }

    inline double adapter_config::alpha_for(const std::string& module) const
    {
        return detail::pattern_table<double>(alpha_pattern).find(module, lora_alpha);
    }

    namespace detail
    {
        using json = nlohmann::ordered_json;

        [[noreturn]] inline void config_fail(const std::string& origin, const std::string& field, const std::string& reason)
        {
            throw io_error(origin, "", "field '" + field + "': " + reason);
        }

        inline std::size_t positive_integer(const json& v, const std::string& origin, const std::string& field)
        {
            if (!v.is_number_integer() || v.get<long long>() <= 0)
            {
                config_fail(origin, field, "must be a positive integer, got " + v.dump());
            }
            return static_cast<std::size_t>(v.get<long long>());
        }

        inline double finite_number(const json& v, const std::string& origin, const std::string& field)
        {
            if (!v.is_number() || !std::isfinite(v.get<double>()))
            {
                config_fail(origin, field, "must be a finite number, got " + v.dump());
            }
            return v.get<double>();
        }

        inline bool flag(const json& v, const std::string& origin, const std::string& field)
        {
            if (v.is_null())
            {
                return false;
            }
            if (!v.is_boolean())
            {
                config_fail(origin, field, "must be true or false, got " + v.dump());
            }
            return v.get<bool>();
        }

        inline std::vector<std::string> string_list(const json& v, const std::string& origin, const std::string& field)
        {
            std::vector<std::string> out;
            if (v.is_null())
            {
                return out;
            }
            if (!v.is_array())
            {
                config_fail(origin, field, "must be a list of module names, got " + v.dump());
            }
            for (const auto& e : v)
            {
                if (!e.is_string())
                {
                    config_fail(origin, field, "holds a value that is not a string: " + e.dump());
                }
                out.push_back(e.get<std::string>());
            }
            return out;
        }

        inline void check_pattern(const std::string& pattern, const std::string& origin, const std::string& field)
        {
            try
            {
                std::regex check("(.*\\.)?(" + pattern + ")");
            }
            catch (const std::regex_error& e)
            {
                config_fail(origin, field, "key '" + pattern + "' is not a regular expression this library can use: " + e.what());
            }
        }

        template <class Value, class Read>
        std::vector<std::pair<std::string, Value>> pattern_map(const json& v, const std::string& origin, const std::string& field, Read&& read)
        {
            std::vector<std::pair<std::string, Value>> out;
            if (v.is_null())
            {
                return out;
            }
            if (!v.is_object())
            {
                config_fail(origin, field, "must be an object from module patterns to values, got " + v.dump());
            }
            for (auto it = v.begin(); it != v.end(); ++it)
            {
                check_pattern(it.key(), origin, field);
                out.emplace_back(it.key(), read(it.value(), origin, field + "." + it.key()));
            }
            return out;
        }

        inline std::string optional_string(const json& v, const std::string& origin, const std::string& field, const std::string& fallback)
        {
            if (v.is_null())
            {
                return fallback;
            }
            if (!v.is_string())
            {
                config_fail(origin, field, "must be a string, got " + v.dump());
            }
            return v.get<std::string>();
        }
    }

    inline adapter_config parse_adapter_config(const std::string& text, const std::string& origin)
    {
        using detail::json;
        json j;
        try
        {
            j = json::parse(text);
        }
        catch (const nlohmann::json::exception& e)
        {
            throw io_error(origin, "", std::string("not valid JSON: ") + e.what());
        }
        if (!j.is_object())
        {
            throw io_error(origin, "", "adapter_config.json must hold a JSON object");
        }
        const json null_value;
        const auto field = [&](const char* name) -> const json& { return j.contains(name) ? j[name] : null_value; };
        const std::string peft_type = detail::optional_string(field("peft_type"), origin, "peft_type", "LORA");
        if (peft_type != "LORA")
        {
            detail::config_fail(origin, "peft_type", "is '" + peft_type + "'; only LORA adapters (LoRA, rsLoRA, DoRA) can be read");
        }
        adapter_config c;
        if (!field("r").is_null())
        {
            c.r = detail::positive_integer(field("r"), origin, "r");
        }
        if (!field("lora_alpha").is_null())
        {
            c.lora_alpha = detail::finite_number(field("lora_alpha"), origin, "lora_alpha");
        }
        c.use_rslora = detail::flag(field("use_rslora"), origin, "use_rslora");
        c.use_dora = detail::flag(field("use_dora"), origin, "use_dora");
        c.fan_in_fan_out = detail::flag(field("fan_in_fan_out"), origin, "fan_in_fan_out");
        c.lora_bias = detail::flag(field("lora_bias"), origin, "lora_bias");
        c.bias = detail::optional_string(field("bias"), origin, "bias", "none");
        if (c.bias != "none" && c.bias != "all" && c.bias != "lora_only")
        {
            detail::config_fail(origin, "bias", "must be \"none\", \"all\" or \"lora_only\", got \"" + c.bias + "\"");
        }
        if (field("target_modules").is_string())
        {
            c.target_modules_regex = field("target_modules").get<std::string>();
            detail::check_pattern(c.target_modules_regex, origin, "target_modules");
        }
        else
        {
            c.target_modules = detail::string_list(field("target_modules"), origin, "target_modules");
        }
        c.rank_pattern = detail::pattern_map<std::size_t>(field("rank_pattern"), origin, "rank_pattern", detail::positive_integer);
        c.alpha_pattern = detail::pattern_map<double>(field("alpha_pattern"), origin, "alpha_pattern", detail::finite_number);
        c.modules_to_save = detail::string_list(field("modules_to_save"), origin, "modules_to_save");
        c.base_model_name_or_path = detail::optional_string(field("base_model_name_or_path"), origin, "base_model_name_or_path", "");
        static const char* const known[] = {"peft_type",    "r",      "lora_alpha",     "use_rslora",   "use_dora",      "fan_in_fan_out",         "lora_bias",
                                            "bias",         "target_modules", "rank_pattern", "alpha_pattern", "modules_to_save", "base_model_name_or_path"};
        for (auto it = j.begin(); it != j.end(); ++it)
        {
            if (std::find(std::begin(known), std::end(known), it.key()) == std::end(known))
            {
                c.other[it.key()] = it.value();
            }
        }
        return c;
    }

    inline adapter_config read_adapter_config(const std::string& path)
    {
        std::ifstream in(path, std::ios::binary);
        if (!in)
        {
            throw io_error(path, "", "cannot open the adapter configuration");
        }
        const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        return parse_adapter_config(text, path);
    }

    inline std::string to_json(const adapter_config& c)
    {
        using detail::json;
        // Whole numbers as integers, the way PEFT writes them.
        const auto number = [](double v) { return std::floor(v) == v && std::fabs(v) < 1e15 ? json(static_cast<long long>(v)) : json(v); };
        json j = json::object();
        j["peft_type"] = "LORA";
        j["base_model_name_or_path"] = c.base_model_name_or_path.empty() ? json() : json(c.base_model_name_or_path);
        j["r"] = c.r;
        j["lora_alpha"] = number(c.lora_alpha);
        j["use_rslora"] = c.use_rslora;
        j["use_dora"] = c.use_dora;
        j["fan_in_fan_out"] = c.fan_in_fan_out;
        j["lora_bias"] = c.lora_bias;
        j["bias"] = c.bias;
        j["target_modules"] = c.target_modules_regex.empty() ? json(c.target_modules) : json(c.target_modules_regex);
        json ranks = json::object(), alphas = json::object();
        for (const auto& [pattern, rank] : c.rank_pattern)
        {
            ranks[pattern] = rank;
        }
        for (const auto& [pattern, alpha] : c.alpha_pattern)
        {
            alphas[pattern] = number(alpha);
        }
        j["rank_pattern"] = ranks;
        j["alpha_pattern"] = alphas;
        j["modules_to_save"] = c.modules_to_save.empty() ? json() : json(c.modules_to_save);
        for (auto it = c.other.begin(); it != c.other.end(); ++it)
        {
            j[it.key()] = it.value();
        }
        return j.dump(2) + "\n";
    }
}

#endif
