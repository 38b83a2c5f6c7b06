/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_SEARCH_WORKSPACE_HPP
#define XMERGE_SEARCH_WORKSPACE_HPP

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../core/tensor_ref.hpp"
#include "../ops/input.hpp"
#include "../ops/list.hpp"
#include "../ops/weighted_sum.hpp"
#include "objective.hpp"

/**
 * @file
 * The memory candidates are written into. A search writes every candidate
 * into the same workspace tensors (no parameter memory is allocated per
 * candidate), then calls the objective; the workspace may be buffers the
 * search owns (parameter_buffers) or the parameters of the network that the
 * objective runs.
 */

namespace xmerge
{
    /**
     * Owned buffers shaped and named like a model's tensors, of one dtype:
     * a workspace for callers that have none.
     */
    class parameter_buffers
    {
    public:
        explicit parameter_buffers(const parameter_list& like, dtype type = dtype::float32);

        /// The buffers, in the order of the model they were made like.
        const std::vector<tensor_ref>& refs() const noexcept { return m_refs; }
        /// The same, read-only.
        parameter_list crefs() const { return parameter_list(m_refs.begin(), m_refs.end()); }

    private:
        std::vector<std::vector<std::uint8_t>> m_storage;
        std::vector<tensor_ref> m_refs;
    };

    namespace detail
    {
        /**
         * Writes candidates into a workspace and scores them. Checks once
         * that every source model matches the workspace tensor by tensor and
         * that the workspace shares no memory with a source (it would
         * overwrite the search's own input).
         */
        class candidate_writer
        {
        public:
            candidate_writer(const std::vector<tensor_ref>& workspace, const std::vector<const parameter_list*>& sources, eval_options options);

            /// Writes sum_k weights[k] * sources[k] (terms with weight 0 are left out, so a one-hot weight copies exactly).
            void write_mix(const std::vector<double>& weights) const;

            /// Writes exprs[t] into workspace tensor t.
            template <class E>
            void write(const std::vector<E>& exprs) const;

            /// Scores what the workspace holds; refuses a value that is not finite.
            evaluated_point score_candidate(const objective& f, std::vector<double> coefficients) const;

            std::size_t tensors() const noexcept { return m_workspace.size(); }
            std::size_t sources() const noexcept { return m_sources.size(); }
            const std::vector<tensor_ref>& workspace() const noexcept { return m_workspace; }

        private:
            std::vector<tensor_ref> m_workspace;
            std::vector<const parameter_list*> m_sources;
            eval_options m_options;
        };

        /// The index of the best point (the first of equal values).
        inline std::size_t best_of(const std::vector<evaluated_point>& points);
    }

    /********************
     * Implementation   *
     ********************/

    inline parameter_buffers::parameter_buffers(const parameter_list& like, dtype type)
    {
        m_storage.reserve(like.size());
        m_refs.reserve(like.size());
        for (const auto& t : like)
        {
            m_storage.emplace_back(t.size() * size_of(type));
            m_refs.emplace_back(m_storage.back().data(), type, t.shape(), t.name());
        }
    }

    namespace detail
    {
        inline candidate_writer::candidate_writer(const std::vector<tensor_ref>& workspace, const std::vector<const parameter_list*>& sources,
                                                  eval_options options)
            : m_workspace(workspace)
            , m_sources(sources)
            , m_options(options)
        {
            if (m_workspace.empty())
            {
                throw parameter_error("", "workspace", "holds no tensor");
            }
            for (std::size_t k = 0; k < m_sources.size(); ++k)
            {
                const parameter_list& model = *m_sources[k];
                if (model.size() != m_workspace.size())
                {
                    throw parameter_error("", "models", "model " + std::to_string(k) + " has " + std::to_string(model.size()) + " tensors but the workspace has "
                                                            + std::to_string(m_workspace.size()));
                }
                for (std::size_t t = 0; t < model.size(); ++t)
                {
                    const std::string& name = m_workspace[t].name().empty() ? model[t].name() : m_workspace[t].name();
                    if (model[t].shape() != m_workspace[t].shape())
                    {
                        throw shape_error(name, "models", "model " + std::to_string(k) + " has shape " + to_string(model[t].shape())
                                                              + " but the workspace tensor has shape " + to_string(m_workspace[t].shape()));
                    }
                    for (const auto& w : m_workspace)
                    {
                        if (overlaps(w, model[t]))
                        {
                            throw layout_error(name, "workspace", "workspace tensor '" + w.name() + "' shares memory with tensor '" + model[t].name() + "' of model "
                                                                      + std::to_string(k) + "; writing candidates would overwrite an input");
                        }
                    }
                }
            }
        }

        inline void candidate_writer::write_mix(const std::vector<double>& weights) const
        {
            using mix = decltype(weighted_sum(std::declval<expression_list<input_node>>(), weights));
            std::vector<mix> exprs;
            exprs.reserve(m_workspace.size());
            std::vector<double> kept;
            for (std::size_t t = 0; t < m_workspace.size(); ++t)
            {
                expression_list<input_node> terms;
                kept.clear();
                for (std::size_t k = 0; k < m_sources.size(); ++k)
                {
                    if (weights[k] != 0.0)
                    {
                        terms.push_back(input_node((*m_sources[k])[t]));
                        kept.push_back(weights[k]);
                    }
                }
                if (terms.empty())
                {
                    throw parameter_error(m_workspace[t].name(), "weights", "every weight is zero");
                }
                exprs.push_back(weighted_sum(terms, kept));
            }
            write(exprs);
        }

        template <class E>
        inline void candidate_writer::write(const std::vector<E>& exprs) const
        {
            xmerge::evaluate_all(exprs, m_workspace, m_options);
        }

        inline evaluated_point candidate_writer::score_candidate(const objective& f, std::vector<double> coefficients) const
        {
            evaluated_point p{std::move(coefficients), f(m_workspace)};
            if (!std::isfinite(p.result.value))
            {
                throw parameter_error("", "objective", "returned " + std::to_string(p.result.value) + " for the candidate with coefficients "
                                                           + coefficients_text(p.coefficients) + "; scores must be finite");
            }
            return p;
        }

        inline std::size_t best_of(const std::vector<evaluated_point>& points)
        {
            std::size_t best = 0;
            for (std::size_t i = 1; i < points.size(); ++i)
            {
                if (points[i].result.value > points[best].result.value)
                {
                    best = i;
                }
            }
            return best;
        }
    }
}

#endif
