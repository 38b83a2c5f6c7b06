// Whole-model merges: results equal the engine on each tensor, rules for
// missing and mismatched tensors, per-tensor parameters, whole-model
// statistics, seeds, progress, slices, and no output on failure.

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <xmerge/methods/builtin.hpp>
#include <xmerge/model/architecture.hpp>
#include <xmerge/model/merge.hpp>
#include <xmerge/model/model.hpp>

#include "test_io_support.hpp"
#include "test_support.hpp"
#include "registry_support.hpp"

using xmerge_test::scratch_dir;

namespace
{
    // A family of in-memory models: `layers` layers of two tensors each, plus embeddings and a head.
    struct family
    {
        std::vector<std::string> names;
        std::vector<std::vector<std::vector<float>>> values;  // [model][tensor]
        std::vector<xmerge::model> models;

        family(std::size_t count, std::size_t layers, std::size_t n = 300)
        {
            names.push_back("model.embed_tokens.weight");
            for (std::size_t l = 0; l < layers; ++l)
            {
                names.push_back("model.layers." + std::to_string(l) + ".mlp.weight");
                names.push_back("model.layers." + std::to_string(l) + ".attn.weight");
            }
            names.push_back("lm_head.weight");
            values.resize(count);
            for (std::size_t m = 0; m < count; ++m)
            {
                for (std::size_t t = 0; t < names.size(); ++t)
                {
                    values[m].push_back(xmerge_test::random_floats(n, static_cast<std::uint32_t>(100 * m + t)));
                }
            }
            for (std::size_t m = 0; m < count; ++m)
            {
                models.emplace_back("model" + std::to_string(m));
                for (std::size_t t = 0; t < names.size(); ++t)
                {
                    models[m].add(names[t], xmerge::as_tensor(values[m][t], {n / 10, 10}, names[t]));
                }
            }
        }
    };


    xmerge::merge_spec task_arithmetic_spec(const family& f, double weight)
    {
        xmerge::merge_spec spec;
        spec.method = "task_arithmetic";
        spec.base = &f.models[0];
        for (std::size_t m = 1; m < f.models.size(); ++m)
        {
            spec.models.push_back({&f.models[m], {{"weight", weight}}, {}, {}});
        }
        spec.parameters["lambda"] = 0.5;
        return spec;
    }
}

TEST_CASE("merge_models: every tensor equals the method evaluated on its own", "[io][merge]")
{
    scratch_dir dir;
    const family f(3, 4);
    const auto& registry = xmerge_test::builtin_registry();
    xmerge::merge_options o;
    o.threads = 2;
    o.output.max_shard_bytes = 4000;
    const auto summary = xmerge::merge_models(task_arithmetic_spec(f, 0.7), registry, dir / "out", o);
    CHECK(summary.tensors == f.names.size());
    CHECK(summary.merged == f.names.size());
    CHECK(summary.layers == 4);
    CHECK(summary.shards > 1);
    CHECK(summary.bytes_read == 3 * f.names.size() * 300 * 4);

    const xmerge::model out = xmerge::model::open(dir / "out");
    REQUIRE(out.size() == f.names.size());
    for (std::size_t t = 0; t < f.names.size(); ++t)
    {
        const auto got = xmerge_test::float_values(out.at(f.names[t]));
        std::vector<float> expected;
        const std::vector<std::vector<float>> tuned = {f.values[1][t], f.values[2][t]};
        const auto models = xmerge::inputs(tuned);
        xmerge::evaluate(xmerge::task_arithmetic(models, xmerge::input(f.values[0][t]), {0.7, 0.7}, {0.5}), expected);
        CHECK(xmerge_test::same_bits(got, expected));
        CHECK(out.at(f.names[t]).shape == f.models[0].at(f.names[t]).shape);
    }
}

TEST_CASE("merge_models: output dtype, and non-float tensors copied unchanged from the base", "[io][merge]")
{
    scratch_dir dir;
    family f(2, 1);
    const std::int64_t ids[4] = {9, 8, 7, 6};
    f.models[0].add_raw("position_ids", "I64", {4}, ids);
    xmerge::merge_options o;
    o.out_dtype = xmerge::dtype::bfloat16;
    const auto s = xmerge::merge_models(task_arithmetic_spec(f, 1.0), xmerge_test::builtin_registry(), dir / "out", o);
    CHECK(s.copied == 1);
    const xmerge::model out = xmerge::model::open(dir / "out");
    CHECK(out.at("position_ids").dtype == "I64");
    CHECK(std::memcmp(out.at("position_ids").data, ids, sizeof ids) == 0);
    CHECK(out.at("lm_head.weight").dtype == "BF16");
    const auto got = xmerge_test::float_values(out.at("lm_head.weight"));
    const auto& b = f.values[0].back();
    const auto& m = f.values[1].back();
    for (std::size_t i = 0; i < got.size(); ++i)
    {
        CHECK(got[i] == xmerge_test::round_to(xmerge::dtype::bfloat16, std::fma(0.5f, m[i] - b[i], b[i])));
    }
}

TEST_CASE("merge_models: missing and mismatched tensors are errors, or copied from the base by rule", "[io][merge]")
{
    scratch_dir dir;
    family f(3, 2);
    xmerge::model partial("partial");
    for (std::size_t t = 0; t < f.names.size(); ++t)
    {
        if (f.names[t] != "model.layers.1.attn.weight")
        {
            partial.add(f.names[t], f.models[2].at(f.names[t]).ref());
        }
    }
    auto spec = task_arithmetic_spec(f, 1.0);
    spec.models[1].source = &partial;
    const auto& registry = xmerge_test::builtin_registry();
    CHECK_THROWS_WITH(xmerge::plan_merge(spec, registry), Catch::Contains("'partial'") && Catch::Contains("model.layers.1.attn.weight") && Catch::Contains("missing"));
    CHECK_THROWS_AS(xmerge::merge_models(spec, registry, dir / "out"), xmerge::io_error);
    CHECK(dir.entries().empty());  // checked before anything was created

    xmerge::merge_options o;
    o.on_missing = xmerge::tensor_rule::copy_base;
    const auto s = xmerge::merge_models(spec, registry, dir / "out", o);
    CHECK(s.copied == 1);
    REQUIRE(s.notes.size() == 1);
    CHECK_THAT(s.notes[0], Catch::Contains("model.layers.1.attn.weight") && Catch::Contains("partial"));
    const xmerge::model out = xmerge::model::open(dir / "out");
    CHECK(xmerge_test::float_values(out.at("model.layers.1.attn.weight")) == f.values[0][4]);

    // another shape
    const std::vector<float> wide(600, 1.0f);
    xmerge::model odd("odd");
    for (std::size_t t = 0; t < f.names.size(); ++t)
    {
        odd.add(f.names[t], t == 1 ? xmerge::as_tensor(wide, xmerge::shape_type{60, 10}) : f.models[2].at(f.names[t]).ref());
    }
    spec.models[1].source = &odd;
    CHECK_THROWS_WITH(xmerge::plan_merge(spec, registry), Catch::Contains("has shape [60, 10] but the reference has [30, 10]"));
    o.on_mismatch = xmerge::tensor_rule::copy_base;
    CHECK(xmerge::plan_merge(spec, registry, o).tensors[1].what == xmerge::planned_tensor::action::copy);
}

TEST_CASE("parameter_setting: constants, gradients, steps and filter rules as mergekit evaluates them", "[io][merge]")
{
    using xmerge::parameter_setting;
    const auto g = parameter_setting::gradient({0.0, 1.0, 0.5});
    CHECK(std::get<double>(*g.evaluate("x", 0.0)) == 0.0);
    CHECK(std::get<double>(*g.evaluate("x", 0.25)) == Approx(0.5));
    CHECK(std::get<double>(*g.evaluate("x", 0.5)) == 1.0);
    CHECK(std::get<double>(*g.evaluate("x", 0.75)) == Approx(0.75));
    CHECK(std::get<double>(*g.evaluate("x", 1.0)) == 0.5);
    const auto steps = parameter_setting::steps({std::string("a"), std::string("b")});
    CHECK(std::get<std::string>(*steps.evaluate("x", 0.9)) == "a");
    CHECK(std::get<std::string>(*steps.evaluate("x", 1.0)) == "b");
    const auto rules = parameter_setting::rules({{"self_attn", parameter_setting(0.1)}, {"mlp", parameter_setting::gradient({1.0, 3.0})}});
    CHECK(std::get<double>(*rules.evaluate("layers.0.self_attn.q", 0.5)) == 0.1);
    CHECK(std::get<double>(*rules.evaluate("layers.0.mlp.up", 0.5)) == 2.0);
    CHECK_FALSE(rules.evaluate("lm_head", 0.5).has_value());
    const auto catch_all = parameter_setting::rules({{"mlp", parameter_setting(1.0)}, {"*", parameter_setting(7.0)}});
    CHECK(std::get<double>(*catch_all.evaluate("norm", 0.0)) == 7.0);
    CHECK_THROWS_AS(parameter_setting::gradient({}), xmerge::parameter_error);
}

TEST_CASE("layers: indices and depth positions from tensor names", "[io][merge]")
{
    CHECK(xmerge::find_layer("model.layers.12.mlp.up_proj.weight")->index == 12);
    CHECK(xmerge::find_layer("transformer.h.3.attn.c_attn.weight")->index == 3);
    CHECK_FALSE(xmerge::find_layer("model.embed_tokens.weight"));
    CHECK_FALSE(xmerge::find_layer("layer12.weight"));
    CHECK(xmerge::find_layer("a.7.b")->renumbered("a.7.b", 31) == "a.31.b");
    CHECK(xmerge::count_layers({"x.0.w", "x.5.w", "head"}) == 6);
    CHECK(xmerge::depth_position("model.layers.2.w", 5) == 0.5);
    CHECK(xmerge::depth_position("model.layers.0.w", 1) == 1.0);
    // Outside the layers mergekit evaluates gradients at t = 0, before and after the layers alike.
    CHECK(xmerge::depth_position("model.embed_tokens.weight", 5) == 0.0);
    CHECK(xmerge::depth_position("lm_head.weight", 5) == 0.0);
    CHECK(xmerge::before_layers("model.embed_tokens.weight"));
    CHECK(xmerge::before_layers("transformer.wpe.weight"));
    CHECK_FALSE(xmerge::before_layers("lm_head.weight"));
    // Each layer stack is counted on its own (a vision tower and a language model).
    const auto stacks = xmerge::count_layers_by_stack({"vision.layers.0.w", "vision.layers.23.w", "text.layers.31.w", "head"});
    CHECK(stacks.size() == 2);
    CHECK(stacks.at("vision.layers") == 24);
    CHECK(stacks.at("text.layers") == 32);
    CHECK(xmerge::find_layer("text.layers.31.w")->stack("text.layers.31.w") == "text.layers");
}

TEST_CASE("merge_models: gradient and filtered parameters vary per tensor", "[io][merge]")
{
    scratch_dir dir;
    const family f(3, 3);
    xmerge::merge_spec spec;
    spec.method = "linear";
    spec.models.push_back({&f.models[0], {{"weight", xmerge::parameter_setting::gradient({1.0, 0.0})}}, {}, {}});
    spec.models.push_back({&f.models[1], {}, {}, {}});  // takes the global weight
    spec.models.push_back({&f.models[2], {{"weight", xmerge::parameter_setting::rules({{"attn", xmerge::parameter_setting(1.0)}})}}, {}, {}});
    spec.parameters["weight"] = 0.0;
    spec.parameters["normalize"] = false;
    const auto plan = xmerge::plan_merge(spec, xmerge_test::builtin_registry());
    auto weights = [&](const std::string& name)
    {
        for (const auto& t : plan.tensors)
        {
            if (t.name == name)
            {
                return std::get<std::vector<double>>(t.params.values().at("weight"));
            }
        }
        FAIL("no tensor " << name);
        return std::vector<double>{};
    };
    CHECK(weights("model.embed_tokens.weight") == std::vector<double>{1.0, 0.0, 0.0});
    CHECK(weights("model.layers.0.mlp.weight") == std::vector<double>{1.0, 0.0, 0.0});
    CHECK(weights("model.layers.1.mlp.weight") == std::vector<double>{0.5, 0.0, 0.0});
    CHECK(weights("model.layers.1.attn.weight") == std::vector<double>{0.5, 0.0, 1.0});
    CHECK(weights("model.layers.2.attn.weight") == std::vector<double>{0.0, 0.0, 1.0});
    // After the layers too, a gradient takes its first value (mergekit's rule).
    CHECK(weights("lm_head.weight") == std::vector<double>{1.0, 0.0, 0.0});
    CHECK(std::get<bool>(plan.tensors[0].params.values().at("normalize")) == false);

    xmerge::run_merge(plan, xmerge_test::builtin_registry(), dir / "out");
    const xmerge::model out = xmerge::model::open(dir / "out");
    const auto got = xmerge_test::float_values(out.at("model.layers.1.attn.weight"));
    for (std::size_t i = 0; i < got.size(); ++i)
    {
        CHECK(got[i] == Approx(0.5f * f.values[0][4][i] + f.values[2][4][i]).epsilon(1e-6));
    }
}

TEST_CASE("plan_merge: parameters a method does not use are ignored with a warning, or refused when strict", "[io][merge]")
{
    const family f(2, 1);
    const auto& registry = xmerge_test::builtin_registry();
    xmerge::merge_options strict;
    strict.strict = true;

    auto spec = task_arithmetic_spec(f, 1.0);
    spec.parameters["lamda"] = 1.0;
    auto plan = xmerge::plan_merge(spec, registry);
    REQUIRE(plan.warnings.size() == 1);
    CHECK_THAT(plan.warnings[0], Catch::Contains("'lamda'") && Catch::Contains("task_arithmetic") && Catch::Contains("misspelling"));
    CHECK_FALSE(plan.tensors[0].params.has("lamda"));
    CHECK_THROWS_WITH(xmerge::plan_merge(spec, registry, strict), Catch::Contains("'lamda'") && Catch::Contains("not a parameter") && Catch::Contains("lambda"));

    // A parameter of other methods (slerp's t): no hint of a misspelling; one warning for every place it is set.
    spec = task_arithmetic_spec(f, 1.0);
    spec.models[0].parameters["t"] = 0.5;
    spec.parameters["t"] = 0.5;
    plan = xmerge::plan_merge(spec, registry);
    REQUIRE(plan.warnings.size() == 1);
    CHECK_THAT(plan.warnings[0], Catch::Contains("'t'") && Catch::Contains("model1") && Catch::Contains("top level") && !Catch::Contains("misspelling"));

    // A global parameter set per model: mergekit does not read it there.
    spec = task_arithmetic_spec(f, 1.0);
    spec.models[0].parameters["lambda"] = 2.0;
    plan = xmerge::plan_merge(spec, registry);
    REQUIRE(plan.warnings.size() == 1);
    CHECK_THAT(plan.warnings[0], Catch::Contains("global parameter") && Catch::Contains("model1"));
    CHECK(std::get<double>(plan.tensors[0].params.values().at("lambda")) == 0.5);
    CHECK_THROWS_WITH(xmerge::plan_merge(spec, registry, strict), Catch::Contains("global parameter") && Catch::Contains("model1"));
}

TEST_CASE("plan_merge: missing parameters, unknown methods and a missing base are refused up front", "[io][merge]")
{
    const family f(2, 1);
    const auto& registry = xmerge_test::builtin_registry();
    auto spec = task_arithmetic_spec(f, 1.0);
    spec.models[0].parameters.clear();
    CHECK_THROWS_WITH(xmerge::plan_merge(spec, registry), Catch::Contains("'weight'") && Catch::Contains("required") && Catch::Contains("model1"));
    spec = task_arithmetic_spec(f, 1.0);
    spec.method = "nonsense";
    CHECK_THROWS_WITH(xmerge::plan_merge(spec, registry), Catch::Contains("unknown method 'nonsense'"));
    spec = task_arithmetic_spec(f, 1.0);
    spec.base = nullptr;
    CHECK_THROWS_WITH(xmerge::plan_merge(spec, registry), Catch::Contains("needs a base model"));
}

TEST_CASE("plan_merge: parameters are complete, defaults from the method's declaration", "[io][merge]")
{
    const family f(2, 1);
    const auto& registry = xmerge_test::builtin_registry();
    xmerge::merge_spec spec;
    spec.method = "ties";
    spec.base = &f.models[0];
    spec.models.push_back({&f.models[1], {{"weight", 1.0}, {"density", 0.5}}, {}, {}});
    const auto plan = xmerge::plan_merge(spec, registry);
    for (const auto& p : registry.find("ties").parameters)
    {
        CHECK((plan.tensors[0].params.has(p.name) || p.optional));
        if (p.fallback && p.name != "weight" && p.name != "density")
        {
            CHECK(plan.tensors[0].params.values().at(p.name) == *p.fallback);
        }
    }
}

TEST_CASE("run_merge: whole-model statistics, seeds and tensor names reach the method", "[io][merge]")
{
    scratch_dir dir;
    const family f(2, 2);
    // Scales each model by its sum of squares over the whole model, recording what it was given.
    std::vector<std::pair<std::string, std::uint64_t>> seen;
    std::vector<double> whole;
    xmerge::method_registry registry;
    xmerge::method_info info;
    info.name = "probe";
    info.parameters = {};
    info.model_statistics = {{"energy",
                              [](const xmerge::method_inputs& in)
                              {
                                  std::vector<double> out;
                                  for (const auto& m : in.models)
                                  {
                                      out.push_back(xmerge::value_of(xmerge::sum_squares(m)));
                                  }
                                  return out;
                              },
                              [](double s) { return std::sqrt(s); }}};
    info.build = [&](const xmerge::method_inputs& in, const xmerge::parameters&) -> xmerge::any_expression
    {
        seen.emplace_back(in.tensor, in.seed);
        whole = in.model_statistics.at("energy");
        return in.models[0] * 0.0;
    };
    registry.add(info);

    xmerge::merge_spec spec;
    spec.method = "probe";
    spec.models = {{&f.models[0], {}, {}, {}}, {&f.models[1], {}, {}, {}}};
    xmerge::merge_options o;
    o.seed = 1234;
    std::vector<xmerge::merge_progress> reports;
    o.progress = [&](const xmerge::merge_progress& p) { reports.push_back(p); };
    xmerge::merge_models(spec, registry, dir / "out", o);

    REQUIRE(seen.size() == f.names.size());
    for (std::size_t t = 0; t < f.names.size(); ++t)
    {
        CHECK(seen[t].first == f.names[t]);
        CHECK(seen[t].second == 1234);
    }
    for (std::size_t m = 0; m < 2; ++m)
    {
        double s = 0.0;
        for (const auto& v : f.values[m])
        {
            for (float x : v)
            {
                s += static_cast<double>(x) * x;
            }
        }
        CHECK(whole[m] == Approx(std::sqrt(s)).epsilon(1e-5));
    }
    // a statistics pass, then the tensors, each counting up to the total
    REQUIRE(reports.size() == 2 * f.names.size());
    CHECK(reports.front().phase == xmerge::merge_progress::stage::statistics);
    CHECK(reports.back().phase == xmerge::merge_progress::stage::tensors);
    CHECK(reports.back().done == reports.back().total);
    CHECK(reports.back().bytes_written == f.names.size() * 300 * 4);
}

TEST_CASE("run_merge: a method failing midway leaves no output at all", "[io][merge]")
{
    scratch_dir dir;
    const family f(2, 3);
    xmerge::method_registry registry;
    xmerge::method_info info;
    info.name = "fragile";
    info.build = [](const xmerge::method_inputs& in, const xmerge::parameters&) -> xmerge::any_expression
    {
        if (in.tensor == "model.layers.2.mlp.weight")
        {
            throw xmerge::parameter_error(in.tensor, "x", "cannot merge this one");
        }
        return in.models[0] + 0.0;
    };
    registry.add(info);
    xmerge::merge_spec spec;
    spec.method = "fragile";
    spec.models = {{&f.models[0], {}, {}, {}}, {&f.models[1], {}, {}, {}}};
    CHECK_THROWS_WITH(xmerge::merge_models(spec, registry, dir / "out"), Catch::Contains("cannot merge this one"));
    CHECK(dir.entries().empty());
}

TEST_CASE("merge_models: slices stack layer ranges and renumber them", "[io][merge]")
{
    scratch_dir dir;
    const family f(2, 4);
    xmerge::merge_spec spec;
    spec.method = "linear";
    spec.parameters["weight"] = 1.0;
    xmerge::merge_slice first, second;
    first.sources.push_back({&f.models[0], {}, {}, {0, 2}});
    second.sources.push_back({&f.models[1], {}, {}, {1, 4}});
    spec.slices = {first, second};
    const auto s = xmerge::merge_models(spec, xmerge_test::builtin_registry(), dir / "out");
    CHECK(s.layers == 5);
    const xmerge::model out = xmerge::model::open(dir / "out");
    CHECK(out.size() == 2 + 5 * 2);
    CHECK(xmerge_test::float_values(out.at("model.embed_tokens.weight")) == f.values[0][0]);
    CHECK(xmerge_test::float_values(out.at("model.layers.1.mlp.weight")) == f.values[0][3]);   // model 0, layer 1
    CHECK(xmerge_test::float_values(out.at("model.layers.2.mlp.weight")) == f.values[1][3]);   // model 1, layer 1
    CHECK(xmerge_test::float_values(out.at("model.layers.4.attn.weight")) == f.values[1][8]);  // model 1, layer 3
    CHECK(xmerge_test::float_values(out.at("lm_head.weight")) == f.values[1].back());
    CHECK(out.tensors().front().name == "model.embed_tokens.weight");

    xmerge::merge_slice bad;
    bad.sources.push_back({&f.models[0], {}, {}, {2, 6}});
    spec.slices = {bad};
    CHECK_THROWS_WITH(xmerge::plan_merge(spec, xmerge_test::builtin_registry()), Catch::Contains("which has 4"));
}

TEST_CASE("merge_models: per-model extra tensors reach the method, checked against the model", "[io][merge]")
{
    scratch_dir dir;
    const family f(3, 1);
    std::size_t extras = 0;
    xmerge::method_registry registry;
    xmerge::method_info info;
    info.name = "with_fisher";
    info.build = [&](const xmerge::method_inputs& in, const xmerge::parameters&) -> xmerge::any_expression
    {
        extras = in.extra.at("fisher").size();
        return in.models[0] * in.extra.at("fisher")[1];
    };
    registry.add(info);
    xmerge::merge_spec spec;
    spec.method = "with_fisher";
    spec.models = {{&f.models[0], {}, {{"fisher", &f.models[1]}}, {}}, {&f.models[1], {}, {{"fisher", &f.models[2]}}, {}}};
    xmerge::merge_models(spec, registry, dir / "out");
    CHECK(extras == 2);
    const xmerge::model out = xmerge::model::open(dir / "out");
    const auto got = xmerge_test::float_values(out.at("lm_head.weight"));
    CHECK(got[5] == f.values[0].back()[5] * f.values[2].back()[5]);

    // only one model with fisher tensors
    spec.models[1].extra.clear();
    CHECK_THROWS_WITH(xmerge::plan_merge(spec, registry), Catch::Contains("only some models have 'fisher' tensors"));
}

TEST_CASE("run_merge: an output directory holding an input is refused", "[io][merge]")
{
    scratch_dir dir;
    const family f(2, 1);
    xmerge::merge_models(task_arithmetic_spec(f, 1.0), xmerge_test::builtin_registry(), dir / "first");
    const xmerge::model first = xmerge::model::open(dir / "first");
    xmerge::merge_spec spec;
    spec.method = "linear";
    spec.parameters["weight"] = 1.0;
    spec.models = {{&first, {}, {}, {}}, {&f.models[1], {}, {}, {}}};
    xmerge::merge_options o;
    o.output.overwrite = true;
    CHECK_THROWS_WITH(xmerge::merge_models(spec, xmerge_test::builtin_registry(), dir / "first", o), Catch::Contains("holds the input file"));
    CHECK_THROWS_WITH(xmerge::merge_models(spec, xmerge_test::builtin_registry(), dir.path().string(), o), Catch::Contains("holds the input file"));
    CHECK(xmerge::model::open(dir / "first").size() == first.size());
}

TEST_CASE("plan_merge: optional parameters stay absent unless set, for every model or none", "[io][merge]")
{
    const family f(3, 1);
    xmerge::method_registry registry;
    xmerge::method_info info;
    info.name = "opt";
    info.parameters = {{"mode", xmerge::parameter_scope::global, std::nullopt, "", true}, {"gain", xmerge::parameter_scope::per_model, std::nullopt, "", true}};
    info.build = [](const xmerge::method_inputs& in, const xmerge::parameters&) -> xmerge::any_expression { return in.models[0] + 0.0; };
    registry.add(info);
    xmerge::merge_spec spec;
    spec.method = "opt";
    spec.models = {{&f.models[0]}, {&f.models[1]}};
    auto plan = xmerge::plan_merge(spec, registry);
    CHECK(plan.tensors[0].params.values().empty());
    spec.parameters["mode"] = "fast";
    spec.models[0].parameters["gain"] = 2.0;
    CHECK_THROWS_WITH(xmerge::plan_merge(spec, registry), Catch::Contains("'gain'") && Catch::Contains("not for model 'model1'"));
    spec.models[1].parameters["gain"] = 3.0;
    plan = xmerge::plan_merge(spec, registry);
    CHECK(std::get<std::string>(plan.tensors[0].params.values().at("mode")) == "fast");
    CHECK(std::get<std::vector<double>>(plan.tensors[0].params.values().at("gain")) == std::vector<double>{2.0, 3.0});
}

TEST_CASE("merge_models: a tied checkpoint's head is its input embedding, as mergekit reads it", "[io][merge]")
{
    scratch_dir dir;
    const family f(2, 1);
    // model 0 without lm_head (tie_word_embeddings), model 1 with its own.
    xmerge::model tied("tied");
    for (std::size_t t = 0; t + 1 < f.names.size(); ++t)
    {
        tied.add(f.names[t], xmerge::as_tensor(f.values[0][t], {30, 10}, f.names[t]));
    }
    auto expect_mean = [&](const xmerge::model& out)
    {
        const auto got = xmerge_test::float_values(out.at("lm_head.weight"));
        for (std::size_t i = 0; i < got.size(); ++i)
        {
            // model 0's head is its embedding (tensor 0); model 1 has lm_head (the last tensor).
            CHECK(got[i] == Approx(0.5f * f.values[0][0][i] + 0.5f * f.values[1].back()[i]).epsilon(1e-6));
        }
    };
    xmerge::merge_spec spec;
    spec.method = "linear";
    spec.parameters["weight"] = 1.0;
    // The tied model as the reference: the output still gets a head, from the untied model.
    spec.models = {{&tied, {}, {}, {}}, {&f.models[1], {}, {}, {}}};
    xmerge::merge_models(spec, xmerge_test::builtin_registry(), dir / "first");
    const xmerge::model first = xmerge::model::open(dir / "first");
    CHECK(first.size() == f.names.size());
    expect_mean(first);
    // The tied model second.
    spec.models = {{&f.models[1], {}, {}, {}}, {&tied, {}, {}, {}}};
    xmerge::merge_models(spec, xmerge_test::builtin_registry(), dir / "second");
    expect_mean(xmerge::model::open(dir / "second"));

    // Every model tied: no head is written, as none has one.
    spec.models = {{&tied, {}, {}, {}}, {&tied, {}, {}, {}}};
    xmerge::merge_models(spec, xmerge_test::builtin_registry(), dir / "tied");
    CHECK_FALSE(xmerge::model::open(dir / "tied").contains("lm_head.weight"));
}

TEST_CASE("architecture: token-indexed tensors and tied heads by name", "[io][merge]")
{
    CHECK(xmerge::is_vocabulary_tensor("model.embed_tokens.weight"));
    CHECK(xmerge::is_vocabulary_tensor("lm_head.weight"));
    CHECK(xmerge::is_vocabulary_tensor("language_model.model.embed_tokens.weight"));
    CHECK(xmerge::is_vocabulary_tensor("transformer.wte.weight"));
    CHECK_FALSE(xmerge::is_vocabulary_tensor("transformer.wpe.weight"));
    CHECK_FALSE(xmerge::is_vocabulary_tensor("model.layers.0.mlp.up_proj.weight"));
    CHECK_FALSE(xmerge::is_vocabulary_tensor("xlm_head.weight"));
    CHECK(xmerge::tied_embeddings("lm_head.weight").front() == "model.embed_tokens.weight");
    const auto nested = xmerge::tied_embeddings("language_model.lm_head.weight");
    CHECK(std::find(nested.begin(), nested.end(), "language_model.model.embed_tokens.weight") != nested.end());
    CHECK(xmerge::tied_embeddings("model.norm.weight").empty());
}

TEST_CASE("passthrough: copies and scales one model, stacks layers from slices", "[io][merge]")
{
    scratch_dir dir;
    const family f(2, 2);
    const auto& registry = xmerge_test::builtin_registry();
    xmerge::merge_spec spec;
    spec.method = "passthrough";
    spec.models.push_back({&f.models[0], {{"scale", xmerge::parameter_setting::rules({{"attn", xmerge::parameter_setting(0.0)}, {"", xmerge::parameter_setting(1.0)}})}}, {}, {}});
    xmerge::merge_models(spec, registry, dir / "scaled");
    const xmerge::model scaled = xmerge::model::open(dir / "scaled");
    CHECK(xmerge_test::float_values(scaled.at("model.layers.1.mlp.weight")) == f.values[0][3]);
    for (float v : xmerge_test::float_values(scaled.at("model.layers.1.attn.weight")))
    {
        CHECK(v == 0.0f);
    }

    // Two models: refused, as mergekit's passthrough takes one input.
    spec.models[0].parameters.clear();
    spec.models.push_back({&f.models[1], {}, {}, {}});
    CHECK_THROWS_WITH(xmerge::merge_models(spec, registry, dir / "two"), Catch::Contains("exactly one model"));
    CHECK_FALSE(std::filesystem::exists(dir / "two"));

    // A frankenmerge: layer 1 of each model twice.
    spec.models.clear();
    xmerge::merge_slice a, b;
    a.sources.push_back({&f.models[0], {}, {}, {0, 2}});
    b.sources.push_back({&f.models[1], {}, {}, {1, 2}});
    spec.slices = {a, b, b};
    const auto s = xmerge::merge_models(spec, registry, dir / "stack");
    CHECK(s.layers == 4);
    const xmerge::model stack = xmerge::model::open(dir / "stack");
    CHECK(xmerge_test::float_values(stack.at("model.layers.3.mlp.weight")) == f.values[1][3]);
    CHECK(xmerge_test::float_values(stack.at("model.layers.2.mlp.weight")) == f.values[1][3]);
    CHECK(xmerge_test::float_values(stack.at("model.layers.1.attn.weight")) == f.values[0][4]);
}
