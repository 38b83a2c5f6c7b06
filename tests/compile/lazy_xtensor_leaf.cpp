// Lazy xtensor expressions as leaves: every statistic and part over them
// must compile (their types involve xt:: and std:: classes, whose functions
// argument-dependent lookup would otherwise find inside the library).
#include <vector>

#include <xmerge/xmerge.hpp>
#include <xtensor/xarray.hpp>

int main()
{
    xt::xarray<float> xa = {1.0f, 2.0f, 3.0f};
    xt::xarray<float> xb = {4.0f, 5.0f, 6.0f};
    const auto a = xmerge::input(2.0f * xa, "a");
    const auto b = xmerge::input(xa + xb, "b");
    double s = xmerge::value_of(xmerge::norm(a));
    s += xmerge::value_of(xmerge::norm(xmerge::input(2.0f * xa)));
    s += xmerge::value_of(xmerge::dot(a, b) + xmerge::norm_l1(a) * xmerge::norm_inf(b) - xmerge::total(a) / xmerge::count_nonzero(b));
    s += xmerge::value_of(xmerge::apply([](double x) { return x + 1.0; }, xmerge::sum_squares(a)));

    xmerge::expression_list<std::decay_t<decltype(a)>> list;
    list.push_back(a);
    list.push_back(xmerge::input(3.0f * xb, "c"));
    std::vector<float> out;
    xmerge::evaluate(xmerge::mean(list) + xmerge::sum(list) * xmerge::variance(list) + xmerge::max_magnitude(list), out);
    xmerge::evaluate(xmerge::weighted_sum(list, std::vector<double>{0.5, 0.5}) * xmerge::norm(xmerge::shared(a)), out);
    xmerge::evaluate(xmerge::lerp(a, b, 0.25) + xmerge::keep_top_k(a, 2.0), out);
    const xmerge::any_expression erased = a - b;
    s += xmerge::value_of(xmerge::norm(erased));
    return s > 0.0 ? 0 : 1;
}
