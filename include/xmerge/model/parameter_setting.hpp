/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MODEL_PARAMETER_SETTING_HPP
#define XMERGE_MODEL_PARAMETER_SETTING_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "../core/error.hpp"
#include "../methods/registry.hpp"

/**
 * @file
 * Parameters that vary from tensor to tensor, as in mergekit recipes: a
 * constant, a gradient across depth, or a list of rules matched on names.
 */

namespace xmerge
{
    /**
     * A parameter value that may depend on the tensor.
     *
     * - a constant: the same value everywhere;
     * - a gradient, a list of numbers [v0, ..., vm]: interpolated linearly at
     *   the tensor's depth position t in [0, 1] (see depth_position), v0 at
     *   the first layer and vm at the last;
     * - steps, a list of strings or flags: the entry at floor(t * m);
     * - rules, a list of (filter, setting): the first rule whose filter is
     *   empty, "*", or a substring of the tensor name gives the value; when
     *   none matches the setting has no value for that tensor, and the next
     *   level (model, then global, then the method's default) is asked.
     */
    struct parameter_rule;

    class parameter_setting
    {
    public:
        /// A constant 0.
        parameter_setting() : m_kind(kind::constant), m_constant(0.0) {}
        /// A constant.
        parameter_setting(parameter_value v) : m_kind(kind::constant), m_constant(std::move(v)) {}
        parameter_setting(double v) : parameter_setting(parameter_value(v)) {}
        parameter_setting(bool v) : parameter_setting(parameter_value(v)) {}
        parameter_setting(std::string v) : parameter_setting(parameter_value(std::move(v))) {}
        parameter_setting(const char* v) : parameter_setting(parameter_value(std::string(v))) {}

        static parameter_setting gradient(std::vector<double> values);
        static parameter_setting steps(std::vector<parameter_value> values);
        static parameter_setting rules(std::vector<parameter_rule> rules);

        /// The value for a tensor at depth position t; nullopt when no rule matches.
        std::optional<parameter_value> evaluate(const std::string& tensor, double t) const;

        bool is_constant() const noexcept { return m_kind == kind::constant; }
        bool is_gradient() const noexcept { return m_kind == kind::gradient; }
        bool is_rules() const noexcept { return m_kind == kind::rules; }

    private:
        enum class kind
        {
            constant,
            gradient,
            steps,
            rules
        };

        kind m_kind;
        parameter_value m_constant;
        std::vector<double> m_gradient;
        std::vector<parameter_value> m_steps;
        std::shared_ptr<const std::vector<parameter_rule>> m_rules;
    };

    /// One conditional rule of a parameter_setting: `value` applies where `filter` matches.
    struct parameter_rule
    {
        /// Empty or "*" matches every tensor; otherwise a substring of the tensor name.
        std::string filter;
        parameter_setting value;
    };

    /********************
     * Implementation   *
     ********************/

    inline parameter_setting parameter_setting::gradient(std::vector<double> values)
    {
        if (values.empty())
        {
            throw parameter_error("", "", "a gradient needs at least one value");
        }
        for (double v : values)
        {
            if (!std::isfinite(v))
            {
                throw parameter_error("", "", "gradient value " + std::to_string(v) + " is not finite");
            }
        }
        parameter_setting s;
        s.m_kind = kind::gradient;
        s.m_gradient = std::move(values);
        return s;
    }

    inline parameter_setting parameter_setting::steps(std::vector<parameter_value> values)
    {
        if (values.empty())
        {
            throw parameter_error("", "", "a list of values needs at least one entry");
        }
        parameter_setting s;
        s.m_kind = kind::steps;
        s.m_steps = std::move(values);
        return s;
    }

    inline parameter_setting parameter_setting::rules(std::vector<parameter_rule> rules)
    {
        parameter_setting s;
        s.m_kind = kind::rules;
        s.m_rules = std::make_shared<const std::vector<parameter_rule>>(std::move(rules));
        return s;
    }

    inline std::optional<parameter_value> parameter_setting::evaluate(const std::string& tensor, double t) const
    {
        t = std::min(1.0, std::max(0.0, t));
        switch (m_kind)
        {
            case kind::constant:
                return m_constant;
            case kind::gradient:
            {
                const double scaled = t * static_cast<double>(m_gradient.size() - 1);
                const std::size_t i0 = std::min(static_cast<std::size_t>(scaled), m_gradient.size() - 1);
                const std::size_t i1 = std::min(m_gradient.size() - 1, i0 + 1);
                const double frac = scaled - static_cast<double>(i0);
                return (1.0 - frac) * m_gradient[i0] + frac * m_gradient[i1];
            }
            case kind::steps:
                return m_steps[std::min(static_cast<std::size_t>(t * static_cast<double>(m_steps.size() - 1)), m_steps.size() - 1)];
            case kind::rules:
                for (const auto& r : *m_rules)
                {
                    if (r.filter.empty() || r.filter == "*" || tensor.find(r.filter) != std::string::npos)
                    {
                        return r.value.evaluate(tensor, t);
                    }
                }
                return std::nullopt;
        }
        return std::nullopt;
    }
}

#endif
