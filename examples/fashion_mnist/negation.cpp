// Experiment 4 (see docs/results.md): writes negation_curves.csv and negation_summary.csv to --out.
#include "negation.hpp"

int main(int argc, char** argv)
{
    return fmnist::run_experiment("fashion_mnist_negation", argc, argv, [](const fmnist::settings& s, const fmnist::dataset& d)
    {
        const auto tasks = fmnist::transformed_tasks(s.seed);
        fmnist::task_models models = fmnist::train_task_models(s, d, tasks, false);
        models.multitask = fmnist::train_multitask(s, d, models.base, tasks);
        fmnist::run_negation(s, d, models);
    });
}
