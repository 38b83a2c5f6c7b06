// Uses the installed headers the way a downstream project would.
#include <cstdio>
#include <vector>

#include <xmerge/xmerge.hpp>

int main()
{
    std::vector<float> base(1000, 1.0f), a(1000, 2.0f), b(1000, 4.0f), out(1000);
    const std::vector<std::vector<float>> models{a, b};
    const auto merged = xmerge::task_arithmetic(xmerge::inputs(models), xmerge::input(base, "base"), {0.5, 0.5});
    xmerge::evaluate(merged, out);
    std::printf("task arithmetic: %g (expected 3)\n", static_cast<double>(out[999]));
    return out[0] == 3.0f && out[999] == 3.0f ? 0 : 1;
}
