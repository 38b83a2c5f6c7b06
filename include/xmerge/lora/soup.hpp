/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LORA_SOUP_HPP
#define XMERGE_LORA_SOUP_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../methods/dare.hpp"
#include "../methods/generalized_task_arithmetic.hpp"
#include "../methods/task_arithmetic.hpp"
#include "../methods/ties.hpp"
#include "../model/model.hpp"
#include "../ops/any.hpp"
#include "../ops/arithmetic.hpp"
#include "adapter.hpp"
#include "extract_model.hpp"
#include "fold.hpp"
#include "fold_model.hpp"
#include "merge.hpp"
#include "write.hpp"

/**
 * @file
 * LoRA soups: several adapters of one base merged weight by weight through
 * their updates (products, DoRA's rescaled weights, saved tensors less the
 * base), by a linear, TIES or DARE merge, into a folded model or a new
 * adapter.
 */

namespace xmerge::lora
{
    /// How a soup merges the adapters' updates of one weight.
    enum class soup_method
    {
        linear,       ///< lambda * sum_i w_i d_i (w defaults to 1 / K: the mean)
        ties,         ///< TIES: trim to density, elect signs, weighted mean of the agreeing (w defaults to 1)
        dare_linear,  ///< DARE: drop with probability 1 - density, rescale by 1 / density, sum
        dare_ties     ///< DARE, then TIES' sign election
    };

    /// Parameters of a soup.
    struct soup_options
    {
        soup_method method = soup_method::linear;
        /// One weight per adapter, or one for all.
        std::vector<double> weights;
        /// Fraction kept per adapter (TIES, DARE), or one for all.
        std::vector<double> densities;
        double lambda = 1.0;
        /// DARE's masks: stream (seed, weight name, adapter index).
        std::uint64_t seed = 0;
    };

    /**
     * The merged update of base tensor `name` over `adapters` (lazy): each
     * adapter contributes its update of that tensor (zero where it has none).
     */
    inline any_expression soup_update(const model& base, const std::vector<adapter>& adapters, const std::string& name, const soup_options& options);

    /**
     * base + the merged update of every tensor some adapter changes, written
     * to checkpoint directory `out_dir` tensor by tensor (each merged lazily
     * over the adapters' factors: no update is materialized).
     */
    inline merge_summary soup_to_model(const model& base, const std::vector<adapter>& adapters, const std::string& out_dir, const soup_options& options,
                                       const merge_options& output = {});

    /**
     * The merged updates as a new adapter in `out_dir`. A linear soup of
     * plain LoRA layers is factored exactly from the stacked factors (rank
     * up to the sum of the ranks, cut by `factoring.rule`); other merges are
     * formed per weight and factored by truncated SVD (full or randomized).
     * Tensors an adapter replaces or whose bias it updates are saved in full.
     */
    inline extraction_report soup_to_adapter(const model& base, const std::vector<adapter>& adapters, const std::string& out_dir, const soup_options& options,
                                             const factor_options& factoring, const write_options& writing = {});

    namespace detail
    {
        /// The method applied to updates against a zero base: the merged update.
        inline any_expression merge_updates(const expression_list<any_expression>& updates, const shape_type& shape, const std::string& name,
                                            const soup_options& o);

        /// True when some adapter replaces `name` or updates it as a bias.
        inline bool needs_dense_updates(const std::vector<adapter>& adapters, const std::string& name);
    }

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        inline any_expression merge_updates(const expression_list<any_expression>& updates, const shape_type& shape, const std::string& name,
                                            const soup_options& o)
        {
            const std::size_t k = updates.size();
            std::vector<double> weights = o.weights;
            if (weights.empty())
            {
                weights.assign(k, o.method == soup_method::linear ? 1.0 / static_cast<double>(k) : 1.0);
            }
            else if (weights.size() == 1)
            {
                weights.assign(k, weights[0]);
            }
            else if (weights.size() != k)
            {
                throw parameter_error(name, "weights", "expected 1 or " + std::to_string(k) + " values, got " + std::to_string(weights.size()));
            }
            const low_rank_node zero = zeros(shape, name);
            switch (o.method)
            {
                case soup_method::linear:
                    return xmerge::task_arithmetic(updates, zero, weights, {o.lambda, false});
                case soup_method::ties:
                    return xmerge::ties(updates, zero, weights, o.densities, o.lambda);
                case soup_method::dare_linear:
                case soup_method::dare_ties:
                    return xmerge::generalized_task_arithmetic(
                        updates, zero, dare_options(weights, o.densities, o.method == soup_method::dare_ties, o.seed, name, rescale_kind::density, o.lambda));
            }
            throw parameter_error(name, "method", "unknown soup method");
        }

        inline bool needs_dense_updates(const std::vector<adapter>& adapters, const std::string& name)
        {
            for (const adapter& a : adapters)
            {
                if (a.find_replacement(name) || a.find_bias_update(name))
                {
                    return true;
                }
            }
            return false;
        }

        inline void check_soup(const model& base, const std::vector<adapter>& adapters)
        {
            if (adapters.empty())
            {
                throw parameter_error("", "adapters", "a soup needs at least one adapter");
            }
            for (const adapter& a : adapters)
            {
                a.check_against(base);
                for (const replacement& r : a.replacements())
                {
                    if (!r.tensor.is_arithmetic())
                    {
                        throw io_error(a.file(), r.tensor.name, "replaces a tensor of dtype " + r.tensor.dtype + ", which cannot be merged");
                    }
                }
            }
        }

        /// True when some adapter changes `name`.
        inline bool touched(const std::vector<adapter>& adapters, const std::string& name)
        {
            for (const adapter& a : adapters)
            {
                if (a.find(name) || a.find_bias_update(name) || a.find_replacement(name))
                {
                    return true;
                }
            }
            return false;
        }
    }

    inline any_expression soup_update(const model& base, const std::vector<adapter>& adapters, const std::string& name, const soup_options& options)
    {
        const model_tensor& t = base.at(name);
        const const_tensor_ref w = t.ref();
        // One list type for every tensor: the merges are compiled once (a chunk copy per adapter is the price).
        expression_list<any_expression> updates;
        for (const adapter& a : adapters)
        {
            if (const replacement* r = a.find_replacement(name))
            {
                updates.push_back(input(r->tensor.ref().with_name(name)) - input(w));
            }
            else if (const layer* l = a.find(name))
            {
                updates.push_back(update(w, *l));
            }
            else if (const layer* b = a.find_bias_update(name))
            {
                updates.push_back(b->scale * input(*b->bias));
            }
            else
            {
                updates.push_back(zeros(t.shape, name));
            }
        }
        return detail::merge_updates(updates, t.shape, name, options);
    }

    inline merge_summary soup_to_model(const model& base, const std::vector<adapter>& adapters, const std::string& out_dir, const soup_options& options,
                                       const merge_options& output)
    {
        detail::check_soup(base, adapters);
        return detail::write_model(base, out_dir, output,
                                   [&](const std::string& name) -> any_expression
                                   {
                                       const const_tensor_ref w = base.at(name).ref();
                                       if (!detail::touched(adapters, name))
                                       {
                                           return input(w);
                                       }
                                       return input(w) + soup_update(base, adapters, name, options);
                                   });
    }

    inline extraction_report soup_to_adapter(const model& base, const std::vector<adapter>& adapters, const std::string& out_dir, const soup_options& options,
                                             const factor_options& factoring, const write_options& writing)
    {
        const auto start = std::chrono::steady_clock::now();
        detail::check_soup(base, adapters);
        extraction_report report;
        std::deque<extracted_factors> factors;
        std::deque<std::vector<float>> full;
        std::vector<layer> layers;
        std::vector<std::pair<std::string, const_tensor_ref>> replacements;
        for (const model_tensor& t : base.tensors())
        {
            if (!t.is_arithmetic() || !detail::touched(adapters, t.name))
            {
                continue;
            }
            extracted_tensor e;
            e.name = t.name;
            const any_expression merged = soup_update(base, adapters, t.name, options);
            const layer* first = nullptr;
            std::vector<layer> products;
            std::vector<double> weights;
            bool dora = false;
            for (std::size_t i = 0; i < adapters.size(); ++i)
            {
                if (const layer* l = adapters[i].find(t.name))
                {
                    first = first ? first : l;
                    dora = dora || l->is_dora();
                    products.push_back(*l);
                    const double w = options.weights.empty() ? 1.0 / static_cast<double>(adapters.size()) : options.weights[options.weights.size() == 1 ? 0 : i];
                    weights.push_back(options.lambda * w);
                }
            }
            if (first && !detail::needs_dense_updates(adapters, t.name))
            {
                const bool exact = options.method == soup_method::linear && !dora;
                if (exact && options.weights.size() > 1 && options.weights.size() != adapters.size())
                {
                    throw parameter_error(t.name, "weights", "expected 1 or " + std::to_string(adapters.size()) + " values");
                }
                factors.push_back(exact ? refactorize_sum(products, weights, factoring.rule, factoring.precision)
                                        : refactorize(merged, factoring, first->layout));
                detail::record_layer(e, factors.back(), layers, first->layout, first->embedding, t.shape);
            }
            else
            {
                // Saved in full: base + merged update.
                full.emplace_back(numel(t.shape));
                xmerge::evaluate(input(t.ref()) + merged, as_tensor(full.back().data(), t.shape, t.name));
                replacements.emplace_back(t.name, as_tensor(full.back().data(), t.shape, t.name));
                e.what = extracted_tensor::kind::full;
            }
            base.release(t);
            report.tensors.push_back(e);
        }
        adapter_config config;
        config.base_model_name_or_path = adapters[0].config().base_model_name_or_path;
        report.config = write_adapter(out_dir, layers, replacements, config, writing);
        report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        return report;
    }
}

#endif
