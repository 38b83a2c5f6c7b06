// Building and evaluating expression trees: arithmetic, maps, reductions,
// type erasure, xtensor leaves and error reporting.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xtensor.hpp>

#include "test_support.hpp"

using namespace xmerge;

TEST_CASE("expressions are lazy: inputs are read when evaluated", "[expression]")
{
    std::vector<float> a{1, 2, 3}, b{10, 20, 30}, out;
    const auto e = input(a) * 2.0 + input(b);
    a[1] = 100.0f;
    evaluate(e, out);
    CHECK(out == std::vector<float>{12, 220, 36});
}

TEST_CASE("element-wise arithmetic with tensors, numbers and scalar expressions", "[expression]")
{
    const std::vector<float> a{1, -2, 3, 4}, b{2, 2, -2, 8};
    const auto x = input(a, "a");
    const auto y = input(b, "b");
    std::vector<float> out;
    evaluate(x + y, out);
    CHECK(out == std::vector<float>{3, 0, 1, 12});
    evaluate(x - y, out);
    CHECK(out == std::vector<float>{-1, -4, 5, -4});
    evaluate(x * y, out);
    CHECK(out == std::vector<float>{2, -4, -6, 32});
    evaluate(x / y, out);
    CHECK(out == std::vector<float>{0.5f, -1, -1.5f, 0.5f});
    evaluate(-x, out);
    CHECK(out == std::vector<float>{-1, 2, -3, -4});
    evaluate(1.0 - x * 0.5, out);
    CHECK(out == std::vector<float>{0.5f, 2, -0.5f, -1});
    evaluate(scale(x, 3.0), out);
    CHECK(out == std::vector<float>{3, -6, 9, 12});
    // a scalar expression built from a statistic, broadcast
    evaluate(x * (total(y) / 10.0), out);
    CHECK(out == std::vector<float>{1, -2, 3, 4});
    evaluate(map([](auto p, auto q) { return simd::max(p, q); }, x, y), out);
    CHECK(out == std::vector<float>{2, 2, 3, 8});
}

TEST_CASE("lerp returns its endpoints exactly and accepts per-element weights", "[expression]")
{
    const auto a = xmerge_test::random_floats(1001, 1, -100.0f, 100.0f);
    const auto b = xmerge_test::random_floats(1001, 2, -100.0f, 100.0f);
    std::vector<float> out;
    evaluate(lerp(input(a), input(b), 0.0), out);
    CHECK(xmerge_test::same_bits(out, a));
    evaluate(lerp(input(a), input(b), 1.0), out);
    CHECK(xmerge_test::same_bits(out, b));
    std::vector<float> t(1001, 0.25f);
    evaluate(lerp(input(a), input(b), input(t)), out);
    for (std::size_t i = 0; i < a.size(); ++i)
    {
        REQUIRE(xmerge_test::close_in(dtype::float32, out[i], 0.75 * a[i] + 0.25 * b[i], 2.0));
    }
}

TEST_CASE("reductions agree with double-precision oracles", "[expression][statistics]")
{
    for (std::size_t n : xmerge_test::odd_sizes())
    {
        const auto a = xmerge_test::random_floats(n, 11);
        const auto b = xmerge_test::random_floats(n, 12);
        double dot_ = 0, ss = 0, l1 = 0, sum = 0, mx = 0;
        for (std::size_t i = 0; i < n; ++i)
        {
            dot_ += static_cast<double>(a[i]) * b[i];
            ss += static_cast<double>(a[i]) * a[i];
            l1 += std::fabs(a[i]);
            sum += a[i];
            mx = std::max(mx, static_cast<double>(std::fabs(a[i])));
        }
        const auto x = input(a);
        const auto y = input(b);
        const double tol = 1e-6 * (1.0 + static_cast<double>(n));
        INFO("n = " << n);
        CHECK(value_of(dot(x, y)) == Approx(dot_).margin(tol));
        CHECK(value_of(sum_squares(x)) == Approx(ss).margin(tol));
        CHECK(value_of(norm(x)) == Approx(std::sqrt(ss)).margin(tol));
        CHECK(value_of(norm_l1(x)) == Approx(l1).margin(tol));
        CHECK(value_of(total(x)) == Approx(sum).margin(tol));
        CHECK(value_of(norm_inf(x)) == mx);
    }
}

TEST_CASE("statistics may depend on statistics", "[expression][statistics]")
{
    const auto a = xmerge_test::random_floats(50000, 13, -3.0f, 3.0f);
    const auto x = input(a);
    const auto unit = x / norm(x);
    CHECK(value_of(norm(unit)) == Approx(1.0).epsilon(1e-6));
    // a statistic of a tensor of another shape
    const std::vector<float> other{3.0f, 4.0f};
    std::vector<float> out;
    evaluate(x * norm(input(other)), out);
    CHECK(out[17] == a[17] * 5.0f);
}

TEST_CASE("shape mismatches name both operands", "[expression][errors]")
{
    const std::vector<float> a(6), b(7);
    const auto x = input(a, "layer.weight");
    const auto y = input(b, "other.weight");
    CHECK_THROWS_AS(x + y, shape_error);
    CHECK_THROWS_WITH(x + y, Catch::Contains("layer.weight") && Catch::Contains("other.weight") && Catch::Contains("[6]") && Catch::Contains("[7]"));
    CHECK_THROWS_AS(dot(x, y), shape_error);
}

TEST_CASE("weighted sums check their weights", "[expression][errors]")
{
    const std::vector<std::vector<float>> m{std::vector<float>(4, 1.0f), std::vector<float>(4, 2.0f)};
    const auto models = inputs(m);
    CHECK_THROWS_AS(weighted_sum(models, {1.0}), parameter_error);
    CHECK_THROWS_WITH(weighted_sum(models, {1.0}), Catch::Contains("weights") && Catch::Contains("expected 2"));
    CHECK_THROWS_AS(weighted_sum(models, {1.0, std::nan("")}), parameter_error);
    CHECK_THROWS_AS(weighted_sum(expression_list<input_node>{}, {}), parameter_error);
    const std::vector<std::vector<float>> ragged{std::vector<float>(4), std::vector<float>(5)};
    CHECK_THROWS_WITH(sum(inputs(ragged)), Catch::Contains("model.1") && Catch::Contains("[5]"));

    std::vector<float> out;
    evaluate(weighted_sum(models, {0.5, 0.25}), out);
    CHECK(out == std::vector<float>(4, 1.0f));
    evaluate(mean(models), out);
    CHECK(out == std::vector<float>(4, 1.5f));
    // weights that are statistics
    expression_list<decltype(norm(models[0]))> w;
    w.push_back(norm(models[0]));
    w.push_back(norm(models[1]));
    evaluate(weighted_sum(models, w), out);
    CHECK(out == std::vector<float>(4, 2.0f * 1.0f + 4.0f * 2.0f));
}

TEST_CASE("any_expression evaluates like the expression it holds", "[expression]")
{
    const auto a = xmerge_test::random_floats(3000, 14);
    const auto b = xmerge_test::random_floats(3000, 15);
    const auto e = input(a) * (dot(input(a), input(b)) / sum_squares(input(b))) - input(b);
    std::vector<float> typed, erased;
    evaluate(e, typed);
    const any_expression any = e;
    evaluate(any, erased);
    CHECK(xmerge_test::same_bits(typed, erased));
    CHECK(any.shape() == shape_type{3000});
    const any_scalar s = dot(input(a), input(b));
    CHECK(value_of(s) == value_of(dot(input(a), input(b))));
}

TEST_CASE("lazy xtensor expressions are leaves", "[expression][xtensor]")
{
    xt::xtensor<float, 2> a = {{1, 2, 3}, {4, 5, 6}};
    xt::xtensor<float, 2> b = {{1, 1, 1}, {2, 2, 2}};
    const auto e = input(a + b * 2.0f, "sum") - input(a);
    const xt::xarray<float> out = materialize(e);
    CHECK(out == xt::xarray<float>{{2, 2, 2}, {4, 4, 4}});

    // broadcasting cannot be read linearly
    xt::xtensor<float, 1> row = {1, 2, 3};
    CHECK_THROWS_AS(materialize(input(a + row, "broadcast")), layout_error);
}
