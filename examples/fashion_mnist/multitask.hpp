// Experiment 1: merging fine-tunes on four tasks into one network.
#ifndef XMERGE_EXAMPLES_FASHION_MNIST_MULTITASK_HPP
#define XMERGE_EXAMPLES_FASHION_MNIST_MULTITASK_HPP

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "common.hpp"
#include "task_models.hpp"

#include <xmerge/linalg.hpp>
#include <xmerge/methods/breadcrumbs.hpp>
#include <xmerge/methods/dare.hpp>
#include <xmerge/methods/model_stock.hpp>
#include <xmerge/methods/ties.hpp>

namespace fmnist
{
    /// One row of the table: a network's test accuracy per task.
    struct accuracy_row
    {
        std::string model;
        std::vector<double> test;
        /// The lambda chosen on validation data (NaN when the method has none).
        double lambda = std::numeric_limits<double>::quiet_NaN();

        double mean_accuracy() const { return mean(test); }
    };

    struct multitask_result
    {
        std::vector<std::string> tasks;
        accuracy_row base;
        /// Fine-tune k on all tasks (its own is entry k).
        std::vector<accuracy_row> finetuned;
        std::vector<accuracy_row> merges;
        accuracy_row multitask;
        double seconds = 0.0;

        /// Mean over tasks of each fine-tune's accuracy on its own task.
        double finetuned_own_mean() const
        {
            std::vector<double> own;
            for (std::size_t k = 0; k < finetuned.size(); ++k)
            {
                own.push_back(finetuned[k].test[k]);
            }
            return mean(own);
        }

        const accuracy_row& merge(const std::string& name) const
        {
            for (const auto& m : merges)
            {
                if (m.model == name)
                {
                    return m;
                }
            }
            throw std::invalid_argument("no merge named " + name);
        }
    };

    namespace detail
    {
        /// Gram matrices of each layer's inputs over `rows` training images of the task, through the fine-tune.
        inline std::vector<xmerge::dense_matrix<float>> layer_grams(mlp& net, const dataset& d, const task& t, std::int64_t rows)
        {
            torch::NoGradGuard no_grad;
            const torch::Tensor x = t.apply(d.train.x.slice(0, 0, std::min(rows, d.train.x.size(0))));
            std::vector<xmerge::dense_matrix<float>> out;
            for (const torch::Tensor& in : net->layer_inputs(x))
            {
                const torch::Tensor c = in.contiguous();
                xmerge::gram_accumulator acc(static_cast<std::size_t>(c.size(1)));
                acc.add(xmerge::as_tensor(c, "activations"));
                out.push_back(acc.gram());
            }
            return out;
        }

        inline std::string lambda_text(double lambda)
        {
            return std::isnan(lambda) ? std::string("") : std::to_string(lambda);
        }
    }

    /**
     * Trains the base and the task models, merges the fine-tunes with every
     * method, and evaluates each network on every task's test split. Lambdas
     * and searched coefficients are chosen on the validation split.
     */
    inline multitask_result run_multitask(const settings& s, const dataset& d, task_models& m)
    {
        const stopwatch clock;
        const std::vector<task> tasks = transformed_tasks(s.seed);
        const std::size_t k_tasks = tasks.size();
        const auto val = transform_split(d.val, tasks);
        const auto test = transform_split(d.test, tasks);
        multitask_result r;
        for (const auto& t : tasks)
        {
            r.tasks.push_back(t.name);
        }
        m = train_task_models(s, d, tasks, true);
        log("multitask: base and " + std::to_string(k_tasks) + " fine-tunes trained in " + std::to_string(clock.seconds()) + " s");

        r.base = {"base", accuracies(m.base, test)};
        for (std::size_t k = 0; k < k_tasks; ++k)
        {
            r.finetuned.push_back({"finetuned_" + tasks[k].name, accuracies(m.finetuned[k], test)});
        }

        std::vector<std::vector<xmerge::dense_matrix<float>>> grams;
        for (std::size_t k = 0; k < k_tasks; ++k)
        {
            grams.push_back(detail::layer_grams(m.finetuned[k], d, tasks[k], 4096));
        }

        const xmerge::parameter_list base = xmerge::parameters_of(*m.base);
        const std::vector<xmerge::parameter_list> models = parameter_lists(m.finetuned);
        const std::size_t tensors = base.size();
        mlp work = copy_mlp(s, m.base);
        const std::vector<xmerge::tensor_ref> ws = xmerge::writable_parameters_of(*work);
        const xmerge::objective on_val = [&] { return accuracies(work, val); };

        auto models_at = [&](std::size_t t)
        {
            xmerge::expression_list<xmerge::input_node> xs;
            for (const auto& model : models)
            {
                xs.push_back(xmerge::input_node(model[t]));
            }
            return xs;
        };
        const std::vector<double> ones(k_tasks, 1.0);
        std::vector<std::vector<xmerge::const_tensor_ref>> fisher_refs(k_tasks);
        for (std::size_t k = 0; k < k_tasks; ++k)
        {
            for (std::size_t t = 0; t < tensors; ++t)
            {
                fisher_refs[k].push_back(xmerge::as_tensor(m.fishers[k][t].data(), base[t].shape(), base[t].name() + ".fisher"));
            }
        }
        const std::vector<double> fisher_norms = xmerge::fisher_norms(fisher_refs);

        csv curves(s, "multitask_lambda.csv", "method,lambda,val_mean");
        auto record = [&](const std::string& name, double lambda)
        {
            r.merges.push_back({name, accuracies(work, test), lambda});
            log("  " + name + ": mean test accuracy " + percent(r.merges.back().mean_accuracy()) + "%" +
                (std::isnan(lambda) ? "" : " (lambda " + std::to_string(lambda) + ")"));
        };
        // Evaluates build(t) into the working network's tensor t, for every t.
        auto merge_into = [&](const std::vector<xmerge::tensor_ref>& out, auto&& build)
        {
            for (std::size_t t = 0; t < tensors; ++t)
            {
                xmerge::evaluate(build(t), out[t]);
            }
        };
        // Merges of the form base + lambda * delta: merge once at lambda = 1, then search lambda on the line.
        xmerge::parameter_buffers at_one(base);
        std::vector<double> grid;
        for (int i = 0; i <= 20; ++i)
        {
            grid.push_back(i / 10.0);
        }
        auto with_lambda = [&](const std::string& name, auto&& build)
        {
            merge_into(at_one.refs(), build);
            const xmerge::search_result found = xmerge::line_search(base, at_one.crefs(), grid, ws, on_val);
            for (const auto& p : found.points)
            {
                curves.row(name, p.coefficients[0], p.result.value);
            }
            record(name, found.best().coefficients[0]);
            return found.best().coefficients[0];
        };

        merge_into(ws, [&](std::size_t t) { return xmerge::mean(models_at(t)); });
        record("uniform_average", std::numeric_limits<double>::quiet_NaN());

        const double ta_lambda = with_lambda("task_arithmetic", [&](std::size_t t) { return xmerge::task_arithmetic(models_at(t), xmerge::input_node(base[t]), ones); });
        with_lambda("ties", [&](std::size_t t) { return xmerge::ties(models_at(t), xmerge::input_node(base[t]), ones, {0.2}); });
        with_lambda("dare_ties", [&](std::size_t t)
        {
            return xmerge::generalized_task_arithmetic(models_at(t), xmerge::input_node(base[t]),
                                                       xmerge::dare_options(ones, {0.3}, true, s.seed, base[t].name()));
        });
        with_lambda("breadcrumbs", [&](std::size_t t)
        {
            return xmerge::generalized_task_arithmetic(models_at(t), xmerge::input_node(base[t]), xmerge::breadcrumbs_options(ones, {0.2}, {0.01}, false));
        });

        merge_into(ws, [&](std::size_t t) { return xmerge::model_stock(models_at(t), xmerge::input_node(base[t])); });
        record("model_stock", std::numeric_limits<double>::quiet_NaN());

        merge_into(ws, [&](std::size_t t)
        {
            xmerge::expression_list<xmerge::input_node> fs;
            for (std::size_t k = 0; k < k_tasks; ++k)
            {
                fs.push_back(xmerge::input_node(fisher_refs[k][t]));
            }
            xmerge::fisher_options o;
            o.fisher_norms = fisher_norms;
            return xmerge::fisher_merging(models_at(t), fs, o);
        });
        record("fisher", std::numeric_limits<double>::quiet_NaN());

        // Tensors are fc0.weight, fc0.bias, fc1.weight, ...: a weight's layer is t / 2; biases have no Gram matrix (their mean).
        merge_into(ws, [&](std::size_t t) -> xmerge::any_expression
        {
            xmerge::expression_list<xmerge::input_node> gs;
            if (t % 2 == 0)
            {
                for (std::size_t k = 0; k < k_tasks; ++k)
                {
                    gs.push_back(xmerge::input(grams[k][t / 2]));
                }
            }
            return xmerge::regmean(models_at(t), gs, {0.9, 1e-4});
        });
        record("regmean", std::numeric_limits<double>::quiet_NaN());

        // Per-task coefficients, then per-(layer, task) ones, from task arithmetic's lambda.
        csv search(s, "multitask_search.csv", "method,evaluation,val_mean,coefficients");
        auto coefficient_run = [&](const std::string& name, std::vector<std::size_t> groups, std::size_t group_count, std::size_t budget)
        {
            xmerge::coefficient_search_options o;
            o.initial.assign(group_count * k_tasks, ta_lambda);
            o.lower = 0.0;
            o.upper = 1.5;
            o.budget = budget;
            o.random_points = budget / 3;
            o.seed = s.seed + 7;
            const xmerge::search_result found = xmerge::coefficient_search(xmerge::task_arithmetic_builder(models, base, std::move(groups)), ws, on_val, o);
            for (std::size_t i = 0; i < found.points.size(); ++i)
            {
                std::string c;
                for (double x : found.points[i].coefficients)
                {
                    c += (c.empty() ? "" : " ") + std::to_string(x);
                }
                search.row(name, i, found.points[i].result.value, c);
            }
            record(name, std::numeric_limits<double>::quiet_NaN());
        };
        coefficient_run("task_arithmetic_per_task", {}, 1, s.quick ? 16 : 40);
        std::vector<std::string> layer_names;
        const auto groups = xmerge::layer_groups(base, &layer_names);
        coefficient_run("task_arithmetic_per_layer", groups, layer_names.size(), s.quick ? 24 : 60);

        m.multitask = train_multitask(s, d, m.base, tasks);
        r.multitask = {"multitask", accuracies(m.multitask, test)};

        std::string header = "model,kind,lambda";
        for (const auto& t : r.tasks)
        {
            header += "," + t;
        }
        csv table(s, "multitask_accuracy.csv", header + ",mean");
        auto write = [&](const accuracy_row& row, const std::string& kind)
        {
            std::ostringstream line;
            line << row.model << "," << kind << "," << detail::lambda_text(row.lambda);
            for (double a : row.test)
            {
                line << "," << a;
            }
            table.row(line.str(), row.mean_accuracy());
        };
        write(r.base, "base");
        for (const auto& f : r.finetuned)
        {
            write(f, "finetuned");
        }
        for (const auto& mg : r.merges)
        {
            write(mg, "merge");
        }
        write(r.multitask, "multitask");
        r.seconds = clock.seconds();
        log("multitask: base " + percent(r.base.mean_accuracy()) + "%, fine-tunes on their own tasks " + percent(r.finetuned_own_mean()) + "%, multi-task "
            + percent(r.multitask.mean_accuracy()) + "% (" + std::to_string(r.seconds) + " s)");
        return r;
    }
}

#endif
