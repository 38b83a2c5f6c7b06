// Experiment 2: model soups of fine-tunes of one task.
#ifndef XMERGE_EXAMPLES_FASHION_MNIST_SOUPS_HPP
#define XMERGE_EXAMPLES_FASHION_MNIST_SOUPS_HPP

#include <string>
#include <vector>

#include "common.hpp"
#include "task_models.hpp"

namespace fmnist
{
    struct soup_row
    {
        std::string model;
        double val = 0.0, test = 0.0, shifted = 0.0;
    };

    struct soups_result
    {
        std::vector<soup_row> ingredients;
        soup_row best_ingredient, uniform, greedy;
        std::vector<std::size_t> greedy_members;
        double seconds = 0.0;
    };

    /// One fine-tuning recipe of a soup ingredient.
    struct ingredient_recipe
    {
        double lr;
        /// Standard deviation of Gaussian pixel noise added to each training batch (0: none).
        double noise;
        std::uint64_t seed;
    };

    /**
     * Fine-tunes the base on the rotated images with several learning rates,
     * seeds and augmentations, then compares the best ingredient (by
     * validation accuracy), the uniform soup and the greedy soup, on the
     * rotated test images and on a shifted copy of them (Gaussian noise).
     */
    inline soups_result run_soups(const settings& s, const dataset& d, const mlp& base)
    {
        const stopwatch clock;
        const task target = transformed_tasks(s.seed)[0];
        const torch::Tensor val_x = target.apply(d.val.x).contiguous();
        const torch::Tensor test_x = target.apply(d.test.x).contiguous();
        const torch::Tensor shifted_x = noisy(test_x, 0.4, s.seed + 99);
        const std::vector<ingredient_recipe> recipes = {{0.003, 0.0, 61}, {0.01, 0.0, 62}, {0.03, 0.0, 63}, {0.01, 0.0, 64},
                                                        {0.003, 0.1, 65}, {0.01, 0.1, 66}, {0.03, 0.1, 67}, {0.01, 0.2, 68}};
        std::vector<mlp> nets;
        soups_result r;
        auto row_of = [&](const std::string& name, mlp& net)
        {
            return soup_row{name, evaluate(net, val_x, d.val.y).accuracy, evaluate(net, test_x, d.test.y).accuracy,
                            evaluate(net, shifted_x, d.test.y).accuracy};
        };
        for (std::size_t i = 0; i < recipes.size(); ++i)
        {
            const ingredient_recipe rc = recipes[i];
            mlp net = copy_mlp(s, base);
            train_options o;
            o.epochs = s.finetune_epochs;
            o.lr = rc.lr;
            o.batch = s.batch;
            o.seed = s.seed + rc.seed;
            o.transform = [&, rc](const torch::Tensor& x, std::int64_t step)
            {
                const torch::Tensor t = target.apply(x);
                return rc.noise > 0.0 ? noisy(t, rc.noise, s.seed + rc.seed * 1000003 + static_cast<std::uint64_t>(step)) : t;
            };
            train(net, d.train, o);
            nets.push_back(net);
            std::ostringstream name;
            name << "lr=" << rc.lr << " noise=" << rc.noise << " seed=" << rc.seed;
            r.ingredients.push_back(row_of(name.str(), net));
            log("soups: ingredient " + name.str() + ": val " + percent(r.ingredients.back().val) + "%");
        }

        const std::vector<xmerge::parameter_list> models = parameter_lists(nets);
        mlp work = copy_mlp(s, base);
        const std::vector<xmerge::tensor_ref> ws = xmerge::writable_parameters_of(*work);
        const xmerge::objective on_val = [&] { return evaluate(work, val_x, d.val.y).accuracy; };

        std::size_t best = 0;
        for (std::size_t i = 1; i < r.ingredients.size(); ++i)
        {
            if (r.ingredients[i].val > r.ingredients[best].val)
            {
                best = i;
            }
        }
        r.best_ingredient = r.ingredients[best];
        r.best_ingredient.model = "best_ingredient";
        xmerge::score_uniform_soup(models, ws, on_val);
        r.uniform = row_of("uniform_soup", work);
        const xmerge::soup_result greedy = xmerge::greedy_soup(models, ws, on_val);
        r.greedy = row_of("greedy_soup", work);
        r.greedy_members = greedy.soup;

        csv table(s, "soups.csv", "model,kind,val,test,test_shifted");
        for (const auto& i : r.ingredients)
        {
            table.row("\"" + i.model + "\"", "ingredient", i.val, i.test, i.shifted);
        }
        for (const auto* row : {&r.best_ingredient, &r.uniform, &r.greedy})
        {
            table.row(row->model, "soup", row->val, row->test, row->shifted);
        }
        std::string members;
        for (std::size_t m : r.greedy_members)
        {
            members += (members.empty() ? "" : " ") + std::to_string(m);
        }
        r.seconds = clock.seconds();
        log("soups: best ingredient " + percent(r.best_ingredient.test) + "% / " + percent(r.best_ingredient.shifted) + "% shifted, uniform "
            + percent(r.uniform.test) + "% / " + percent(r.uniform.shifted) + "%, greedy (" + members + ") " + percent(r.greedy.test) + "% / "
            + percent(r.greedy.shifted) + "%; " + std::to_string(r.seconds) + " s");
        return r;
    }
}

#endif
