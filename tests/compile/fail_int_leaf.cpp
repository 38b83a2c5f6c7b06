// expect: xmerge::input: .*float.*bfloat16.*float16
// Integers are not a leaf either.
#include <vector>

#include <xmerge/xmerge.hpp>

int main()
{
    const std::vector<int> v{1, 2, 3};
    std::vector<float> out;
    xmerge::evaluate(xmerge::input(v) + 1.0, out);
    return 0;
}
