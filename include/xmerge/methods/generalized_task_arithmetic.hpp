/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_GENERALIZED_TASK_ARITHMETIC_HPP
#define XMERGE_METHODS_GENERALIZED_TASK_ARITHMETIC_HPP

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../ops/any.hpp"
#include "../ops/arithmetic.hpp"
#include "../ops/list.hpp"
#include "../ops/random_mask.hpp"
#include "../ops/rank_mask.hpp"
#include "../ops/rank_probability.hpp"
#include "../ops/rescale.hpp"
#include "../ops/shared.hpp"
#include "../ops/sign_election.hpp"
#include "../ops/task_vector.hpp"
#include "../simd/random.hpp"
#include "registry.hpp"
#include "task_arithmetic.hpp"

namespace xmerge
{
    /// How each task vector is sparsified before the merge.
    enum class sparsification
    {
        none,
        magnitude,      ///< keep the floor(density * n) largest |d| (TIES)
        random,         ///< keep each entry with probability density (DARE)
        outliers,       ///< drop the floor(gamma * n) largest, keep the next floor(density * n) (Model Breadcrumbs)
        ranked_random   ///< keep with probability growing with magnitude rank (DELLA)
    };

    /**
     * The family of merges built as base + lambda * merge(rescale(sparsify(x_i - base))).
     *
     * Per-model vectors (weights, densities, gammas, epsilons) hold one value
     * per model, or one value for all; densities, gammas and epsilons may be
     * left empty for mergekit's defaults (1, 0.01, 0.15). The presets below
     * give mergekit's methods.
     */
    struct gta_options
    {
        std::vector<double> weights;
        std::vector<double> densities;
        std::vector<double> gammas;
        std::vector<double> epsilons;
        sparsification method = sparsification::none;
        rescale_kind rescale = rescale_kind::none;
        sign_consensus consensus = sign_consensus::none;
        /// Divide by the sum of the weights taking part (the agreeing ones with a consensus).
        bool normalize = false;
        /// With a consensus and normalize: merge_divisor::weights (mergekit) or merge_divisor::count (TIES paper).
        merge_divisor elected_divisor = merge_divisor::weights;
        double lambda = 1.0;
        /// Random masks: stream (seed, hash of `stream`, model index).
        std::uint64_t seed = 0;
        std::string stream;
    };

    /**
     * The merged tensor. Cost: the element-wise pass, plus the statistics
     * the parts need (see each part); throws parameter_error for counts or
     * values out of range (a magnitude mask that would keep nothing, as
     * mergekit refuses too).
     */
    template <class E, class B>
    any_expression generalized_task_arithmetic(const expression_list<E>& models, const B& base, const gta_options& options);

    namespace detail
    {
        /// The value of a per-model parameter for model k (one value broadcasts).
        inline double per_model_value(const std::vector<double>& values, std::size_t k, double fallback, const std::string& tensor,
                                      const char* parameter, std::size_t models);

        template <class E, class B, class Prune>
        any_expression compose_gta(const expression_list<E>& models, const B& base, const gta_options& o, Prune&& prune);

        /// Parameter specs shared by the generalized task arithmetic methods (mergekit's names and defaults).
        inline std::vector<parameter_spec> gta_parameters(bool normalize, bool rescale, sparsification method);

        /// gta_options from registry parameters.
        inline gta_options gta_from_parameters(const method_inputs& in, const parameters& p, sparsification method, sign_consensus consensus);

        /// A registry entry for one preset.
        inline method_info gta_method(std::string name, std::string summary, sparsification method, sign_consensus consensus, bool normalize, bool rescale);
    }

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        inline double per_model_value(const std::vector<double>& values, std::size_t k, double fallback, const std::string& tensor,
                                      const char* parameter, std::size_t models)
        {
            if (values.empty())
            {
                return fallback;
            }
            if (values.size() != 1 && values.size() != models)
            {
                throw parameter_error(tensor, parameter, "expected 1 or " + std::to_string(models) + " values, got " + std::to_string(values.size()));
            }
            const double v = values.size() == 1 ? values[0] : values[k];
            if (!std::isfinite(v))
            {
                throw parameter_error(tensor, parameter, "value for model " + std::to_string(k) + " is not finite");
            }
            return v;
        }

        template <class E, class B, class Prune>
        inline any_expression compose_gta(const expression_list<E>& models, const B& base, const gta_options& o, Prune&& prune)
        {
            const std::string tensor = base.name();
            check_finite(tensor, "lambda", o.lambda);
            const auto deltas = task_vectors(models, base);
            // Shared: the pruned vector is read by the merge and measured by the rescaling.
            using pruned_type = shared_node<decltype(prune(deltas[0], std::size_t{0}, 1.0))>;
            using term_type = decltype(std::declval<pruned_type>() * std::declval<any_scalar>());
            expression_list<term_type> terms;
            for (std::size_t k = 0; k < deltas.size(); ++k)
            {
                const double density = per_model_value(o.densities, k, 1.0, tensor, "density", models.size());
                if (density < 0.0)
                {
                    throw parameter_error(tensor, "density", "must not be negative, got " + std::to_string(density));
                }
                auto pruned = shared(prune(deltas[k], k, density));
                // Sparsification is skipped at density >= 1, and so is rescaling.
                const rescale_kind kind = density >= 1.0 ? rescale_kind::none : o.rescale;
                any_scalar factor = rescale_factor(pruned, deltas[k], kind, density);
                terms.push_back(std::move(pruned) * std::move(factor));
            }
            election_options election;
            election.consensus = o.consensus;
            election.elect_on_weighted = true;
            election.divisor = !o.normalize ? merge_divisor::none : (o.consensus == sign_consensus::none ? merge_divisor::weights : o.elected_divisor);
            return map(add_scaled_fn{}, base, elected_sum(terms, o.weights, election), o.lambda);
        }
    }

    template <class E, class B>
    inline any_expression generalized_task_arithmetic(const expression_list<E>& models, const B& base, const gta_options& o)
    {
        const std::string tensor = base.name();
        const std::size_t n = numel(base.shape());
        const std::uint64_t stream = simd::hash_name(o.stream.empty() ? tensor : o.stream);
        switch (o.method)
        {
            case sparsification::none:
                return detail::compose_gta(models, base, o, [](const auto& d, std::size_t, double) { return d; });
            case sparsification::magnitude:
                return detail::compose_gta(models, base, o,
                                           [&](const auto& d, std::size_t, double density)
                                           {
                                               const double k = std::floor(std::min(density, 1.0) * static_cast<double>(n));
                                               if (k < 1.0 && n > 0)
                                               {
                                                   throw parameter_error(tensor, "density", "density " + std::to_string(density) + " keeps no element of "
                                                                                                + std::to_string(n) + "; raise it");
                                               }
                                               return keep_top_k(d, k);
                                           });
            case sparsification::outliers:
                return detail::compose_gta(models, base, o,
                                           [&](const auto& d, std::size_t k, double density)
                                           {
                                               const double gamma = detail::per_model_value(o.gammas, k, 0.01, tensor, "gamma", models.size());
                                               if (gamma < 0.0 || gamma >= 1.0)
                                               {
                                                   throw parameter_error(tensor, "gamma", "must be in [0, 1), got " + std::to_string(gamma));
                                               }
                                               const double size = static_cast<double>(n);
                                               const double keep = density >= 1.0 ? size : std::floor(density * size);
                                               double top = density >= 1.0 ? 0.0 : std::floor(gamma * size);
                                               // too few small entries to drop: drop fewer large ones instead
                                               top = std::min(top, size - keep);
                                               return keep_rank_range(d, top, top + keep);
                                           });
            case sparsification::random:
                return detail::compose_gta(models, base, o,
                                           [&](const auto& d, std::size_t k, double density)
                                           { return d * bernoulli_mask(d, std::min(density, 1.0), simd::make_random_key(o.seed, stream, k)); });
            case sparsification::ranked_random:
                return detail::compose_gta(models, base, o,
                                           [&](const auto& d, std::size_t k, double density)
                                           {
                                               const double epsilon = detail::per_model_value(o.epsilons, k, 0.15, tensor, "epsilon", models.size());
                                               return d * bernoulli_mask(d, magnitude_rank_probability(d, density, epsilon), simd::make_random_key(o.seed, stream, k));
                                           });
        }
        throw parameter_error(tensor, "sparsification", "unknown method");
    }

    namespace detail
    {
        inline std::vector<parameter_spec> gta_parameters(bool normalize, bool rescale, sparsification method)
        {
            std::vector<parameter_spec> specs = {
                {"weight", parameter_scope::per_model, std::nullopt, "weight of each task vector"},
                {"density", parameter_scope::per_model, 1.0, "fraction of each task vector kept"},
                {"lambda", parameter_scope::global, 1.0, "scale of the merged task vector"},
                {"normalize", parameter_scope::global, normalize, "divide by the sum of the weights taking part"},
                {"rescale", parameter_scope::global, rescale, "rescale sparsified task vectors to their original L1 norm"},
                {"rescale_norm", parameter_scope::global, std::nullopt, "rescaling: none, density, l1, l2 or linf (overrides rescale)", true},
                {"int8_mask", parameter_scope::global, false, "accepted for compatibility; masks are never stored"}};
            if (method == sparsification::outliers)
            {
                specs.push_back({"gamma", parameter_scope::per_model, 0.01, "fraction of largest magnitudes dropped"});
            }
            if (method == sparsification::ranked_random)
            {
                specs.push_back({"epsilon", parameter_scope::per_model, 0.15, "spread of keep probabilities around density"});
            }
            return specs;
        }

        inline gta_options gta_from_parameters(const method_inputs& in, const parameters& p, sparsification method, sign_consensus consensus)
        {
            const std::size_t k = in.models.size();
            gta_options o;
            o.method = method;
            o.consensus = consensus;
            o.weights = p.per_model("weight", k);
            o.densities = p.per_model("density", k);
            o.lambda = p.number("lambda");
            o.normalize = p.flag("normalize");
            o.rescale = p.has("rescale_norm") ? parse_rescale_kind(p.text("rescale_norm"), in.tensor)
                                              : (p.flag("rescale") ? rescale_kind::l1 : rescale_kind::none);
            if (p.has("gamma"))
            {
                o.gammas = p.per_model("gamma", k);
            }
            if (p.has("epsilon"))
            {
                o.epsilons = p.per_model("epsilon", k);
            }
            o.seed = in.seed;
            o.stream = in.tensor;
            return o;
        }

        inline method_info gta_method(std::string name, std::string summary, sparsification method, sign_consensus consensus, bool normalize, bool rescale)
        {
            method_info m;
            m.name = std::move(name);
            m.needs_base = true;
            m.summary = std::move(summary);
            m.parameters = gta_parameters(normalize, rescale, method);
            m.build = [method, consensus](const method_inputs& in, const parameters& p) -> any_expression
            { return generalized_task_arithmetic(in.models, *in.base, gta_from_parameters(in, p, method, consensus)); };
            return m;
        }
    }
}

#endif
