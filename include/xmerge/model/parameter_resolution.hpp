/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MODEL_PARAMETER_RESOLUTION_HPP
#define XMERGE_MODEL_PARAMETER_RESOLUTION_HPP

#include <map>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "../core/error.hpp"
#include "../methods/registry.hpp"
#include "merge_spec.hpp"
#include "parameter_setting.hpp"

/**
 * @file
 * From a recipe's parameter settings to the values of one tensor, as
 * mergekit resolves them: a per-model parameter is looked up in the model's
 * settings, then the slice's, then the global ones, then the method's
 * default; a global parameter skips the model's settings.
 *
 * The method's declaration (registry::find(method).parameters) is the one
 * source of names, scopes and defaults; resolve_parameters() completes every
 * declared parameter, so the registry has nothing left to fill.
 */

namespace xmerge
{
    namespace detail
    {
        // The inputs of one output tensor, before parameters are resolved.
        struct tensor_sources
        {
            std::string out_name;
            double t = 0.0;
            const merge_source* base = nullptr;
            std::string base_name;
            std::vector<const merge_source*> models;
            std::vector<std::string> model_names;  // input tensor name per model
            const std::map<std::string, parameter_setting>* slice_parameters = nullptr;
        };

        inline const parameter_spec* find_spec(const method_info& info, const std::string& name)
        {
            for (const auto& s : info.parameters)
            {
                if (s.name == name)
                {
                    return &s;
                }
            }
            return nullptr;
        }

        inline std::string accepted_parameters(const method_info& info)
        {
            std::string out;
            for (const auto& s : info.parameters)
            {
                out += (out.empty() ? "" : ", ") + s.name;
            }
            return out.empty() ? "none" : out;
        }

        /**
         * Settings a method does not use: names it does not declare, and
         * global parameters set per model. mergekit ignores both; here each
         * gives one warning naming the parameter and the method (a name no
         * method declares is flagged as a likely misspelling), and is
         * dropped. With `strict` they are errors.
         */
        class unused_settings
        {
        public:
            unused_settings(const method_registry& registry, const method_info& info, bool strict) : m_registry(registry), m_info(info), m_strict(strict) {}

            /// The settings of `where` without those the method does not use.
            std::map<std::string, parameter_setting> filter(const std::map<std::string, parameter_setting>& settings, const std::string& where, bool per_model);
            /// One line per ignored parameter.
            std::vector<std::string> warnings() const;

        private:
            bool declared_anywhere(const std::string& name) const;

            const method_registry& m_registry;
            const method_info& m_info;
            bool m_strict;
            // parameter -> (why, places)
            std::map<std::string, std::pair<std::string, std::vector<std::string>>> m_ignored;
        };

        /// The spec with the settings its method does not use removed (see unused_settings).
        inline merge_spec without_unused_settings(const merge_spec& spec, const method_registry& registry, const method_info& info, bool strict,
                                                  std::vector<std::string>& warnings);

        /// Every parameter the method declares for one tensor: its resolved setting or its default (optional ones only when set).
        inline parameters resolve_parameters(const method_info& info, const merge_spec& spec, const tensor_sources& src);
    }

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        inline bool unused_settings::declared_anywhere(const std::string& name) const
        {
            for (const auto& method : m_registry.names())
            {
                if (find_spec(m_registry.find(method), name) != nullptr)
                {
                    return true;
                }
            }
            return false;
        }

        inline std::map<std::string, parameter_setting> unused_settings::filter(const std::map<std::string, parameter_setting>& settings,
                                                                                const std::string& where, bool per_model)
        {
            std::map<std::string, parameter_setting> kept;
            for (const auto& [name, setting] : settings)
            {
                const parameter_spec* s = find_spec(m_info, name);
                std::string why;
                if (s == nullptr)
                {
                    why = "is not a parameter of method '" + m_info.name + "' (accepted: " + accepted_parameters(m_info) + ")";
                    if (!declared_anywhere(name))
                    {
                        why += "; no method has a parameter of that name: a misspelling?";
                    }
                }
                else if (per_model && s->scope == parameter_scope::global)
                {
                    why = "is a global parameter of method '" + m_info.name + "'; set per model it is not used (set it under the recipe's top-level parameters)";
                }
                else
                {
                    kept.emplace(name, setting);
                    continue;
                }
                if (m_strict)
                {
                    throw parameter_error("", name, why + (where.empty() ? "" : " [" + where + "]"));
                }
                auto& entry = m_ignored[name];
                entry.first = why;
                entry.second.push_back(where.empty() ? "top level" : where);
            }
            return kept;
        }

        inline std::vector<std::string> unused_settings::warnings() const
        {
            std::vector<std::string> out;
            for (const auto& [name, entry] : m_ignored)
            {
                std::string places;
                for (const auto& p : entry.second)
                {
                    places += (places.empty() ? "" : ", ") + p;
                }
                out.push_back("parameter '" + name + "' " + entry.first + "; ignored, as mergekit does (set for " + places + "; --strict refuses it)");
            }
            return out;
        }

        inline merge_spec without_unused_settings(const merge_spec& spec, const method_registry& registry, const method_info& info, bool strict,
                                                  std::vector<std::string>& warnings)
        {
            unused_settings unused(registry, info, strict);
            merge_spec out = spec;
            out.parameters = unused.filter(spec.parameters, "", false);
            auto model_place = [](const merge_source& s) { return "model '" + (s.source ? s.source->name() : std::string("?")) + "'"; };
            for (auto& m : out.models)
            {
                m.parameters = unused.filter(m.parameters, model_place(m), true);
            }
            for (std::size_t i = 0; i < out.slices.size(); ++i)
            {
                auto& slice = out.slices[i];
                const std::string place = "slice " + std::to_string(i);
                slice.parameters = unused.filter(slice.parameters, place, false);
                for (auto& s : slice.sources)
                {
                    s.parameters = unused.filter(s.parameters, place + " " + model_place(s), true);
                }
                if (slice.base)
                {
                    slice.base->parameters = unused.filter(slice.base->parameters, place + " base " + model_place(*slice.base), true);
                }
            }
            for (auto& w : unused.warnings())
            {
                warnings.push_back(std::move(w));
            }
            return out;
        }

        inline std::optional<parameter_value> lookup(const std::map<std::string, parameter_setting>* settings, const std::string& name,
                                                     const std::string& tensor, double t)
        {
            if (settings == nullptr)
            {
                return std::nullopt;
            }
            const auto it = settings->find(name);
            if (it == settings->end())
            {
                return std::nullopt;
            }
            return it->second.evaluate(tensor, t);
        }

        inline parameters resolve_parameters(const method_info& info, const merge_spec& spec, const tensor_sources& src)
        {
            parameters p;
            p.set_tensor_name(src.out_name);
            for (const auto& s : info.parameters)
            {
                if (s.scope == parameter_scope::global)
                {
                    auto v = lookup(src.slice_parameters, s.name, src.out_name, src.t);
                    if (!v)
                    {
                        v = lookup(&spec.parameters, s.name, src.out_name, src.t);
                    }
                    if (!v && s.fallback)
                    {
                        v = *s.fallback;
                    }
                    if (v)
                    {
                        p.set(s.name, *v);
                    }
                    else if (!s.optional)
                    {
                        throw parameter_error(src.out_name, s.name, "is required by method '" + info.name + "'");
                    }
                    continue;
                }
                std::vector<double> values;
                std::string unset;  // a model without a value for an optional parameter
                for (std::size_t k = 0; k < src.models.size(); ++k)
                {
                    // Filters of a per-model parameter see the model's tensor name (it differs from the output's in slices).
                    const std::string& in_name = src.model_names[k];
                    auto v = lookup(&src.models[k]->parameters, s.name, in_name, src.t);
                    if (!v)
                    {
                        v = lookup(src.slice_parameters, s.name, in_name, src.t);
                    }
                    if (!v)
                    {
                        v = lookup(&spec.parameters, s.name, in_name, src.t);
                    }
                    if (!v && s.fallback)
                    {
                        v = *s.fallback;
                    }
                    if (!v && s.optional)
                    {
                        unset = src.models[k]->source->name();
                        continue;
                    }
                    if (!v)
                    {
                        throw parameter_error(src.out_name, s.name, "is required by method '" + info.name + "' for model '" + src.models[k]->source->name() + "'");
                    }
                    if (const double* d = std::get_if<double>(&*v))
                    {
                        values.push_back(*d);
                    }
                    else if (const bool* b = std::get_if<bool>(&*v))
                    {
                        values.push_back(*b ? 1.0 : 0.0);
                    }
                    else
                    {
                        throw parameter_error(src.out_name, s.name, "must be a number for model '" + src.models[k]->source->name() + "'");
                    }
                }
                if (!values.empty() && !unset.empty())
                {
                    throw parameter_error(src.out_name, s.name, "is set for some models but not for model '" + unset + "'; set it for every model or none");
                }
                if (!values.empty())
                {
                    p.set(s.name, values);
                }
            }
            return p;
        }
    }
}

#endif
