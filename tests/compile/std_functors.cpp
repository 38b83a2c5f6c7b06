// Expressions whose types involve std:: functors: the library's internal
// calls must not pick up std::apply or other std:: functions through
// argument-dependent lookup.
#include <functional>
#include <vector>

#include <xmerge/xmerge.hpp>

int main()
{
    const std::vector<float> x{1.0f, 2.0f, 3.0f}, y{3.0f, 2.0f, 1.0f};
    const auto a = xmerge::input(x, "a");
    const auto b = xmerge::input(y, "b");
    const auto plus = xmerge::map(std::plus<>{}, a, b);
    const auto times = xmerge::map(std::multiplies<>{}, a, plus);
    double s = xmerge::value_of(xmerge::norm(plus));
    s += xmerge::value_of(xmerge::dot(plus, times) + xmerge::norm_l1(times) + xmerge::norm_inf(plus) + xmerge::sum_squares(times));
    s += xmerge::value_of(xmerge::apply(std::negate<>{}, xmerge::total(times)));

    const std::vector<std::vector<float>> models{x, y};
    const auto list = xmerge::transform(xmerge::inputs(models), [&](const auto& m) { return xmerge::map(std::minus<>{}, m, b); });
    std::vector<float> out;
    xmerge::evaluate(xmerge::mean(list) * xmerge::norm(xmerge::sum(list)), out);
    xmerge::evaluate(xmerge::elected_sum(list, std::vector<double>{1.0, 1.0}) + xmerge::variance(list), out);
    xmerge::evaluate(xmerge::shared(plus) * xmerge::rescale_factor(times, plus, xmerge::rescale_kind::l2, 0.5), out);
    const xmerge::any_scalar erased = xmerge::norm(times);
    s += xmerge::value_of(erased);
    return s > 0.0 ? 0 : 1;
}
