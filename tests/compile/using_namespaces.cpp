// A user with both namespaces in scope: xmerge's list functions and
// statistics must win over xtensor's reducers of the same names.
#include <vector>

#include <xmerge/xmerge.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xmath.hpp>

using namespace xmerge;
using namespace xt;

int main()
{
    xt::xarray<float> xa = {1.0f, 2.0f, 3.0f};
    xt::xarray<float> xb = {4.0f, 5.0f, 6.0f};
    expression_list<std::decay_t<decltype(input(2.0f * xa))>> lazy;
    lazy.push_back(input(2.0f * xa, "a"));
    lazy.push_back(input(2.0f * xb, "b"));
    const std::vector<xt::xarray<float>> arrays{xa, xb};
    const std::vector<std::vector<float>> vectors{{1.0f}, {2.0f}};
    auto models = inputs(arrays);
    const auto& const_models = models;

    std::vector<float> out;
    evaluate(mean(lazy) + sum(lazy) + variance(lazy), out);
    evaluate(mean(models) + sum(const_models) + variance(models), out);
    evaluate(mean(inputs(vectors)), out);
    double s = value_of(norm(lazy[0]) + norm(models[0] - models[1]) + count_nonzero(models[1]) + dot(lazy[0], lazy[1]));
    s += value_of(norm(mean(models)));
    // xtensor's own functions still work on xtensor expressions
    const xt::xarray<float> m = xt::mean(xa);
    return s > 0.0 && m(0) > 0.0f ? 0 : 1;
}
