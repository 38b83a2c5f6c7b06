// Experiment 4 (see docs/results.md): writes negation_curves.csv and negation_summary.csv to --out.
#include <exception>
#include <iostream>

#include "negation.hpp"

int main(int argc, char** argv)
{
    try
    {
        const fmnist::settings s = fmnist::parse_args(argc, argv);
        fmnist::setup_torch(s);
        const fmnist::dataset d = fmnist::load_dataset(s);
        const auto tasks = fmnist::transformed_tasks(s.seed);
        fmnist::task_models models = fmnist::train_task_models(s, d, tasks, false);
        models.multitask = fmnist::train_multitask(s, d, models.base, tasks);
        fmnist::run_negation(s, d, models);
    }
    catch (const std::exception& e)
    {
        std::cerr << "fashion_mnist_negation: " << e.what() << "\n";
        return 1;
    }
}
