// Typed method parameters: one description gives the registry's specs and
// the parsing; malformed descriptions are refused when the registry is built.
#include <catch2/catch.hpp>

#include <optional>
#include <string>
#include <vector>

#include "test_support.hpp"
#include "registry_support.hpp"

using namespace xmerge;

namespace
{
    enum class flavour
    {
        plain,
        spicy
    };

    struct toy_parameters
    {
        std::vector<double> weight;
        std::vector<double> density{0.5};
        double lambda = 1.5;
        bool flip = false;
        std::size_t steps = 3;
        std::string label = "x";
        flavour taste = flavour::plain;
        std::optional<double> limit;
        std::optional<flavour> override_taste;
    };

    option_set<toy_parameters> toy_options()
    {
        using P = toy_parameters;
        return option_set<P>()
            .per_model(&P::weight, "weight", "weight of each model")
            .per_model(&P::density, "density", "kept fraction")
            .global(&P::lambda, "lambda", "scale")
            .global(&P::flip, "flip", "negate")
            .global(&P::steps, "steps", "iterations")
            .global(&P::label, "label", "a name")
            .choice(&P::taste, "taste", "plain or spicy", {{"plain", flavour::plain}, {"spicy", flavour::spicy}})
            .optional(&P::limit, "limit", "an optional bound")
            .choice(&P::override_taste, "taste_override", "overrides taste", {{"plain", flavour::plain}, {"spicy", flavour::spicy}})
            .alias("scale", "lambda");
    }

    const parameter_spec& spec_of(const std::vector<parameter_spec>& specs, const std::string& name)
    {
        for (const auto& s : specs)
        {
            if (s.name == name)
            {
                return s;
            }
        }
        throw std::logic_error("no spec " + name);
    }
}

TEST_CASE("an option set generates the specs from one description", "[registry][options]")
{
    const auto specs = toy_options().specs();
    REQUIRE(specs.size() == 10);
    CHECK(spec_of(specs, "weight").scope == parameter_scope::per_model);
    CHECK_FALSE(spec_of(specs, "weight").fallback);
    CHECK_FALSE(spec_of(specs, "weight").optional);
    CHECK(std::get<double>(*spec_of(specs, "density").fallback) == 0.5);
    CHECK(std::get<double>(*spec_of(specs, "lambda").fallback) == 1.5);
    CHECK(std::get<bool>(*spec_of(specs, "flip").fallback) == false);
    CHECK(std::get<double>(*spec_of(specs, "steps").fallback) == 3.0);
    CHECK(std::get<std::string>(*spec_of(specs, "label").fallback) == "x");
    CHECK(std::get<std::string>(*spec_of(specs, "taste").fallback) == "plain");
    CHECK(spec_of(specs, "limit").optional);
    CHECK_FALSE(spec_of(specs, "limit").fallback);
    CHECK(spec_of(specs, "taste_override").optional);
    CHECK(spec_of(specs, "scale").optional);
    CHECK(spec_of(specs, "scale").help == "alias of lambda");
    CHECK(spec_of(specs, "lambda").help == "scale");
}

TEST_CASE("an option set parses given values into the struct", "[registry][options]")
{
    const auto options = toy_options();
    parameters given{{"weight", std::vector<double>{1.0, 2.0, 3.0}}, {"flip", true}, {"steps", 7.0}, {"taste", std::string("spicy")}, {"limit", 2.5}};
    given.set_tensor_name("w");
    const toy_parameters p = options.parse(given, 3);
    CHECK(p.weight == std::vector<double>{1.0, 2.0, 3.0});
    CHECK(p.density == std::vector<double>{0.5, 0.5, 0.5});  // the default, one per model
    CHECK(p.lambda == 1.5);
    CHECK(p.flip);
    CHECK(p.steps == 7);
    CHECK(p.label == "x");
    CHECK(p.taste == flavour::spicy);
    CHECK(p.limit == 2.5);
    CHECK_FALSE(p.override_taste);

    // an alias stands for its parameter
    given.set("scale", 4.0);
    CHECK(options.parse(given, 3).lambda == 4.0);

    // errors name the tensor and the parameter
    parameters bad = given;
    bad.set("taste", std::string("sour"));
    CHECK_THROWS_WITH(options.parse(bad, 3), Catch::Contains("'w'") && Catch::Contains("'taste'") && Catch::Contains("sour") && Catch::Contains("plain, spicy"));
    bad = given;
    bad.set("steps", 2.5);
    CHECK_THROWS_WITH(options.parse(bad, 3), Catch::Contains("'steps'") && Catch::Contains("non-negative integer"));
    bad = given;
    bad.set("weight", std::vector<double>{1.0, 2.0});
    CHECK_THROWS_WITH(options.parse(bad, 3), Catch::Contains("'weight'") && Catch::Contains("expected 3"));
    parameters none;
    CHECK_THROWS_WITH(options.parse(none, 3), Catch::Contains("'weight'") && Catch::Contains("required"));
}

TEST_CASE("a misspelt or repeated parameter name is refused when the registry is built", "[registry][options][errors]")
{
    using P = toy_parameters;
    CHECK_THROWS_WITH(option_set<P>().global(&P::lambda, "lambda", "a").global(&P::flip, "lambda", "b"), Catch::Contains("'lambda'") && Catch::Contains("twice"));
    CHECK_THROWS_WITH(option_set<P>().global(&P::lambda, "lambda", "a").alias("scale", "lamda"), Catch::Contains("'scale'") && Catch::Contains("lamda"));
    CHECK_THROWS_WITH(option_set<P>().global(&P::lambda, "Lambda", "a"), Catch::Contains("'Lambda'"));
    CHECK_THROWS_AS(option_set<P>().choice(&P::taste, "taste", "a", {{"spicy", flavour::spicy}}), parameter_error);  // the default has no name

    // hand-written declarations are checked when added to a registry
    method_registry r;
    method_info m;
    m.name = "toy";
    m.build = [](const method_inputs& in, const parameters&) -> any_expression { return in.models[0]; };
    m.parameters = {{"alpha", parameter_scope::global, 1.0, "a"}, {"alpha", parameter_scope::global, 2.0, "b"}};
    CHECK_THROWS_WITH(r.add(m), Catch::Contains("toy") && Catch::Contains("'alpha'") && Catch::Contains("twice"));
    m.parameters = {{"alpha", parameter_scope::global, 1.0, "a", true}};
    CHECK_THROWS_WITH(r.add(m), Catch::Contains("optional"));
    m.parameters = {{"w", parameter_scope::per_model, std::string("one"), "a"}};
    CHECK_THROWS_WITH(r.add(m), Catch::Contains("per-model"));
    m.parameters = {{"alpha beta", parameter_scope::global, 1.0, "a"}};
    CHECK_THROWS_AS(r.add(m), parameter_error);
    m.parameters = {};
    m.build = nullptr;
    CHECK_THROWS_WITH(r.add(m), Catch::Contains("builder"));
}

TEST_CASE("every built-in method's specs and parsing come from one description", "[registry][options]")
{
    const method_registry& r = xmerge_test::builtin_registry();
    for (const auto& name : r.names())
    {
        const method_info& m = r.find(name);
        INFO(name);
        CHECK_NOTHROW(detail::check_declaration(m));
        for (const auto& s : m.parameters)
        {
            CHECK_FALSE(s.help.empty());
        }
    }
    // a typed method reads the names its specs declare
    const std::size_t n = 64;
    const auto base = xmerge_test::random_floats(n, 1);
    const std::vector<std::vector<float>> xs{xmerge_test::random_floats(n, 2), xmerge_test::random_floats(n, 3)};
    method_inputs in;
    in.tensor = "w";
    in.base = input(base, "base");
    in.models = inputs(xs);
    std::vector<float> by_alias, by_name;
    evaluate(r.build("nuslerp", in, {{"weight", std::vector<double>{0.3, 0.7}}, {"flatten", false}}), by_alias);
    evaluate(r.build("nuslerp", in, {{"weight", std::vector<double>{0.3, 0.7}}, {"nuslerp_flatten", false}}), by_name);
    CHECK(xmerge_test::same_bits(by_alias, by_name));
    CHECK_THROWS_WITH(r.build("ties", in, {{"weight", 1.0}, {"rescale_norm", std::string("l3")}}), Catch::Contains("l3") && Catch::Contains("linf"));
}
