/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_REGISTRY_HPP
#define XMERGE_METHODS_REGISTRY_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "../core/error.hpp"
#include "../ops/any.hpp"
#include "../ops/input.hpp"
#include "../ops/list.hpp"

/**
 * @file
 * Merge methods by name, for code that picks them at run time (recipes,
 * the command line, the golden tests): each method declares its parameters
 * (mergekit's names and defaults) and builds a type-erased expression for
 * one tensor from the inputs and concrete parameter values.
 */

namespace xmerge
{
    /// A parameter value: a number, a flag, a string, or one number per model.
    using parameter_value = std::variant<double, bool, std::string, std::vector<double>>;

    /// Whether a parameter has one value per model or one for the whole merge.
    enum class parameter_scope
    {
        global,
        per_model
    };

    /// A parameter a method accepts.
    struct parameter_spec
    {
        std::string name;
        parameter_scope scope = parameter_scope::global;
        /// Default; empty when the parameter is required (or optional).
        std::optional<parameter_value> fallback;
        std::string help;
        /// Without a default: absent unless given, instead of required.
        bool optional = false;
    };

    /**
     * Concrete parameter values for one tensor of one merge.
     *
     * Accessors check the type and say which parameter is wrong; a per-model
     * accessor accepts either one number (used for every model) or a list
     * with one number per model.
     */
    class parameters
    {
    public:
        parameters() = default;
        parameters(std::initializer_list<std::pair<const std::string, parameter_value>> values) : m_values(values) {}

        void set(const std::string& name, parameter_value v) { m_values[name] = std::move(v); }
        bool has(const std::string& name) const { return m_values.count(name) != 0; }
        const std::map<std::string, parameter_value>& values() const noexcept { return m_values; }

        double number(const std::string& name) const;
        bool flag(const std::string& name) const;
        const std::string& text(const std::string& name) const;
        std::vector<double> per_model(const std::string& name, std::size_t models) const;

        /// Names the tensor in error messages.
        void set_tensor_name(std::string name) { m_tensor = std::move(name); }
        const std::string& tensor_name() const noexcept { return m_tensor; }

    private:
        const parameter_value& get(const std::string& name) const;

        std::map<std::string, parameter_value> m_values;
        std::string m_tensor;
    };

    /// The tensors a method merges for one parameter tensor.
    struct method_inputs
    {
        /// Name of the tensor being merged (errors, random streams).
        std::string tensor;
        std::optional<input_node> base;
        expression_list<input_node> models;
        /// Further per-model tensors some methods read ("fisher", "gram").
        std::map<std::string, expression_list<input_node>> extra;
        /// Seed of random methods.
        std::uint64_t seed = 0;
        /**
         * Statistics over whole models, one value per model, by name (see
         * method_info::model_statistics). A caller merging many tensors computes
         * them over every tensor first; when one is missing, build() derives it
         * from this tensor alone, which is exact for a one-tensor model.
         */
        std::map<std::string, std::vector<double>> model_statistics;
    };

    /**
     * A statistic over all tensors of each model (a Fisher norm over the whole
     * model, say): the sum over tensors of `per_tensor(inputs)` (one value per
     * model), then `finish` applied to each model's sum.
     */
    struct model_statistic
    {
        std::string name;
        std::function<std::vector<double>(const method_inputs&)> per_tensor;
        std::function<double(double)> finish;
    };

    /// One named result of a method that gives several per tensor ("model.0", "mask.0", "unified").
    struct method_output
    {
        std::string name;
        any_expression value;
    };

    /// A method that can be built by name.
    struct method_info
    {
        std::string name;
        bool needs_base = false;
        std::vector<parameter_spec> parameters;
        /// Builds the merged tensor from inputs and complete parameters (defaults filled in).
        std::function<any_expression(const method_inputs&, const xmerge::parameters&)> build;
        std::string summary;
        /// Whole-model statistics build() reads from method_inputs::model_statistics.
        std::vector<model_statistic> model_statistics;
        /**
         * Set for methods that give several results per tensor (one model per
         * task, per-task masks): builds all of them, named. `build` then gives
         * the one model its parameters select (a `task` index).
         */
        std::function<std::vector<method_output>(const method_inputs&, const xmerge::parameters&)> build_outputs;
    };

    /// Methods by name.
    class method_registry
    {
    public:
        /**
         * Adds (or replaces) a method. Throws parameter_error when its
         * declaration is malformed: no name or builder, a parameter name
         * that is not lower-case letters, digits and underscores or that
         * appears twice, an optional parameter with a default, or a per-model
         * default that is not a number or one number per model.
         */
        void add(method_info info);
        bool contains(const std::string& name) const { return m_methods.count(name) != 0; }
        /// Throws parameter_error listing the known methods when `name` is not one.
        const method_info& find(const std::string& name) const;
        std::vector<std::string> names() const;

        /**
         * Checks inputs and parameters against the method's declaration
         * (unknown or missing parameters, missing base, no models), fills in
         * defaults and builds the expression.
         */
        any_expression build(const std::string& method, const method_inputs& inputs, const parameters& given) const;

        /**
         * Every result of `method` for one tensor, with the checks of build():
         * the method's named outputs when it has several (method_info::build_outputs),
         * else one output "merged". Evaluate them together with evaluate_all().
         */
        std::vector<method_output> build_outputs(const std::string& method, const method_inputs& inputs, const parameters& given) const;

    private:
        /// The given parameters checked against the declaration, with defaults filled in.
        parameters complete_parameters(const method_info& info, const method_inputs& inputs, const parameters& given) const;
        /// The inputs with the method's whole-model statistics (derived from this tensor when missing).
        method_inputs with_model_statistics(const method_info& info, const method_inputs& inputs) const;

        std::map<std::string, method_info> m_methods;
    };

    namespace detail
    {
        /// Lower-case letters, digits and underscores, starting with a letter.
        inline bool is_parameter_name(const std::string& name) noexcept;

        /// Throws parameter_error unless the method's declaration is well formed.
        inline void check_declaration(const method_info& info);
    }

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        inline bool is_parameter_name(const std::string& name) noexcept
        {
            if (name.empty() || !(name[0] >= 'a' && name[0] <= 'z'))
            {
                return false;
            }
            return std::all_of(name.begin(), name.end(), [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'; });
        }

        inline void check_declaration(const method_info& info)
        {
            const auto fail = [&](const std::string& parameter, const std::string& reason)
            { throw parameter_error("", parameter, "method '" + info.name + "': " + reason); };
            if (!is_parameter_name(info.name))
            {
                fail("merge_method", "a method name is lower-case letters, digits and underscores");
            }
            if (!info.build)
            {
                fail("merge_method", "has no builder");
            }
            for (std::size_t i = 0; i < info.parameters.size(); ++i)
            {
                const parameter_spec& s = info.parameters[i];
                if (!is_parameter_name(s.name))
                {
                    fail(s.name, "is not a parameter name (lower-case letters, digits and underscores)");
                }
                for (std::size_t j = 0; j < i; ++j)
                {
                    if (info.parameters[j].name == s.name)
                    {
                        fail(s.name, "is declared twice");
                    }
                }
                if (s.optional && s.fallback)
                {
                    fail(s.name, "is optional but has a default");
                }
                if (s.scope == parameter_scope::per_model && s.fallback && !std::holds_alternative<double>(*s.fallback)
                    && !std::holds_alternative<std::vector<double>>(*s.fallback))
                {
                    fail(s.name, "a per-model default is a number or one number per model");
                }
            }
        }
    }

    inline const parameter_value& parameters::get(const std::string& name) const
    {
        const auto it = m_values.find(name);
        if (it == m_values.end())
        {
            throw parameter_error(m_tensor, name, "is required");
        }
        return it->second;
    }

    inline double parameters::number(const std::string& name) const
    {
        const parameter_value& v = get(name);
        if (const double* d = std::get_if<double>(&v))
        {
            if (!std::isfinite(*d))
            {
                throw parameter_error(m_tensor, name, "must be finite, got " + std::to_string(*d));
            }
            return *d;
        }
        throw parameter_error(m_tensor, name, "must be a number");
    }

    inline bool parameters::flag(const std::string& name) const
    {
        const parameter_value& v = get(name);
        if (const bool* b = std::get_if<bool>(&v))
        {
            return *b;
        }
        if (const double* d = std::get_if<double>(&v); d && (*d == 0.0 || *d == 1.0))
        {
            return *d != 0.0;
        }
        throw parameter_error(m_tensor, name, "must be true or false");
    }

    inline const std::string& parameters::text(const std::string& name) const
    {
        const parameter_value& v = get(name);
        if (const std::string* s = std::get_if<std::string>(&v))
        {
            return *s;
        }
        throw parameter_error(m_tensor, name, "must be a string");
    }

    inline std::vector<double> parameters::per_model(const std::string& name, std::size_t models) const
    {
        const parameter_value& v = get(name);
        std::vector<double> out;
        if (const double* d = std::get_if<double>(&v))
        {
            out.assign(models, *d);
        }
        else if (const auto* list = std::get_if<std::vector<double>>(&v))
        {
            if (list->size() != models)
            {
                throw parameter_error(m_tensor, name, "expected " + std::to_string(models) + " values (one per model), got " + std::to_string(list->size()));
            }
            out = *list;
        }
        else
        {
            throw parameter_error(m_tensor, name, "must be a number or one number per model");
        }
        for (std::size_t k = 0; k < out.size(); ++k)
        {
            if (!std::isfinite(out[k]))
            {
                throw parameter_error(m_tensor, name, "value for model " + std::to_string(k) + " is not finite");
            }
        }
        return out;
    }

    inline void method_registry::add(method_info info)
    {
        detail::check_declaration(info);
        const std::string name = info.name;
        m_methods[name] = std::move(info);
    }

    inline const method_info& method_registry::find(const std::string& name) const
    {
        const auto it = m_methods.find(name);
        if (it == m_methods.end())
        {
            std::string known;
            for (const auto& [n, _] : m_methods)
            {
                known += (known.empty() ? "" : ", ") + n;
            }
            throw parameter_error("", "merge_method", "unknown method '" + name + "' (known: " + known + ")");
        }
        return it->second;
    }

    inline std::vector<std::string> method_registry::names() const
    {
        std::vector<std::string> out;
        for (const auto& [n, _] : m_methods)
        {
            out.push_back(n);
        }
        return out;
    }

    inline parameters method_registry::complete_parameters(const method_info& info, const method_inputs& inputs, const parameters& given) const
    {
        const std::string& method = info.name;
        parameters complete;
        complete.set_tensor_name(inputs.tensor);
        for (const auto& [name, value] : given.values())
        {
            const bool known = std::any_of(info.parameters.begin(), info.parameters.end(), [&, &n = name](const parameter_spec& s) { return s.name == n; });
            if (!known)
            {
                std::string accepted;
                for (const auto& s : info.parameters)
                {
                    accepted += (accepted.empty() ? "" : ", ") + s.name;
                }
                throw parameter_error(inputs.tensor, name, "unknown parameter for method '" + method + "' (accepted: " + accepted + ")");
            }
            complete.set(name, value);
        }
        for (const auto& spec : info.parameters)
        {
            if (!complete.has(spec.name))
            {
                if (spec.optional)
                {
                    continue;
                }
                if (!spec.fallback)
                {
                    throw parameter_error(inputs.tensor, spec.name, "is required by method '" + method + "'");
                }
                complete.set(spec.name, *spec.fallback);
            }
        }
        if (info.needs_base && !inputs.base)
        {
            throw parameter_error(inputs.tensor, "base_model", "method '" + method + "' needs a base model");
        }
        if (inputs.models.empty())
        {
            throw parameter_error(inputs.tensor, "models", "method '" + method + "' needs at least one model");
        }
        return complete;
    }

    inline method_inputs method_registry::with_model_statistics(const method_info& info, const method_inputs& inputs) const
    {
        method_inputs out = inputs;
        for (const auto& stat : info.model_statistics)
        {
            if (!out.model_statistics.count(stat.name))
            {
                std::vector<double> values = stat.per_tensor(inputs);
                for (double& v : values)
                {
                    v = stat.finish(v);
                }
                out.model_statistics[stat.name] = std::move(values);
            }
        }
        return out;
    }

    inline any_expression method_registry::build(const std::string& method, const method_inputs& inputs, const parameters& given) const
    {
        const method_info& info = find(method);
        const parameters complete = complete_parameters(info, inputs, given);
        if (info.model_statistics.empty())
        {
            return info.build(inputs, complete);
        }
        return info.build(with_model_statistics(info, inputs), complete);
    }

    inline std::vector<method_output> method_registry::build_outputs(const std::string& method, const method_inputs& inputs, const parameters& given) const
    {
        const method_info& info = find(method);
        const parameters complete = complete_parameters(info, inputs, given);
        const method_inputs in = info.model_statistics.empty() ? inputs : with_model_statistics(info, inputs);
        if (!info.build_outputs)
        {
            return {{"merged", info.build(in, complete)}};
        }
        return info.build_outputs(in, complete);
    }
}

#endif
