/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_RECIPE_RECIPE_HPP
#define XMERGE_RECIPE_RECIPE_HPP

#include <cctype>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../model/parameter_setting.hpp"

/**
 * @file
 * mergekit's YAML merge recipes, read into plain structures: the method,
 * the base model, the models (or layer slices) with their parameters, the
 * global parameters and dtypes. Binding to files and to the method
 * registry happens in recipe/bind.hpp.
 */

namespace xmerge
{
    /// A model entry of a recipe (or a source of a slice).
    struct recipe_model
    {
        /// Path of the checkpoint, as written.
        std::string model;
        std::map<std::string, parameter_setting> parameters;
        /// Further per-model tensors by kind ("fisher": path); an xmerge extension.
        std::map<std::string, std::string> extra;
        /// [first, last) layers, for slice sources.
        std::optional<std::pair<std::size_t, std::size_t>> layer_range;
    };

    /// An output slice of a recipe.
    struct recipe_slice
    {
        std::vector<recipe_model> sources;
        /// Overrides the recipe's base model for this slice.
        std::string base_model;
        std::map<std::string, parameter_setting> parameters;
    };

    /// How the row of one token is filled (a recipe's `tokenizer: tokens:` entry).
    struct recipe_token
    {
        enum class kind
        {
            model,        ///< the token's row in `model`
            model_token,  ///< row `token_id` of `model`, or the row of token `token` there
            zero          ///< zeros
        };
        kind source = kind::model;
        std::string model;
        std::optional<std::int64_t> token_id;
        std::string token;
        /// Replace every model's row, not only those of models lacking the token.
        bool force = false;
    };

    /// The tokenizer of the output and how embeddings are laid out on it (`tokenizer_source` or `tokenizer`).
    struct recipe_tokenizer
    {
        /// "union", "base", or the path of a model whose tokenizer is used.
        std::string source = "union";
        /// Per-token rules, by token; a token not in the vocabulary is added.
        std::map<std::string, recipe_token> tokens;
        /// Round the embedding rows up to a multiple of this (0: none).
        std::size_t pad_to_multiple_of = 0;
    };

    /// A parsed recipe.
    struct recipe
    {
        /// Where it was read from (messages, relative paths); empty for text.
        std::string path;
        std::string merge_method;
        /// Empty when there is none.
        std::string base_model;
        std::vector<recipe_model> models;
        std::vector<recipe_slice> slices;
        std::map<std::string, parameter_setting> parameters;
        /// mergekit's computation dtype; xmerge computes in float32 and uses it as the output dtype when out_dtype is absent.
        std::optional<dtype> compute_dtype;
        std::optional<dtype> out_dtype;
        /// Set when the output's vocabulary is built from the models' tokenizers.
        std::optional<recipe_tokenizer> tokenizer;
        /// Keys accepted for compatibility that change nothing here, with why.
        std::vector<std::string> ignored;
    };

    /// dtype from a recipe or command-line name: float32/fp32/f32/float, bfloat16/bf16, float16/fp16/f16/half.
    inline std::optional<dtype> parse_dtype(const std::string& name);

    /**
     * Parses a recipe. Unknown keys, wrong types, an empty model list, a
     * malformed parameter (a list mixing rules and numbers, say) throw
     * parameter_error naming `origin`, the key and the line.
     */
    inline recipe parse_recipe(const std::string& yaml, const std::string& origin = "recipe");

    /// Reads and parses a recipe file.
    inline recipe load_recipe(const std::string& path);

    /********************
     * Implementation   *
     ********************/

    inline std::optional<dtype> parse_dtype(const std::string& name)
    {
        if (name == "float32" || name == "fp32" || name == "f32" || name == "float" || name == "F32")
        {
            return dtype::float32;
        }
        if (name == "bfloat16" || name == "bf16" || name == "BF16")
        {
            return dtype::bfloat16;
        }
        if (name == "float16" || name == "fp16" || name == "f16" || name == "half" || name == "F16")
        {
            return dtype::float16;
        }
        return std::nullopt;
    }

    namespace detail
    {
        class recipe_parser
        {
        public:
            explicit recipe_parser(std::string origin) : m_origin(std::move(origin)) {}

            [[noreturn]] void fail(const YAML::Node& at, const std::string& key, const std::string& reason) const
            {
                std::string where;
                if (at.IsDefined() && at.Mark().line >= 0)
                {
                    where = " (line " + std::to_string(at.Mark().line + 1) + ")";
                }
                throw parameter_error("", key, reason + where, m_origin);
            }

            std::string text(const YAML::Node& n, const std::string& key) const
            {
                if (!n.IsScalar())
                {
                    fail(n, key, "must be a string");
                }
                return n.Scalar();
            }

            // A YAML scalar as a number, a flag or a string (quoted scalars stay strings).
            parameter_value scalar(const YAML::Node& n, const std::string& key) const
            {
                const std::string& s = n.Scalar();
                if (n.Tag() != "!")
                {
                    // YAML 1.1 booleans, as mergekit's PyYAML reads them.
                    for (const char* t : {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"})
                    {
                        if (s == t)
                        {
                            return true;
                        }
                    }
                    for (const char* f : {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"})
                    {
                        if (s == f)
                        {
                            return false;
                        }
                    }
                    std::string lower;
                    for (char c : s)
                    {
                        lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
                    }
                    if (lower == ".inf" || lower == "+.inf" || lower == "-.inf" || lower == ".nan")
                    {
                        fail(n, key, "value '" + s + "' is not finite");
                    }
                    if (!s.empty())
                    {
                        char* end = nullptr;
                        const double v = std::strtod(s.c_str(), &end);
                        if (end == s.c_str() + s.size())
                        {
                            if (!std::isfinite(v))
                            {
                                fail(n, key, "value '" + s + "' is not finite");
                            }
                            return v;
                        }
                    }
                }
                (void)key;
                return s;
            }

            parameter_setting setting(const YAML::Node& n, const std::string& key) const
            {
                if (n.IsScalar())
                {
                    return parameter_setting(scalar(n, key));
                }
                if (n.IsMap())
                {
                    return parameter_setting::rules({rule(n, key)});
                }
                if (!n.IsSequence() || n.size() == 0)
                {
                    fail(n, key, "must be a value, a list of values, or a list of {filter, value} rules");
                }
                bool maps = true, scalars = true;
                for (const auto& e : n)
                {
                    maps = maps && e.IsMap();
                    scalars = scalars && e.IsScalar();
                }
                if (maps)
                {
                    std::vector<parameter_rule> rules;
                    for (const auto& e : n)
                    {
                        rules.push_back(rule(e, key));
                    }
                    return parameter_setting::rules(std::move(rules));
                }
                if (!scalars)
                {
                    fail(n, key, "a list must hold only values or only {filter, value} rules");
                }
                std::vector<parameter_value> values;
                bool numbers = true;
                for (const auto& e : n)
                {
                    values.push_back(scalar(e, key));
                    numbers = numbers && std::holds_alternative<double>(values.back());
                }
                if (numbers)
                {
                    std::vector<double> g;
                    for (const auto& v : values)
                    {
                        g.push_back(std::get<double>(v));
                    }
                    return parameter_setting::gradient(std::move(g));
                }
                return parameter_setting::steps(std::move(values));
            }

            parameter_rule rule(const YAML::Node& n, const std::string& key) const
            {
                parameter_rule r;
                for (const auto& kv : n)
                {
                    const std::string k = kv.first.Scalar();
                    if (k != "filter" && k != "value")
                    {
                        fail(kv.first, key, "unknown key '" + k + "' in a rule (expected filter and value)");
                    }
                }
                if (!n["value"])
                {
                    fail(n, key, "a rule needs a value");
                }
                if (n["filter"] && !n["filter"].IsNull())
                {
                    r.filter = text(n["filter"], key);
                }
                const YAML::Node v = n["value"];
                if (v.IsMap() || (v.IsSequence() && v.size() > 0 && v[0].IsMap()))
                {
                    fail(v, key, "a rule's value must be a value or a list of values");
                }
                r.value = setting(v, key);
                return r;
            }

            std::map<std::string, parameter_setting> parameters(const YAML::Node& n, const std::string& where) const
            {
                std::map<std::string, parameter_setting> out;
                if (!n || n.IsNull())
                {
                    return out;
                }
                if (!n.IsMap())
                {
                    fail(n, where, "parameters must be a mapping of names to values");
                }
                for (const auto& kv : n)
                {
                    const std::string name = kv.first.Scalar();
                    if (kv.second.IsNull())
                    {
                        continue;  // mergekit treats an empty value as unset
                    }
                    out[name] = setting(kv.second, name);
                }
                return out;
            }

            recipe_model model_entry(const YAML::Node& n, bool slice_source) const
            {
                if (!n.IsMap())
                {
                    fail(n, slice_source ? "sources" : "models", "each entry must be a mapping with a 'model' key");
                }
                recipe_model m;
                for (const auto& kv : n)
                {
                    const std::string k = kv.first.Scalar();
                    if (k == "model")
                    {
                        m.model = text(kv.second, "model");
                    }
                    else if (k == "parameters")
                    {
                        m.parameters = parameters(kv.second, "parameters");
                    }
                    else if (k == "extra")
                    {
                        if (!kv.second.IsMap())
                        {
                            fail(kv.second, "extra", "must map tensor kinds to checkpoint paths");
                        }
                        for (const auto& e : kv.second)
                        {
                            m.extra[e.first.Scalar()] = text(e.second, "extra");
                        }
                    }
                    else if (k == "layer_range" && slice_source)
                    {
                        const YAML::Node r = kv.second;
                        if (!r.IsSequence() || r.size() != 2)
                        {
                            fail(r, "layer_range", "must be [first, last) as two integers");
                        }
                        std::size_t a = 0, b = 0;
                        try
                        {
                            const long long x = r[0].as<long long>(), y = r[1].as<long long>();
                            if (x < 0 || y < x)
                            {
                                fail(r, "layer_range", "must be [first, last) with 0 <= first <= last");
                            }
                            a = static_cast<std::size_t>(x);
                            b = static_cast<std::size_t>(y);
                        }
                        catch (const YAML::Exception&)
                        {
                            fail(r, "layer_range", "must be two integers");
                        }
                        m.layer_range = std::make_pair(a, b);
                    }
                    else
                    {
                        fail(kv.first, k, std::string("unknown key in a ") + (slice_source ? "slice source" : "model entry")
                                              + (slice_source ? " (expected model, layer_range, parameters)" : " (expected model, parameters, extra)"));
                    }
                }
                if (m.model.empty())
                {
                    fail(n, "model", "missing or empty");
                }
                if (slice_source && !m.layer_range)
                {
                    fail(n, "layer_range", "every slice source needs a layer_range");
                }
                return m;
            }

            recipe parse(const std::string& yaml) const
            {
                YAML::Node root;
                try
                {
                    root = YAML::Load(yaml);
                }
                catch (const YAML::Exception& e)
                {
                    throw parameter_error("", "", std::string("not valid YAML: ") + e.what(), m_origin);
                }
                if (!root.IsMap())
                {
                    throw parameter_error("", "", "a recipe must be a YAML mapping", m_origin);
                }
                recipe r;
                for (const auto& kv : root)
                {
                    const std::string k = kv.first.Scalar();
                    const YAML::Node v = kv.second;
                    if (k == "merge_method")
                    {
                        r.merge_method = text(v, k);
                    }
                    else if (k == "base_model")
                    {
                        if (!v.IsNull())
                        {
                            r.base_model = text(v, k);
                        }
                    }
                    else if (k == "models")
                    {
                        if (!v.IsSequence())
                        {
                            fail(v, k, "must be a list of model entries");
                        }
                        for (const auto& e : v)
                        {
                            r.models.push_back(model_entry(e, false));
                        }
                    }
                    else if (k == "slices")
                    {
                        if (!v.IsSequence())
                        {
                            fail(v, k, "must be a list of slices");
                        }
                        for (const auto& s : v)
                        {
                            r.slices.push_back(slice(s));
                        }
                    }
                    else if (k == "parameters")
                    {
                        r.parameters = parameters(v, k);
                    }
                    else if (k == "dtype" || k == "out_dtype")
                    {
                        if (v.IsNull())
                        {
                            continue;
                        }
                        const auto d = parse_dtype(text(v, k));
                        if (!d)
                        {
                            fail(v, k, "unknown dtype '" + v.Scalar() + "' (float32, bfloat16 or float16)");
                        }
                        (k == "dtype" ? r.compute_dtype : r.out_dtype) = d;
                    }
                    else if (k == "tokenizer_source" || k == "tokenizer")
                    {
                        if (v.IsNull())
                        {
                            continue;
                        }
                        if (r.tokenizer)
                        {
                            fail(v, k, "give tokenizer_source or tokenizer, not both");
                        }
                        r.tokenizer = k == "tokenizer" ? tokenizer(v) : recipe_tokenizer{text(v, k), {}, 0};
                    }
                    else if (k == "chat_template")
                    {
                        r.ignored.push_back(k + ": chat templates are not set; the tokenizer's own template is kept");
                    }
                    else if (k == "name")
                    {
                        continue;
                    }
                    else if (k == "modules")
                    {
                        fail(v, k, "multi-module recipes are not supported; use models or slices");
                    }
                    else
                    {
                        fail(kv.first, k, "unknown key (expected merge_method, base_model, models, slices, parameters, dtype, out_dtype, tokenizer_source, tokenizer)");
                    }
                }
                if (r.merge_method.empty())
                {
                    throw parameter_error("", "merge_method", "missing", m_origin);
                }
                if (r.models.empty() == r.slices.empty())
                {
                    throw parameter_error("", "models", "a recipe needs either a non-empty 'models' list or 'slices', not both", m_origin);
                }
                // mergekit's int8_mask only saves memory there; masks here never take a byte per element.
                if (r.parameters.erase("int8_mask"))
                {
                    r.ignored.push_back("int8_mask: masks are never stored here");
                }
                return r;
            }

            recipe_tokenizer tokenizer(const YAML::Node& n) const
            {
                if (!n.IsMap())
                {
                    fail(n, "tokenizer", "must be a mapping with source, tokens, pad_to_multiple_of");
                }
                recipe_tokenizer t;
                for (const auto& kv : n)
                {
                    const std::string k = kv.first.Scalar();
                    if (k == "source")
                    {
                        t.source = text(kv.second, "tokenizer.source");
                    }
                    else if (k == "pad_to_multiple_of")
                    {
                        if (kv.second.IsNull())
                        {
                            continue;
                        }
                        const parameter_value v = scalar(kv.second, "tokenizer.pad_to_multiple_of");
                        const double* d = std::get_if<double>(&v);
                        if (d == nullptr || *d < 1 || *d != std::floor(*d) || *d > 1e9)
                        {
                            fail(kv.second, "tokenizer.pad_to_multiple_of", "must be a positive integer");
                        }
                        t.pad_to_multiple_of = static_cast<std::size_t>(*d);
                    }
                    else if (k == "tokens")
                    {
                        if (kv.second.IsNull())
                        {
                            continue;
                        }
                        if (!kv.second.IsMap())
                        {
                            fail(kv.second, "tokenizer.tokens", "must map tokens to {source, force}");
                        }
                        for (const auto& e : kv.second)
                        {
                            t.tokens[e.first.Scalar()] = token_rule(e.second, e.first.Scalar());
                        }
                    }
                    else
                    {
                        fail(kv.first, k, "unknown key in tokenizer (expected source, tokens, pad_to_multiple_of)");
                    }
                }
                return t;
            }

            recipe_token token_rule(const YAML::Node& n, const std::string& token) const
            {
                const std::string key = "tokenizer.tokens." + token;
                if (!n.IsMap())
                {
                    fail(n, key, "must be a mapping with source and force");
                }
                recipe_token t;
                bool has_source = false;
                for (const auto& kv : n)
                {
                    const std::string k = kv.first.Scalar();
                    if (k == "force")
                    {
                        const parameter_value v = scalar(kv.second, key + ".force");
                        if (!std::holds_alternative<bool>(v))
                        {
                            fail(kv.second, key + ".force", "must be true or false");
                        }
                        t.force = std::get<bool>(v);
                    }
                    else if (k == "source")
                    {
                        has_source = true;
                        const YAML::Node src = kv.second;
                        if (src.IsScalar())
                        {
                            t.source = recipe_token::kind::model;
                            t.model = src.Scalar();
                            continue;
                        }
                        if (!src.IsMap() || !src["kind"])
                        {
                            fail(src, key + ".source", "must be a model, {kind: zero} or {kind: model_token, model, token_id | token}");
                        }
                        const std::string kind = text(src["kind"], key + ".source.kind");
                        if (kind == "zero")
                        {
                            t.source = recipe_token::kind::zero;
                        }
                        else if (kind == "model_token")
                        {
                            t.source = recipe_token::kind::model_token;
                            if (!src["model"])
                            {
                                fail(src, key + ".source.model", "missing");
                            }
                            t.model = text(src["model"], key + ".source.model");
                            if (src["token_id"].IsDefined() == src["token"].IsDefined())
                            {
                                fail(src, key + ".source", "give exactly one of token_id and token");
                            }
                            if (src["token_id"])
                            {
                                try
                                {
                                    t.token_id = src["token_id"].as<std::int64_t>();
                                }
                                catch (const YAML::Exception&)
                                {
                                    fail(src["token_id"], key + ".source.token_id", "must be an integer");
                                }
                            }
                            else
                            {
                                t.token = text(src["token"], key + ".source.token");
                            }
                        }
                        else
                        {
                            fail(src["kind"], key + ".source.kind", "unknown kind '" + kind + "' (zero or model_token)");
                        }
                    }
                    else
                    {
                        fail(kv.first, k, "unknown key in a token rule (expected source, force)");
                    }
                }
                if (!has_source)
                {
                    fail(n, key + ".source", "missing");
                }
                return t;
            }

            recipe_slice slice(const YAML::Node& n) const
            {
                if (!n.IsMap())
                {
                    fail(n, "slices", "each slice must be a mapping with 'sources'");
                }
                recipe_slice s;
                for (const auto& kv : n)
                {
                    const std::string k = kv.first.Scalar();
                    if (k == "sources")
                    {
                        if (!kv.second.IsSequence() || kv.second.size() == 0)
                        {
                            fail(kv.second, k, "must be a non-empty list");
                        }
                        for (const auto& e : kv.second)
                        {
                            s.sources.push_back(model_entry(e, true));
                        }
                    }
                    else if (k == "base_model")
                    {
                        s.base_model = text(kv.second, k);
                    }
                    else if (k == "parameters")
                    {
                        s.parameters = parameters(kv.second, k);
                    }
                    else
                    {
                        fail(kv.first, k, "unknown key in a slice (expected sources, base_model, parameters)");
                    }
                }
                if (s.sources.empty())
                {
                    fail(n, "sources", "a slice needs sources");
                }
                return s;
            }

        private:
            std::string m_origin;
        };
    }

    inline recipe parse_recipe(const std::string& yaml, const std::string& origin)
    {
        recipe r = detail::recipe_parser(origin).parse(yaml);
        r.path = origin;
        return r;
    }

    inline recipe load_recipe(const std::string& path)
    {
        std::ifstream in(path, std::ios::binary);
        if (!in)
        {
            throw parameter_error("", "", "cannot open the recipe", path);
        }
        std::stringstream s;
        s << in.rdbuf();
        return parse_recipe(s.str(), path);
    }
}

#endif
