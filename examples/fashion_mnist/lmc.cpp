// Experiment 3 (see docs/results.md): writes lmc_curves.csv and lmc_summary.csv to --out.
#include "lmc.hpp"

int main(int argc, char** argv)
{
    return fmnist::run_experiment("fashion_mnist_lmc", argc, argv,
                                  [](const fmnist::settings& s, const fmnist::dataset& d) { fmnist::run_lmc(s, d, fmnist::train_base(s, d)); });
}
