// Experiment 2 (see docs/results.md): writes soups.csv to --out.
#include "soups.hpp"

int main(int argc, char** argv)
{
    return fmnist::run_experiment("fashion_mnist_soups", argc, argv,
                                  [](const fmnist::settings& s, const fmnist::dataset& d) { fmnist::run_soups(s, d, fmnist::train_base(s, d)); });
}
