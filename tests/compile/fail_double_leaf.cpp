// expect: xmerge::input: .*float.*bfloat16.*float16
// A float64 xtensor array is not a leaf: one static_assert says what is.
#include <vector>

#include <xmerge/xmerge.hpp>
#include <xtensor/xarray.hpp>

int main()
{
    xt::xarray<double> xd = {1.0, 2.0, 3.0};
    std::vector<float> out;
    xmerge::evaluate(xmerge::input(xd) * 2.0, out);
    return 0;
}
