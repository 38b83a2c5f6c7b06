/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_GENERALIZED_TASK_ARITHMETIC_HPP
#define XMERGE_METHODS_GENERALIZED_TASK_ARITHMETIC_HPP

#include <cmath>
#include <cstdint>
#include <optional>
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
#include "options.hpp"
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

        /// The registry parameters of the generalized task arithmetic methods (mergekit's names and defaults).
        struct gta_parameters
        {
            std::vector<double> weight;
            std::vector<double> density{1.0};
            double lambda = 1.0;
            bool normalize = false;
            bool rescale = false;
            std::optional<rescale_kind> rescale_norm;
            bool int8_mask = false;
            std::vector<double> gamma{0.01};
            std::vector<double> epsilon{0.15};
        };

        /// gta_options from registry parameters.
        inline gta_options gta_from_parameters(const method_inputs& in, const gta_parameters& p, sparsification method, sign_consensus consensus);

        /// A registry entry for one preset.
        template <class = void>
        method_info gta_method(std::string name, std::string summary, sparsification method, sign_consensus consensus, bool normalize, bool rescale);
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
            detail::check_finite(tensor, "lambda", o.lambda);
            const auto deltas = xmerge::task_vectors(models, base);
            // Shared: the pruned vector is read by the merge and measured by the rescaling.
            using pruned_type = shared_node<decltype(prune(deltas[0], std::size_t{0}, 1.0))>;
            using term_type = decltype(std::declval<pruned_type>() * std::declval<any_scalar>());
            expression_list<term_type> terms;
            for (std::size_t k = 0; k < deltas.size(); ++k)
            {
                const double density = detail::per_model_value(o.densities, k, 1.0, tensor, "density", models.size());
                if (density < 0.0)
                {
                    throw parameter_error(tensor, "density", "must not be negative, got " + std::to_string(density));
                }
                auto pruned = xmerge::shared(prune(deltas[k], k, density));
                // Sparsification is skipped at density >= 1, and so is rescaling.
                const rescale_kind kind = density >= 1.0 ? rescale_kind::none : o.rescale;
                any_scalar factor = xmerge::rescale_factor(pruned, deltas[k], kind, density);
                terms.push_back(std::move(pruned) * std::move(factor));
            }
            election_options election;
            election.consensus = o.consensus;
            election.elect_on_weighted = true;
            election.divisor = !o.normalize ? merge_divisor::none : (o.consensus == sign_consensus::none ? merge_divisor::weights : o.elected_divisor);
            return xmerge::map(add_scaled_fn{}, base, xmerge::elected_sum(terms, o.weights, election), o.lambda);
        }
    }

    template <class E, class B>
    inline any_expression generalized_task_arithmetic(const expression_list<E>& models, const B& base, const gta_options& o)
    {
        const std::string tensor = base.name();
        const std::size_t n = xmerge::numel(base.shape());
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
                                               return xmerge::keep_top_k(d, k);
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
                                               return xmerge::keep_rank_range(d, top, top + keep);
                                           });
            case sparsification::random:
                return detail::compose_gta(models, base, o,
                                           [&](const auto& d, std::size_t k, double density)
                                           { return d * xmerge::bernoulli_mask(d, std::min(density, 1.0), simd::make_random_key(o.seed, stream, k)); });
            case sparsification::ranked_random:
                return detail::compose_gta(models, base, o,
                                           [&](const auto& d, std::size_t k, double density)
                                           {
                                               const double epsilon = detail::per_model_value(o.epsilons, k, 0.15, tensor, "epsilon", models.size());
                                               return d * xmerge::bernoulli_mask(d, xmerge::magnitude_rank_probability(d, density, epsilon), simd::make_random_key(o.seed, stream, k));
                                           });
        }
        throw parameter_error(tensor, "sparsification", "unknown method");
    }

    namespace detail
    {
        inline std::vector<std::pair<std::string, rescale_kind>> rescale_choices()
        {
            return {{"none", rescale_kind::none}, {"density", rescale_kind::density}, {"l1", rescale_kind::l1}, {"l2", rescale_kind::l2}, {"linf", rescale_kind::linf}};
        }

        inline gta_options gta_from_parameters(const method_inputs& in, const gta_parameters& p, sparsification method, sign_consensus consensus)
        {
            gta_options o;
            o.method = method;
            o.consensus = consensus;
            o.weights = p.weight;
            o.densities = p.density;
            o.lambda = p.lambda;
            o.normalize = p.normalize;
            o.rescale = p.rescale_norm ? *p.rescale_norm : (p.rescale ? rescale_kind::l1 : rescale_kind::none);
            if (method == sparsification::outliers)
            {
                o.gammas = p.gamma;
            }
            if (method == sparsification::ranked_random)
            {
                o.epsilons = p.epsilon;
            }
            o.seed = in.seed;
            o.stream = in.tensor;
            return o;
        }

        template <class T>
        method_info gta_method(std::string name, std::string summary, sparsification method, sign_consensus consensus, bool normalize, bool rescale)
        {
            using P = gta_parameters;
            P defaults;
            defaults.normalize = normalize;
            defaults.rescale = rescale;
            auto options = option_set<P>(defaults)
                               .per_model(&P::weight, "weight", "weight of each task vector")
                               .per_model(&P::density, "density", "fraction of each task vector kept")
                               .global(&P::lambda, "lambda", "scale of the merged task vector")
                               .global(&P::normalize, "normalize", "divide by the sum of the weights taking part")
                               .global(&P::rescale, "rescale", "rescale sparsified task vectors to their original L1 norm")
                               .choice(&P::rescale_norm, "rescale_norm", "rescaling: none, density, l1, l2 or linf (overrides rescale)", rescale_choices())
                               .global(&P::int8_mask, "int8_mask", "accepted for compatibility; masks are never stored");
            if (method == sparsification::outliers)
            {
                options.per_model(&P::gamma, "gamma", "fraction of largest magnitudes dropped");
            }
            if (method == sparsification::ranked_random)
            {
                options.per_model(&P::epsilon, "epsilon", "spread of keep probabilities around density");
            }
            return xmerge::make_method(std::move(name), std::move(summary), true, std::move(options),
                               [method, consensus](const method_inputs& in, const P& p) -> any_expression
                               { return xmerge::generalized_task_arithmetic(in.models, *in.base, gta_from_parameters(in, p, method, consensus)); });
        }
    }
}

#endif
