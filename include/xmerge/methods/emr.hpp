/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_EMR_HPP
#define XMERGE_METHODS_EMR_HPP

#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../ops/any.hpp"
#include "../ops/arithmetic.hpp"
#include "../ops/computed.hpp"
#include "../ops/emr_election.hpp"
#include "../ops/list.hpp"
#include "../ops/map.hpp"
#include "../ops/reduce.hpp"
#include "../ops/task_vector.hpp"
#include "options.hpp"
#include "registry.hpp"
#include "per_task.hpp"
#include "task_arithmetic.hpp"

namespace xmerge
{
    /**
     * EMR-merging (Huang et al., "EMR-Merging: Tuning-Free High-Performance
     * Model Merging", NeurIPS 2024): elect one unified task vector tau_uni
     * and, per task, a mask and a rescaler (see emr_election):
     *
     *     rescaler_t = sum over tensors of mean|tau_t| / sum over tensors of mean|tau_uni * mask_t|
     *     model_t    = base + rescaler_t * tau_uni * mask_t.
     *
     * The rescaler is one number per task for the whole model (FusionBench's
     * emr_merge). A task whose mask keeps nothing anywhere gets rescaler 0,
     * so its model is the base (the reference divides by zero there).
     *
     * Cost: the rescalers need one statistics pass per tensor over the K
     * task vectors (2 K sums of magnitudes); each task's model is one
     * element-wise pass reading the base and the K task vectors.
     */
    template <class E, class B>
    auto emr_model(const expression_list<E>& models, const B& base, std::size_t task, double rescaler)
    {
        detail::check_finite(base.name(), "rescaler", rescaler);
        return xmerge::map(detail::add_scaled_fn{}, base, xmerge::emr_election(xmerge::task_vectors(models, base), emr_value::elected, task), rescaler);
    }

    /// Per task, the mean magnitudes of one tensor that EMR's rescalers sum over tensors.
    struct emr_magnitudes
    {
        /// mean |tau_t|
        std::vector<double> task;
        /// mean |tau_uni * mask_t|
        std::vector<double> elected;
    };

    /// The EMR magnitudes of one tensor (a statistics pass per value).
    template <class E, class B>
    emr_magnitudes emr_tensor_magnitudes(const expression_list<E>& models, const B& base, const eval_options& options = {});

    /// rescaler_t from the magnitudes of every tensor of the model (0 for a task whose elected sum is 0).
    inline std::vector<double> emr_rescalers(const std::vector<emr_magnitudes>& tensors);

    /// Every task's model_t for given rescalers (one per task), in task order; evaluate them together with evaluate_all().
    template <class E, class B>
    std::vector<any_expression> emr_models(const expression_list<E>& models, const B& base, const std::vector<double>& rescalers);

    /**
     * `emr` for the method registry: optional `task`. build() gives task
     * `task`'s model; build_outputs() gives `model.<t>`, `unified`,
     * `mask.<t>` and `rescalers` (shape [K], the whole-model values). The
     * rescalers come from the whole-model statistics `emr_task_magnitude`
     * and `emr_elected_magnitude`. Needs a base.
     */
    template <class = void>
    method_info emr_method();

    /********************
     * Implementation   *
     ********************/

    template <class E, class B>
    inline emr_magnitudes emr_tensor_magnitudes(const expression_list<E>& models, const B& base, const eval_options& options)
    {
        emr_magnitudes out;
        const auto deltas = xmerge::task_vectors(models, base);
        const double n = static_cast<double>(xmerge::numel(base.shape()));
        for (std::size_t t = 0; t < models.size(); ++t)
        {
            out.task.push_back(n > 0 ? xmerge::value_of(xmerge::norm_l1(deltas[t]), options) / n : 0.0);
            out.elected.push_back(n > 0 ? xmerge::value_of(xmerge::norm_l1(xmerge::emr_election(deltas, emr_value::elected, t)), options) / n : 0.0);
        }
        return out;
    }

    inline std::vector<double> emr_rescalers(const std::vector<emr_magnitudes>& tensors)
    {
        std::vector<double> task, elected;
        for (const auto& m : tensors)
        {
            if (task.empty())
            {
                task.assign(m.task.size(), 0.0);
                elected.assign(m.task.size(), 0.0);
            }
            if (m.task.size() != task.size() || m.elected.size() != task.size())
            {
                throw parameter_error("", "models", "EMR magnitudes of tensors with different task counts");
            }
            for (std::size_t t = 0; t < task.size(); ++t)
            {
                task[t] += m.task[t];
                elected[t] += m.elected[t];
            }
        }
        std::vector<double> out(task.size());
        for (std::size_t t = 0; t < task.size(); ++t)
        {
            out[t] = elected[t] > 0.0 ? task[t] / elected[t] : 0.0;
        }
        return out;
    }

    template <class E, class B>
    inline std::vector<any_expression> emr_models(const expression_list<E>& models, const B& base, const std::vector<double>& rescalers)
    {
        if (rescalers.size() != models.size())
        {
            throw parameter_error(base.name(), "rescalers", "expected " + std::to_string(models.size()) + " (one per task), got " + std::to_string(rescalers.size()));
        }
        std::vector<any_expression> out;
        for (std::size_t t = 0; t < models.size(); ++t)
        {
            out.emplace_back(xmerge::emr_model(models, base, t, rescalers[t]));
        }
        return out;
    }

    namespace detail
    {
        struct emr_parameters
        {
            std::optional<std::size_t> task;
        };

        /// The rescalers from the whole-model statistics in `in`.
        inline std::vector<double> emr_rescalers_of(const method_inputs& in)
        {
            emr_magnitudes m;
            m.task = in.model_statistics.at("emr_task_magnitude");
            m.elected = in.model_statistics.at("emr_elected_magnitude");
            return xmerge::emr_rescalers({m});
        }

        /// A [K] tensor holding `values`, for a named output.
        inline any_expression values_tensor(std::vector<double> values, const std::string& name)
        {
            const shape_type shape{values.size()};
            return xmerge::computed(shape, name,
                                    [values = std::move(values)](float* out)
                                    {
                                        for (std::size_t i = 0; i < values.size(); ++i)
                                        {
                                            out[i] = static_cast<float>(values[i]);
                                        }
                                    });
        }
    }

    template <class T>
    method_info emr_method()
    {
        using P = detail::emr_parameters;
        const auto options = option_set<P>().optional(&P::task, "task", "index of the task whose model build() gives");
        method_info m = xmerge::make_method_with_outputs(
            "emr", "per-task models from one elected task vector with per-task masks and rescalers (EMR-merging)", true, options,
            [](const method_inputs& in, const P& p) -> any_expression
            {
                const std::size_t t = detail::selected_task(p.task, in.models.size(), in.tensor, "emr");
                return xmerge::emr_model(in.models, *in.base, t, detail::emr_rescalers_of(in)[t]);
            },
            [](const method_inputs& in, const P&)
            {
                const std::vector<double> rescalers = detail::emr_rescalers_of(in);
                const auto deltas = xmerge::task_vectors(in.models, *in.base);
                std::vector<method_output> out;
                for (std::size_t t = 0; t < in.models.size(); ++t)
                {
                    out.push_back({"model." + std::to_string(t), xmerge::emr_model(in.models, *in.base, t, rescalers[t])});
                }
                out.push_back({"unified", xmerge::emr_election(deltas, emr_value::unified)});
                for (std::size_t t = 0; t < in.models.size(); ++t)
                {
                    out.push_back({"mask." + std::to_string(t), xmerge::emr_election(deltas, emr_value::mask, t)});
                }
                out.push_back({"rescalers", detail::values_tensor(rescalers, in.tensor)});
                return out;
            });
        // Summed over tensors by the model pipeline; finish is the identity.
        const auto identity = [](double v) { return v; };
        m.model_statistics = {{"emr_task_magnitude", [](const method_inputs& in) { return xmerge::emr_tensor_magnitudes(in.models, *in.base).task; }, identity},
                              {"emr_elected_magnitude", [](const method_inputs& in) { return xmerge::emr_tensor_magnitudes(in.models, *in.base).elected; },
                               identity}};
        return m;
    }
}

#endif
