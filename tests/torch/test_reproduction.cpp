// The reduced Fashion-MNIST reproduction (experiments 1, 3 and 4 on a data
// subset with a narrower network): what must hold on real data, with margins.
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <string>

#include "lmc.hpp"
#include "multitask.hpp"
#include "negation.hpp"

namespace
{
    int failures = 0;

    void check(bool ok, const std::string& what)
    {
        std::cout << (ok ? "PASS: " : "FAIL: ") << what << std::endl;
        failures += ok ? 0 : 1;
    }
}

int main(int argc, char** argv)
{
    try
    {
        fmnist::settings s = fmnist::parse_args(argc, argv);
        if (!std::filesystem::exists(s.data_dir + "/train-images-idx3-ubyte.gz"))
        {
            std::cout << "SKIPPED: no Fashion-MNIST under " << s.data_dir << " (Debian: dataset-fashion-mnist)" << std::endl;
            return 0;
        }
        std::filesystem::create_directories(s.out_dir);
        fmnist::setup_torch(s);
        const fmnist::dataset d = fmnist::load_dataset(s);

        fmnist::task_models models;
        const fmnist::multitask_result mt = fmnist::run_multitask(s, d, models);
        const double base = mt.base.mean_accuracy();
        for (const auto& m : mt.merges)
        {
            check(m.mean_accuracy() > base + 0.02,
                  m.model + ": mean accuracy " + fmnist::percent(m.mean_accuracy()) + "% is above the base's " + fmnist::percent(base) + "% by 2 points");
        }
        // The best merge other than plain averaging: below the fine-tunes, and not below plain averaging beyond noise.
        const fmnist::accuracy_row* best = nullptr;
        for (const auto& m : mt.merges)
        {
            if (m.model != "uniform_average" && (!best || m.mean_accuracy() > best->mean_accuracy()))
            {
                best = &m;
            }
        }
        const double uniform = mt.merge("uniform_average").mean_accuracy();
        check(best->mean_accuracy() < mt.finetuned_own_mean(), "best merge (" + best->model + ", " + fmnist::percent(best->mean_accuracy())
                                                                   + "%) is below the fine-tunes on their own tasks (" + fmnist::percent(mt.finetuned_own_mean()) + "%)");
        // Noise: one binomial standard deviation of a mean over the test images of four tasks is about 0.5 points here; allow 1.
        check(best->mean_accuracy() >= uniform - 0.01,
              "best merge (" + fmnist::percent(best->mean_accuracy()) + "%) is not below uniform averaging (" + fmnist::percent(uniform) + "%) beyond 1 point");

        const fmnist::lmc_result lmc = fmnist::run_lmc(s, d, models.base);
        check(lmc.scratch_matched.loss_barrier < 0.5 * lmc.scratch_naive.loss_barrier,
              "loss barrier after weight matching (" + std::to_string(lmc.scratch_matched.loss_barrier) + ") is less than half the barrier before ("
                  + std::to_string(lmc.scratch_naive.loss_barrier) + ")");

        const fmnist::negation_result neg = fmnist::run_negation(s, d, models);
        for (const auto& row : neg.rows)
        {
            const double target_drop = row.target_start - row.target_negated;
            const double control_drop = row.control_start - row.control_negated;
            check(target_drop > 2.0 * control_drop + 0.02, "negating " + row.task + " (" + row.start + ") lowers its accuracy by " + fmnist::percent(target_drop)
                                                              + " points, more than twice the control's " + fmnist::percent(control_drop) + " plus 2");
        }
    }
    catch (const std::exception& e)
    {
        std::cerr << "fashion_mnist_reproduction: " << e.what() << std::endl;
        return 1;
    }
    std::cout << (failures ? std::to_string(failures) + " checks failed" : std::string("all checks passed")) << std::endl;
    return failures ? 1 : 0;
}
