// Experiment 1 (see docs/results.md): writes multitask_accuracy.csv,
// multitask_lambda.csv and multitask_search.csv to --out.
#include "multitask.hpp"

int main(int argc, char** argv)
{
    return fmnist::run_experiment("fashion_mnist_multitask", argc, argv, [](const fmnist::settings& s, const fmnist::dataset& d)
    {
        fmnist::task_models models;
        fmnist::run_multitask(s, d, models);
    });
}
