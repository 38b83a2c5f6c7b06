/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_OPTIONS_HPP
#define XMERGE_METHODS_OPTIONS_HPP

#include <cmath>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "registry.hpp"

/**
 * @file
 * Typed method parameters: a method's options struct is described once,
 * member by member (name, scope, help; the default is the member's value in
 * a defaults instance), and that one description gives both the registry's
 * parameter specs and the parsing of given values into the struct:
 *
 *     struct magmax_parameters
 *     {
 *         double lambda = 1.0;
 *     };
 *
 *     inline method_info magmax_method()
 *     {
 *         const auto options = option_set<magmax_parameters>().global(&magmax_parameters::lambda, "lambda", "scale of the selected task vector");
 *         return make_method("magmax", "per element the task-vector entry of largest magnitude", true, options,
 *                            [](const method_inputs& in, const magmax_parameters& p) -> any_expression { return magmax(in.models, *in.base, p.lambda); });
 *     }
 *
 * A name is written in one place only; a name declared twice, or an alias
 * of a name not declared, throws parameter_error when the description is
 * built, i.e. when the registry is.
 */

namespace xmerge
{
    namespace detail
    {
        template <class T>
        struct is_optional : std::false_type
        {
        };
        template <class T>
        struct is_optional<std::optional<T>> : std::true_type
        {
        };
    }

    /// The parameters of one method, described member by member over its options struct.
    template <class Options>
    class option_set
    {
    public:
        /// `defaults` holds every parameter's default value.
        explicit option_set(Options defaults = Options{}) : m_defaults(std::move(defaults)) {}

        /// A global number (double, std::size_t), flag (bool) or text (std::string) defaulting to its value in the defaults.
        template <class T>
        option_set& global(T Options::*member, std::string name, std::string help);

        /// A global number, flag or text that must be given.
        template <class T>
        option_set& required(T Options::*member, std::string name, std::string help);

        /// A global number, flag or text absent unless given.
        template <class T>
        option_set& optional(std::optional<T> Options::*member, std::string name, std::string help);

        /// A global choice among named values (an enum), given as text, defaulting to its value in the defaults.
        template <class T, class = std::enable_if_t<!detail::is_optional<T>::value>>
        option_set& choice(T Options::*member, std::string name, std::string help, std::vector<std::pair<std::string, T>> values);

        /// A global choice absent unless given.
        template <class T>
        option_set& choice(std::optional<T> Options::*member, std::string name, std::string help, std::vector<std::pair<std::string, T>> values);

        /**
         * One number per model (or one for all), into a std::vector<double>
         * member: required when the member is empty in the defaults, else its
         * one value is the default. Parsed to one value per model.
         */
        option_set& per_model(std::vector<double> Options::*member, std::string name, std::string help);

        /// One number per model (or one for all), absent unless given.
        option_set& per_model(std::optional<std::vector<double>> Options::*member, std::string name, std::string help);

        /// `name` accepted instead of the parameter `target`, and used when both are given.
        option_set& alias(std::string name, std::string target);

        /// The registry's view: one spec per parameter and alias, in declaration order.
        std::vector<parameter_spec> specs() const;

        /// The options from given values (absent ones keep their defaults); `models` sizes per-model values.
        Options parse(const parameters& given, std::size_t models) const;

    private:
        using reader = std::function<void(Options&, const parameters&, const std::string&, std::size_t)>;

        struct entry
        {
            parameter_spec spec;
            std::string target;  // for an alias: the parameter it stands for
            bool required = false;
            reader read;
        };

        option_set& add(parameter_spec spec, bool required, reader read);
        const entry* find(const std::string& name) const;

        template <class T>
        static T read_value(const parameters& given, const std::string& name);
        template <class T>
        static parameter_value to_value(const T& v);
        template <class T>
        static reader choice_reader(std::function<void(Options&, T)> set, std::vector<std::pair<std::string, T>> values);

        Options m_defaults;
        std::vector<entry> m_entries;
    };

    /**
     * A registry entry whose parameters are described by `options` and whose
     * expression is `build(inputs, parsed options)`.
     */
    template <class Options, class Build>
    method_info make_method(std::string name, std::string summary, bool needs_base, option_set<Options> options, Build build);

    /**
     * A registry entry with several results per tensor (one model per task):
     * `build(inputs, options)` gives the one its options select, and
     * `build_all(inputs, options)` every result, named (a std::vector<method_output>).
     */
    template <class Options, class Build, class BuildAll>
    method_info make_method_with_outputs(std::string name, std::string summary, bool needs_base, option_set<Options> options, Build build, BuildAll build_all);

    /********************
     * Implementation   *
     ********************/

    template <class Options>
    inline option_set<Options>& option_set<Options>::add(parameter_spec spec, bool required, reader read)
    {
        if (!detail::is_parameter_name(spec.name))
        {
            throw parameter_error("", spec.name, "is not a parameter name (lower-case letters, digits and underscores)");
        }
        if (find(spec.name))
        {
            throw parameter_error("", spec.name, "is declared twice in a method's options");
        }
        m_entries.push_back({std::move(spec), {}, required, std::move(read)});
        return *this;
    }

    template <class Options>
    inline auto option_set<Options>::find(const std::string& name) const -> const entry*
    {
        for (const auto& e : m_entries)
        {
            if (e.spec.name == name)
            {
                return &e;
            }
        }
        return nullptr;
    }

    template <class Options>
    template <class T>
    inline T option_set<Options>::read_value(const parameters& given, const std::string& name)
    {
        if constexpr (std::is_same<T, bool>::value)
        {
            return given.flag(name);
        }
        else if constexpr (std::is_same<T, std::string>::value)
        {
            return given.text(name);
        }
        else if constexpr (std::is_same<T, std::size_t>::value)
        {
            const double v = given.number(name);
            if (v < 0.0 || v != std::floor(v))
            {
                throw parameter_error(given.tensor_name(), name, "must be a non-negative integer");
            }
            return static_cast<std::size_t>(v);
        }
        else
        {
            static_assert(std::is_same<T, double>::value, "a parameter is a double, std::size_t, bool or std::string");
            return given.number(name);
        }
    }

    template <class Options>
    template <class T>
    inline parameter_value option_set<Options>::to_value(const T& v)
    {
        if constexpr (std::is_same<T, std::size_t>::value)
        {
            return static_cast<double>(v);
        }
        else
        {
            return v;
        }
    }

    template <class Options>
    template <class T>
    inline option_set<Options>& option_set<Options>::global(T Options::*member, std::string name, std::string help)
    {
        return add({std::move(name), parameter_scope::global, to_value(m_defaults.*member), std::move(help)}, false,
                   [member](Options& o, const parameters& given, const std::string& as, std::size_t) { o.*member = read_value<T>(given, as); });
    }

    template <class Options>
    template <class T>
    inline option_set<Options>& option_set<Options>::required(T Options::*member, std::string name, std::string help)
    {
        return add({std::move(name), parameter_scope::global, std::nullopt, std::move(help)}, true,
                   [member](Options& o, const parameters& given, const std::string& as, std::size_t) { o.*member = read_value<T>(given, as); });
    }

    template <class Options>
    template <class T>
    inline option_set<Options>& option_set<Options>::optional(std::optional<T> Options::*member, std::string name, std::string help)
    {
        return add({std::move(name), parameter_scope::global, std::nullopt, std::move(help), true}, false,
                   [member](Options& o, const parameters& given, const std::string& as, std::size_t) { o.*member = read_value<T>(given, as); });
    }

    template <class Options>
    template <class T>
    inline auto option_set<Options>::choice_reader(std::function<void(Options&, T)> set, std::vector<std::pair<std::string, T>> values) -> reader
    {
        return [set, values](Options& o, const parameters& given, const std::string& as, std::size_t)
        {
            const std::string& text = given.text(as);
            std::string accepted;
            for (const auto& [label, value] : values)
            {
                if (label == text)
                {
                    set(o, value);
                    return;
                }
                accepted += (accepted.empty() ? "" : ", ") + label;
            }
            throw parameter_error(given.tensor_name(), as, "unknown value '" + text + "' (accepted: " + accepted + ")");
        };
    }

    template <class Options>
    template <class T, class>
    inline option_set<Options>& option_set<Options>::choice(T Options::*member, std::string name, std::string help, std::vector<std::pair<std::string, T>> values)
    {
        std::optional<parameter_value> fallback;
        for (const auto& [label, value] : values)
        {
            if (value == m_defaults.*member)
            {
                fallback = label;
            }
        }
        if (!fallback)
        {
            throw parameter_error("", name, "the default is not one of the accepted values");
        }
        return add({std::move(name), parameter_scope::global, std::move(fallback), std::move(help)}, false,
                   choice_reader<T>([member](Options& o, T v) { o.*member = v; }, std::move(values)));
    }

    template <class Options>
    template <class T>
    inline option_set<Options>& option_set<Options>::choice(std::optional<T> Options::*member, std::string name, std::string help,
                                                          std::vector<std::pair<std::string, T>> values)
    {
        return add({std::move(name), parameter_scope::global, std::nullopt, std::move(help), true}, false,
                   choice_reader<T>([member](Options& o, T v) { o.*member = v; }, std::move(values)));
    }

    template <class Options>
    inline option_set<Options>& option_set<Options>::per_model(std::vector<double> Options::*member, std::string name, std::string help)
    {
        const std::vector<double>& d = m_defaults.*member;
        if (d.size() > 1)
        {
            throw parameter_error("", name, "a per-model default is one value for every model");
        }
        std::optional<parameter_value> fallback;
        if (d.size() == 1)
        {
            fallback = d[0];
        }
        const bool required = d.empty();
        return add({std::move(name), parameter_scope::per_model, std::move(fallback), std::move(help)}, required,
                   [member](Options& o, const parameters& given, const std::string& as, std::size_t models) { o.*member = given.per_model(as, models); });
    }

    template <class Options>
    inline option_set<Options>& option_set<Options>::per_model(std::optional<std::vector<double>> Options::*member, std::string name, std::string help)
    {
        return add({std::move(name), parameter_scope::per_model, std::nullopt, std::move(help), true}, false,
                   [member](Options& o, const parameters& given, const std::string& as, std::size_t models) { o.*member = given.per_model(as, models); });
    }

    template <class Options>
    inline option_set<Options>& option_set<Options>::alias(std::string name, std::string target)
    {
        const entry* t = find(target);
        if (!t || !t->target.empty())
        {
            throw parameter_error("", name, "is an alias of '" + target + "', which the options do not declare");
        }
        parameter_spec spec{name, t->spec.scope, std::nullopt, "alias of " + target, true};
        add(std::move(spec), false, {});
        m_entries.back().target = std::move(target);
        return *this;
    }

    template <class Options>
    inline std::vector<parameter_spec> option_set<Options>::specs() const
    {
        std::vector<parameter_spec> out;
        out.reserve(m_entries.size());
        for (const auto& e : m_entries)
        {
            out.push_back(e.spec);
        }
        return out;
    }

    template <class Options>
    inline Options option_set<Options>::parse(const parameters& given, std::size_t models) const
    {
        Options o = m_defaults;
        for (const auto& e : m_entries)
        {
            if (!e.target.empty())
            {
                continue;  // read through the parameter it stands for
            }
            const std::string* from = given.has(e.spec.name) ? &e.spec.name : nullptr;
            for (const auto& a : m_entries)
            {
                if (a.target == e.spec.name && given.has(a.spec.name))
                {
                    from = &a.spec.name;
                }
            }
            if (from)
            {
                e.read(o, given, *from, models);
            }
            else if (e.required)
            {
                throw parameter_error(given.tensor_name(), e.spec.name, "is required");
            }
            else if (e.spec.scope == parameter_scope::per_model && e.spec.fallback)
            {
                parameters one;
                one.set(e.spec.name, *e.spec.fallback);
                e.read(o, one, e.spec.name, models);
            }
        }
        return o;
    }

    template <class Options, class Build>
    inline method_info make_method(std::string name, std::string summary, bool needs_base, option_set<Options> options, Build build)
    {
        method_info m;
        m.name = std::move(name);
        m.summary = std::move(summary);
        m.needs_base = needs_base;
        m.parameters = options.specs();
        m.build = [options = std::move(options), build = std::move(build)](const method_inputs& in, const parameters& p) -> any_expression
        { return build(in, options.parse(p, in.models.size())); };
        return m;
    }

    template <class Options, class Build, class BuildAll>
    inline method_info make_method_with_outputs(std::string name, std::string summary, bool needs_base, option_set<Options> options, Build build, BuildAll build_all)
    {
        method_info m = xmerge::make_method(std::move(name), std::move(summary), needs_base, options, std::move(build));
        m.build_outputs = [options = std::move(options), build_all = std::move(build_all)](const method_inputs& in, const parameters& p) -> std::vector<method_output>
        { return build_all(in, options.parse(p, in.models.size())); };
        return m;
    }
}

#endif
