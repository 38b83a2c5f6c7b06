// Experiment 4: forgetting a task by subtracting its task vector.
#ifndef XMERGE_EXAMPLES_FASHION_MNIST_NEGATION_HPP
#define XMERGE_EXAMPLES_FASHION_MNIST_NEGATION_HPP

#include <string>
#include <vector>

#include "common.hpp"
#include "task_models.hpp"

#include <xmerge/ops/arithmetic.hpp>

namespace fmnist
{
    struct negation_row
    {
        /// The network the task vector is subtracted from: "base" or "multitask".
        std::string start;
        std::string task;
        /// The largest lambda on the grid keeping the control's validation accuracy at >= 95% of the start's.
        double lambda = 0.0;
        double target_start = 0.0, target_negated = 0.0;
        double control_start = 0.0, control_negated = 0.0;
    };

    struct negation_result
    {
        std::vector<negation_row> rows;
        double seconds = 0.0;
    };

    /**
     * For each task and each start network S (the base, and the multi-task
     * network when trained), S - lambda * (finetuned - base) for lambda = 0,
     * 0.1, ..., 2: accuracy on that task (the target) and on the plain
     * images (the control, the base's own task). Lambda is chosen on
     * validation data as in Ilharco et al. (ICLR 2023): the largest that
     * keeps the control accuracy at 95% of the start's or more.
     */
    inline negation_result run_negation(const settings& s, const dataset& d, const task_models& m)
    {
        const stopwatch clock;
        const std::vector<task> tasks = transformed_tasks(s.seed);
        const auto val = transform_split(d.val, tasks);
        const auto test = transform_split(d.test, tasks);
        const xmerge::parameter_list base = xmerge::parameters_of(*m.base);
        mlp work = copy_mlp(s, m.base);
        const std::vector<xmerge::tensor_ref> ws = xmerge::writable_parameters_of(*work);
        xmerge::parameter_buffers negated(base);
        std::vector<double> grid;
        for (int i = 0; i <= 20; ++i)
        {
            grid.push_back(i / 10.0);
        }
        negation_result r;
        csv curves(s, "negation_curves.csv", "start,task,lambda,target_val,control_val,target_test,control_test");
        csv summary(s, "negation_summary.csv", "start,task,lambda,target_start,target_negated,control_start,control_negated");
        std::vector<std::pair<std::string, const mlp*>> starts = {{"base", &m.base}};
        if (m.multitask)
        {
            starts.emplace_back("multitask", &m.multitask);
        }
        for (const auto& [start_name, start_net] : starts)
        {
            const xmerge::parameter_list start = xmerge::parameters_of(**start_net);
            for (std::size_t k = 0; k < tasks.size(); ++k)
            {
                // start - (finetuned - base): the line from the start to it is start - lambda * tau.
                const xmerge::parameter_list ft = xmerge::parameters_of(*m.finetuned[k]);
                for (std::size_t t = 0; t < base.size(); ++t)
                {
                    xmerge::evaluate(xmerge::input(start[t]) - (xmerge::input(ft[t]) - xmerge::input(base[t])), negated.refs()[t]);
                }
                const xmerge::objective f = [&]
                {
                    const double target_val = evaluate(work, val[k].x, val[k].y).accuracy;
                    const double control_val = evaluate(work, d.val.x, d.val.y).accuracy;
                    return xmerge::score{control_val, {target_val, control_val, evaluate(work, test[k].x, test[k].y).accuracy,
                                                       evaluate(work, d.test.x, d.test.y).accuracy}};
                };
                const xmerge::search_result line = xmerge::line_search(start, negated.crefs(), grid, ws, f);
                const auto& at0 = line.points.front().result.details;
                negation_row row{start_name, tasks[k].name, 0.0, at0[2], at0[2], at0[3], at0[3]};
                for (const auto& p : line.points)
                {
                    const auto& v = p.result.details;
                    curves.row(start_name, tasks[k].name, p.coefficients[0], v[0], v[1], v[2], v[3]);
                    if (v[1] >= 0.95 * at0[1])
                    {
                        row.lambda = p.coefficients[0];
                        row.target_negated = v[2];
                        row.control_negated = v[3];
                    }
                }
                summary.row(row.start, row.task, row.lambda, row.target_start, row.target_negated, row.control_start, row.control_negated);
                log("negation from " + row.start + ": " + row.task + ": lambda " + std::to_string(row.lambda) + ", target " + percent(row.target_start)
                    + "% -> " + percent(row.target_negated) + "%, control " + percent(row.control_start) + "% -> " + percent(row.control_negated) + "%");
                r.rows.push_back(row);
            }
        }
        r.seconds = clock.seconds();
        return r;
    }
}

#endif
