// linear, task_arithmetic and interpolate against oracles, their parameter
// checks, and building them by name through the registry.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "test_support.hpp"
#include "registry_support.hpp"

using namespace xmerge;

namespace
{
    struct fixture
    {
        std::size_t n = 4099;
        std::vector<float> base = xmerge_test::random_floats(n, 1);
        std::vector<std::vector<float>> models{xmerge_test::random_floats(n, 2), xmerge_test::random_floats(n, 3), xmerge_test::random_floats(n, 4)};
    };
}

TEST_CASE("linear is the (normalized) weighted average", "[methods][linear]")
{
    fixture f;
    const std::vector<double> w{0.2, 0.3, 0.5};
    for (bool normalize : {true, false})
    {
        std::vector<float> out;
        evaluate(linear(inputs(f.models), {2 * w[0], 2 * w[1], 2 * w[2]}, normalize), out);
        for (std::size_t i = 0; i < f.n; ++i)
        {
            double s = 0.0;
            for (std::size_t k = 0; k < 3; ++k)
            {
                s += 2 * w[k] * f.models[k][i];
            }
            const double expected = normalize ? s / 2.0 : s;
            REQUIRE(out[i] == Approx(expected).margin(1e-6));  // inputs in [-1, 1]
        }
    }
    std::vector<float> soup;
    evaluate(uniform_soup(inputs(f.models)), soup);
    CHECK(soup[7] == Approx((f.models[0][7] + f.models[1][7] + f.models[2][7]) / 3.0).epsilon(1e-6));
}

TEST_CASE("linear rejects weights it cannot use", "[methods][linear][errors]")
{
    fixture f;
    const auto models = inputs(f.models);
    CHECK_THROWS_AS(linear(models, {1.0, -1.0, 0.0}), parameter_error);
    CHECK_THROWS_WITH(linear(models, {1.0, -1.0, 0.0}), Catch::Contains("sum to zero"));
    CHECK_NOTHROW(linear(models, {1.0, -1.0, 0.0}, false));
    CHECK_THROWS_WITH(linear(models, {1.0, 1.0}), Catch::Contains("weights") && Catch::Contains("expected 3") && Catch::Contains("model.0"));
    CHECK_THROWS_AS(linear(models, {1.0, INFINITY, 1.0}), parameter_error);
    CHECK_THROWS_AS(linear(expression_list<input_node>{}, {}), parameter_error);
}

TEST_CASE("task arithmetic adds, scales and negates task vectors", "[methods][task_arithmetic]")
{
    fixture f;
    const auto base = input(f.base, "base");
    const auto models = inputs(f.models);
    const std::vector<double> w{1.0, 0.5, -0.3};
    for (bool normalize : {false, true})
    {
        std::vector<float> out;
        evaluate(task_arithmetic(models, base, w, {0.7, normalize}), out);
        for (std::size_t i = 0; i < f.n; ++i)
        {
            double mixed = 0.0;
            for (std::size_t k = 0; k < 3; ++k)
            {
                mixed += w[k] * (static_cast<double>(f.models[k][i]) - f.base[i]);
            }
            if (normalize)
            {
                mixed /= 1.2;
            }
            REQUIRE(out[i] == Approx(f.base[i] + 0.7 * mixed).margin(2e-6));
        }
    }
    // negating one task: base - (x - base)
    std::vector<float> neg;
    const std::vector<std::vector<float>> first{f.models[0]};
    evaluate(task_arithmetic(inputs(first), base, {-1.0}), neg);
    CHECK(neg[5] == Approx(2.0 * f.base[5] - f.models[0][5]).margin(1e-6));
    // lambda 0 is the base, exactly
    std::vector<float> same;
    evaluate(task_arithmetic(models, base, w, {0.0}), same);
    CHECK(xmerge_test::same_bits(same, f.base));
    // normalize with weights summing to ~0 divides by 1, as mergekit does
    std::vector<float> a, b;
    evaluate(task_arithmetic(models, base, {1.0, -1.0, 0.0}, {1.0, true}), a);
    evaluate(task_arithmetic(models, base, {1.0, -1.0, 0.0}, {1.0, false}), b);
    CHECK(xmerge_test::same_bits(a, b));
}

TEST_CASE("task arithmetic checks lambda and weights", "[methods][task_arithmetic][errors]")
{
    fixture f;
    const auto base = input(f.base, "layers.0.w");
    const auto models = inputs(f.models);
    CHECK_THROWS_AS(task_arithmetic(models, base, {1, 1, 1}, {std::nan("")}), parameter_error);
    CHECK_THROWS_WITH(task_arithmetic(models, base, {1, 1, 1}, {INFINITY}), Catch::Contains("lambda") && Catch::Contains("layers.0.w"));
    CHECK_THROWS_AS(task_arithmetic(models, base, {1, 1}), parameter_error);
    const std::vector<float> short_base(10);
    CHECK_THROWS_AS(task_arithmetic(models, input(short_base, "short"), {1, 1, 1}), shape_error);
}

TEST_CASE("interpolate moves from the old to the new model", "[methods][interpolate]")
{
    fixture f;
    const auto old_m = input(f.models[0]);
    const auto new_m = input(f.models[1]);
    std::vector<float> out;
    evaluate(interpolate(old_m, new_m, 0.0), out);
    CHECK(xmerge_test::same_bits(out, f.models[0]));
    evaluate(interpolate(old_m, new_m, 1.0), out);
    CHECK(xmerge_test::same_bits(out, f.models[1]));
    evaluate(interpolate(old_m, new_m, 0.25), out);
    CHECK(out[3] == Approx(0.75 * f.models[0][3] + 0.25 * f.models[1][3]).margin(1e-6));
    CHECK_THROWS_AS(interpolate(old_m, new_m, std::nan("")), parameter_error);
}

TEST_CASE("the registry builds methods by mergekit name", "[methods][registry]")
{
    fixture f;
    const method_registry& registry = xmerge_test::builtin_registry();
    CHECK(registry.contains("linear"));
    CHECK(registry.contains("task_arithmetic"));

    method_inputs in;
    in.tensor = "layers.3.weight";
    in.base = input(f.base, "base");
    in.models = inputs(f.models);
    std::vector<float> by_name, direct;
    evaluate(registry.build("task_arithmetic", in, {{"weight", std::vector<double>{1.0, 0.5, -0.3}}, {"lambda", 0.5}}), by_name);
    evaluate(task_arithmetic(in.models, *in.base, {1.0, 0.5, -0.3}, {0.5}), direct);
    CHECK(xmerge_test::same_bits(by_name, direct));

    // a single number applies to every model
    evaluate(registry.build("linear", in, {{"weight", 2.0}}), by_name);
    evaluate(uniform_soup(in.models), direct);
    CHECK(by_name[11] == Approx(direct[11]).epsilon(1e-6));

    CHECK_THROWS_WITH(registry.build("no_such_method", in, {}), Catch::Contains("unknown method") && Catch::Contains("linear"));
    CHECK_THROWS_WITH(registry.build("linear", in, {{"weight", 1.0}, {"densty", 0.5}}),
                      Catch::Contains("densty") && Catch::Contains("accepted: weight, normalize"));
    CHECK_THROWS_WITH(registry.build("linear", in, {}), Catch::Contains("weight") && Catch::Contains("required"));
    CHECK_THROWS_WITH(registry.build("linear", in, {{"weight", std::vector<double>{1.0}}}), Catch::Contains("expected 3"));
    CHECK_THROWS_WITH(registry.build("linear", in, {{"weight", 1.0}, {"normalize", std::string("yes")}}), Catch::Contains("true or false"));
    method_inputs no_base = in;
    no_base.base.reset();
    CHECK_THROWS_WITH(registry.build("task_arithmetic", no_base, {{"weight", 1.0}}), Catch::Contains("base model"));
}
