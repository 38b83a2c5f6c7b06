// Experiment 2 (see docs/results.md): writes soups.csv to --out.
#include <exception>
#include <iostream>

#include "soups.hpp"

int main(int argc, char** argv)
{
    try
    {
        const fmnist::settings s = fmnist::parse_args(argc, argv);
        fmnist::setup_torch(s);
        const fmnist::dataset d = fmnist::load_dataset(s);
        fmnist::run_soups(s, d, fmnist::train_base(s, d));
    }
    catch (const std::exception& e)
    {
        std::cerr << "fashion_mnist_soups: " << e.what() << "\n";
        return 1;
    }
}
