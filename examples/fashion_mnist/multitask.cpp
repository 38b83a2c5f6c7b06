// Experiment 1 (see docs/results.md): writes multitask_accuracy.csv,
// multitask_lambda.csv and multitask_search.csv to --out.
#include <exception>
#include <iostream>

#include "multitask.hpp"

int main(int argc, char** argv)
{
    try
    {
        const fmnist::settings s = fmnist::parse_args(argc, argv);
        fmnist::setup_torch(s);
        const fmnist::dataset d = fmnist::load_dataset(s);
        fmnist::task_models models;
        fmnist::run_multitask(s, d, models);
    }
    catch (const std::exception& e)
    {
        std::cerr << "fashion_mnist_multitask: " << e.what() << "\n";
        return 1;
    }
}
