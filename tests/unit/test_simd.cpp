// The batch kernels against their float twin: same element function, B = float.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "test_support.hpp"

using namespace xmerge;

namespace
{
    const auto mix = [](auto a, auto b, auto s) { return simd::max(a * s - b, simd::abs(b)) + simd::min(a, b); };
    const auto fused = [](auto a, auto b, auto s) { return simd::fma(s, a, b); };
}

TEST_CASE("transform matches the scalar twin bit for bit at every size", "[simd]")
{
    for (std::size_t n : xmerge_test::odd_sizes())
    {
        const auto a = xmerge_test::random_floats(n, 1);
        const auto b = xmerge_test::random_floats(n, 2);
        std::vector<float> got(n), want(n);
        simd::transform(n, got.data(), mix, a.data(), b.data(), 0.75f);
        simd::transform<float>(n, want.data(), mix, a.data(), b.data(), 0.75f);
        INFO("n = " << n);
        REQUIRE(xmerge_test::same_bits(got, want));
    }
}

TEST_CASE("fused multiply-add agrees with the twin to one rounding of its terms", "[simd]")
{
    for (std::size_t n : xmerge_test::odd_sizes())
    {
        const auto a = xmerge_test::random_floats(n, 3);
        const auto b = xmerge_test::random_floats(n, 4);
        std::vector<float> got(n), want(n);
        simd::transform(n, got.data(), fused, a.data(), b.data(), 0.3f);
        simd::transform<float>(n, want.data(), fused, a.data(), b.data(), 0.3f);
        for (std::size_t i = 0; i < n; ++i)
        {
            // without FMA instructions the batch rounds the product too
            const double terms = std::fabs(0.3 * a[i]) + std::fabs(b[i]);
            REQUIRE(std::fabs(got[i] - want[i]) <= std::ldexp(terms, -23));
        }
    }
}

TEST_CASE("an element's result does not depend on where a chunk starts", "[simd]")
{
    const std::size_t n = 1000;
    const auto a = xmerge_test::random_floats(n, 5);
    const auto b = xmerge_test::random_floats(n, 6);
    std::vector<float> whole(n), split(n);
    simd::transform(n, whole.data(), fused, a.data(), b.data(), 1.7f);
    for (std::size_t cut : {1u, 3u, 17u, 513u})
    {
        simd::transform(cut, split.data(), fused, a.data(), b.data(), 1.7f);
        simd::transform(n - cut, split.data() + cut, fused, a.data() + cut, b.data() + cut, 1.7f);
        REQUIRE(xmerge_test::same_bits(whole, split));
    }
}

TEST_CASE("transform may write over an operand", "[simd]")
{
    auto a = xmerge_test::random_floats(101, 7);
    const auto b = xmerge_test::random_floats(101, 8);
    std::vector<float> want(101);
    simd::transform<float>(101, want.data(), mix, a.data(), b.data(), 2.0f);
    simd::transform(101, a.data(), mix, a.data(), b.data(), 2.0f);
    REQUIRE(xmerge_test::same_bits(a, want));
}

TEST_CASE("sum and maximum agree with double-precision oracles", "[simd]")
{
    for (std::size_t n : xmerge_test::odd_sizes())
    {
        const auto a = xmerge_test::random_floats(n, 9);
        const auto b = xmerge_test::random_floats(n, 10);
        double dot = 0.0, l1 = 0.0;
        float mx = 0.0f;
        for (std::size_t i = 0; i < n; ++i)
        {
            dot += static_cast<double>(a[i]) * b[i];
            l1 += std::fabs(a[i]);
            mx = std::max(mx, std::fabs(a[i]));
        }
        const double got_dot = simd::sum(n, [](auto x, auto y) { return x * y; }, a.data(), b.data());
        const double twin_dot = simd::sum<float>(n, [](auto x, auto y) { return x * y; }, a.data(), b.data());
        const double got_l1 = simd::sum(n, [](auto x) { return simd::abs(x); }, a.data());
        INFO("n = " << n);
        CHECK(got_dot == Approx(dot).margin(1e-5 * std::sqrt(static_cast<double>(n) + 1)));
        CHECK(twin_dot == Approx(dot).margin(1e-5 * std::sqrt(static_cast<double>(n) + 1)));
        CHECK(got_l1 == Approx(l1).epsilon(1e-5));
        CHECK(simd::maximum(n, 0.0f, [](auto x) { return simd::abs(x); }, a.data()) == mx);
        CHECK(simd::maximum<float>(n, 0.0f, [](auto x) { return simd::abs(x); }, a.data()) == mx);
    }
}

TEST_CASE("max and min keep the first operand when the comparison is false", "[simd]")
{
    const float nan = std::nanf("");
    std::vector<float> a{nan, 1.0f, 2.0f}, b{1.0f, nan, 3.0f}, got(3), want(3);
    const auto f = [](auto x, auto y) { return simd::max(x, y) + simd::min(x, y) * 0.0f; };
    simd::transform(3, got.data(), f, a.data(), b.data());
    simd::transform<float>(3, want.data(), f, a.data(), b.data());
    CHECK(std::isnan(got[0]));
    CHECK(std::isnan(want[0]));
    CHECK(std::isnan(got[1]) == std::isnan(want[1]));
    CHECK(got[2] == want[2]);
}
