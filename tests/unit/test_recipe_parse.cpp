// mergekit YAML recipes: parsing, errors with line numbers, and binding to
// checkpoints and the registry.

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include <xmerge/io/safetensors_writer.hpp>
#include <xmerge/recipe/bind.hpp>
#include <xmerge/recipe/recipe.hpp>

#include "test_io_support.hpp"
#include "test_support.hpp"
#include "registry_support.hpp"

using xmerge_test::scratch_dir;

namespace
{
    // The message a recipe is refused with ("no error" when it parses); the error names the recipe.
    std::string parse_error(const std::string& text)
    {
        try
        {
            xmerge::parse_recipe(text, "r.yml");
        }
        catch (const xmerge::parameter_error& e)
        {
            CHECK(e.file() == "r.yml");
            return std::string(e.what());
        }
        return std::string("no error");
    }
}

TEST_CASE("recipe: mergekit's TIES example parses into settings", "[recipe]")
{
    const auto r = xmerge::parse_recipe(R"(
models:
  - model: psmathur/orca_mini_v3_13b
    parameters:
      density: [1, 0.7, 0.1] # density gradient
      weight: 1.0
  - model: garage-bAInd/Platypus2-13B
    parameters:
      density: 0.5
      weight: [0, 0.3, 0.7, 1] # weight gradient
  - model: WizardLM/WizardMath-13B-V1.0
    parameters:
      density: 0.33
      weight:
        - filter: mlp
          value: 0.5
        - value: 0
merge_method: ties
base_model: TheBloke/Llama-2-13B-fp16
parameters:
  normalize: true
  int8_mask: true
dtype: float16
)",
                                        "ties.yml");
    CHECK(r.merge_method == "ties");
    CHECK(r.base_model == "TheBloke/Llama-2-13B-fp16");
    REQUIRE(r.models.size() == 3);
    CHECK(r.compute_dtype == xmerge::dtype::float16);
    CHECK_FALSE(r.out_dtype);
    CHECK(r.parameters.count("int8_mask") == 0);
    CHECK(r.ignored.size() == 1);
    CHECK(std::get<bool>(*r.parameters.at("normalize").evaluate("x", 0)) == true);
    CHECK(r.models[0].parameters.at("density").is_gradient());
    CHECK(std::get<double>(*r.models[0].parameters.at("density").evaluate("x", 0.5)) == Approx(0.7));
    CHECK(std::get<double>(*r.models[1].parameters.at("weight").evaluate("x", 1.0)) == 1.0);
    const auto& w = r.models[2].parameters.at("weight");
    CHECK(w.is_rules());
    CHECK(std::get<double>(*w.evaluate("model.layers.3.mlp.up_proj.weight", 0.2)) == 0.5);
    CHECK(std::get<double>(*w.evaluate("model.layers.3.self_attn.q_proj.weight", 0.2)) == 0.0);
}

TEST_CASE("recipe: scalars keep their YAML types", "[recipe]")
{
    const auto r = xmerge::parse_recipe(R"(
merge_method: linear
models:
  - model: a
parameters:
  n: 3
  f: -2.5e-1
  b: false
  y: yes
  s: hello
  q: "1.5"
  rule: {filter: attn, value: 2}
  steps: [x, y]
out_dtype: bf16
)");
    CHECK(std::get<double>(*r.parameters.at("n").evaluate("", 0)) == 3.0);
    CHECK(std::get<double>(*r.parameters.at("f").evaluate("", 0)) == -0.25);
    CHECK(std::get<bool>(*r.parameters.at("b").evaluate("", 0)) == false);
    CHECK(std::get<bool>(*r.parameters.at("y").evaluate("", 0)) == true);  // YAML 1.1, as PyYAML reads it
    CHECK(std::get<std::string>(*r.parameters.at("s").evaluate("", 0)) == "hello");
    CHECK(std::get<std::string>(*r.parameters.at("q").evaluate("", 0)) == "1.5");
    CHECK(std::get<double>(*r.parameters.at("rule").evaluate("a.attn.b", 0)) == 2.0);
    CHECK_FALSE(r.parameters.at("rule").evaluate("a.mlp.b", 0));
    CHECK(std::get<std::string>(*r.parameters.at("steps").evaluate("", 1.0)) == "y");
    CHECK(r.out_dtype == xmerge::dtype::bfloat16);
}

TEST_CASE("recipe: tokenizer_source and tokenizer describe the output vocabulary", "[recipe]")
{
    auto r = xmerge::parse_recipe("merge_method: linear\nmodels:\n  - model: a\ntokenizer_source: union\nchat_template: chatml\n", "r.yml");
    REQUIRE(r.tokenizer);
    CHECK(r.tokenizer->source == "union");
    CHECK(r.tokenizer->tokens.empty());
    REQUIRE(r.ignored.size() == 1);
    CHECK_THAT(r.ignored[0], Catch::Contains("chat_template"));

    r = xmerge::parse_recipe(R"(merge_method: linear
models:
  - model: a
tokenizer:
  source: base
  pad_to_multiple_of: 16
  tokens:
    _tok_10: {source: models/b, force: true}
    _tok_20:
      source: {kind: model_token, model: models/b, token_id: 64}
    _tok_21:
      source: {kind: model_token, model: a, token: "<s>"}
    _tok_22:
      source: {kind: zero}
)",
                             "r.yml");
    REQUIRE(r.tokenizer);
    CHECK(r.tokenizer->source == "base");
    CHECK(r.tokenizer->pad_to_multiple_of == 16);
    REQUIRE(r.tokenizer->tokens.size() == 4);
    const auto& forced = r.tokenizer->tokens.at("_tok_10");
    CHECK(forced.source == xmerge::recipe_token::kind::model);
    CHECK(forced.model == "models/b");
    CHECK(forced.force);
    CHECK(r.tokenizer->tokens.at("_tok_20").token_id == 64);
    CHECK_FALSE(r.tokenizer->tokens.at("_tok_20").force);
    CHECK(r.tokenizer->tokens.at("_tok_21").token == "<s>");
    CHECK(r.tokenizer->tokens.at("_tok_22").source == xmerge::recipe_token::kind::zero);

    auto error = [](const std::string& tail) { return parse_error("merge_method: linear\nmodels:\n  - model: a\n" + tail); };
    CHECK_THAT(error("tokenizer_source: union\ntokenizer: {source: base}\n"), Catch::Contains("not both"));
    CHECK_THAT(error("tokenizer: {source: base, pad_to_multiple_of: 0}\n"), Catch::Contains("positive integer"));
    CHECK_THAT(error("tokenizer: {sauce: base}\n"), Catch::Contains("'sauce'"));
    CHECK_THAT(error("tokenizer: {tokens: {x: {force: true}}}\n"), Catch::Contains("tokenizer.tokens.x.source") && Catch::Contains("missing"));
    CHECK_THAT(error("tokenizer: {tokens: {x: {source: {kind: model_token, model: a, token_id: 1, token: b}}}}\n"), Catch::Contains("exactly one"));
    CHECK_THAT(error("tokenizer: {tokens: {x: {source: {kind: copy}}}}\n"), Catch::Contains("unknown kind 'copy'"));
}

TEST_CASE("recipe: mistakes are reported with the key and the line", "[recipe]")
{
    const auto& error = parse_error;
    CHECK_THAT(error("merge_method: linear\nmodels:\n  - model: a\nmerge_methd: x\n"), Catch::Contains("'merge_methd'") && Catch::Contains("line 4"));
    CHECK_THAT(error("models:\n  - model: a\n"), Catch::Contains("merge_method") && Catch::Contains("missing"));
    CHECK_THAT(error("merge_method: linear\n"), Catch::Contains("needs either a non-empty 'models' list or 'slices'"));
    CHECK_THAT(error("merge_method: linear\nmodels:\n  - model: a\ndtype: float8\n"), Catch::Contains("unknown dtype 'float8'"));
    CHECK_THAT(error("merge_method: linear\nmodels:\n  - model: a+lora\n"), Catch::Equals("no error"));  // folded when bound
    CHECK_THAT(error("merge_method: linear\nmodels:\n  - model: a\n    weight: 1\n"), Catch::Contains("'weight'") && Catch::Contains("unknown key in a model entry"));
    CHECK_THAT(error("merge_method: linear\nmodels:\n  - model: a\nparameters:\n  w: [1, {filter: x, value: 2}]\n"), Catch::Contains("only values or only"));
    CHECK_THAT(error("merge_method: linear\nmodels:\n  - model: a\nparameters:\n  w: [{filter: x, valu: 2}]\n"), Catch::Contains("unknown key 'valu'"));
    CHECK_THAT(error("merge_method: [linear\n"), Catch::Contains("not valid YAML"));
    CHECK_THAT(error("- 1\n- 2\n"), Catch::Contains("must be a YAML mapping"));
    CHECK_THAT(error("merge_method: passthrough\nslices:\n  - sources:\n      - model: a\n"), Catch::Contains("layer_range"));
    CHECK_THAT(error("merge_method: passthrough\nslices:\n  - sources:\n      - model: a\n        layer_range: [4, 2]\n"), Catch::Contains("0 <= first <= last"));
    CHECK_THAT(error("merge_method: linear\nmodels:\n  - model: a\nparameters:\n  w: .inf\n"), Catch::Contains("not finite"));
}

TEST_CASE("recipe_merge: opens each checkpoint once and tells the base from the models", "[recipe]")
{
    scratch_dir dir;
    const std::vector<float> v = {1, 2, 3, 4};
    for (const char* name : {"base", "a", "b"})
    {
        std::filesystem::create_directories(dir / name);
        xmerge::io::save_safetensors(dir / (std::string(name) + "/model.safetensors"), {xmerge::as_tensor(v, "w")});
    }
    const std::string text = "merge_method: task_arithmetic\nbase_model: " + (dir / "base") + "\nmodels:\n  - model: " + (dir / "base") + "\n  - model: " + (dir / "a")
                             + "\n    parameters: {weight: 1}\n  - model: " + (dir / "b") + "/\n    parameters: {weight: 0.5}\n";
    const auto& registry = xmerge_test::builtin_registry();
    const xmerge::recipe_merge bound(xmerge::parse_recipe(text, "r.yml"), registry);
    REQUIRE(bound.spec().models.size() == 2);
    CHECK(bound.base() == bound.spec().base);
    CHECK(&bound.reference() == bound.base());
    CHECK(bound.input_bytes() == 3 * 16);
    const auto plan = xmerge::plan_merge(bound.spec(), registry);
    CHECK(std::get<std::vector<double>>(plan.tensors[0].params.values().at("weight")) == std::vector<double>{1.0, 0.5});

    // linear does not take a base: a listed base is merged like any model
    const std::string lin = "merge_method: linear\nbase_model: " + (dir / "base") + "\nmodels:\n  - model: " + (dir / "base") + "\n  - model: " + (dir / "a")
                            + "\nparameters: {weight: 1}\n";
    const xmerge::recipe_merge soup(xmerge::parse_recipe(lin, "r.yml"), registry);
    CHECK(soup.spec().models.size() == 2);

    const std::string missing = "merge_method: linear\nmodels:\n  - model: " + (dir / "nowhere") + "\n";
    CHECK_THROWS_WITH(xmerge::recipe_merge(xmerge::parse_recipe(missing, "r.yml"), registry),
                      Catch::Contains("nowhere") && Catch::Contains("no such file") && Catch::Contains("recipe r.yml"));
    const std::string unknown = "merge_method: frobnicate\nmodels:\n  - model: " + (dir / "a") + "\n";
    CHECK_THROWS_WITH(xmerge::recipe_merge(xmerge::parse_recipe(unknown, "r.yml"), registry), Catch::Contains("unknown method 'frobnicate'"));
    const std::string only_base = "merge_method: task_arithmetic\nbase_model: " + (dir / "base") + "\nmodels:\n  - model: " + (dir / "base") + "\n";
    CHECK_THROWS_WITH(xmerge::recipe_merge(xmerge::parse_recipe(only_base, "r.yml"), registry), Catch::Contains("besides the base"));
}

TEST_CASE("recipe_merge: MODEL+ADAPTER references go through bind_options::fold_adapter", "[recipe]")
{
    CHECK_FALSE(xmerge::split_adapter_reference("models/base"));
    const auto split = xmerge::split_adapter_reference("models/base+adapters/math");
    REQUIRE(split);
    CHECK(split->model == "models/base");
    CHECK(split->adapter == "adapters/math");
    for (const char* bad : {"+adapter", "model+", "a+b+c"})
    {
        CHECK_THROWS_WITH(xmerge::split_adapter_reference(bad, "r.yml"), Catch::Contains("MODEL+ADAPTER") && Catch::Contains(bad));
    }

    scratch_dir dir;
    const std::vector<float> v = {1, 2, 3, 4}, w = {3, 4, 5, 6};
    for (const auto& [name, values] : {std::pair{"base", v}, std::pair{"folded", w}, std::pair{"odd+name", w}})
    {
        std::filesystem::create_directories(dir / name);
        xmerge::io::save_safetensors(dir / (std::string(name) + "/model.safetensors"), {xmerge::as_tensor(values, "w")});
    }
    // A directory whose name holds a '+' is a plain model.
    CHECK_FALSE(xmerge::split_adapter_reference(dir / "odd+name"));

    const std::string text = "merge_method: linear\nmodels:\n  - model: " + (dir / "base") + "\n  - model: " + (dir / "base") + "+" + (dir / "adapter")
                             + "\nparameters: {weight: 1}\n";
    const auto& registry = xmerge_test::builtin_registry();
    CHECK_THROWS_WITH(xmerge::recipe_merge(xmerge::parse_recipe(text, "r.yml"), registry), Catch::Contains("fold_adapter") && Catch::Contains("r.yml"));

    std::vector<std::pair<std::string, std::string>> calls;
    xmerge::bind_options o;
    o.fold_adapter = [&](const std::string& model, const std::string& adapter)
    {
        calls.emplace_back(model, adapter);
        return dir / "folded";
    };
    const xmerge::recipe_merge bound(xmerge::parse_recipe(text, "r.yml"), registry, o);
    REQUIRE(calls.size() == 1);
    CHECK(calls[0] == std::pair{dir / "base", dir / "adapter"});
    REQUIRE(bound.spec().models.size() == 2);
    CHECK(bound.spec().models[1].source->name().find("folded") != std::string::npos);
}

TEST_CASE("recipe_merge: in slices the base is the source from the base model", "[recipe]")
{
    scratch_dir dir;
    std::vector<std::vector<float>> values;
    for (int m = 0; m < 2; ++m)
    {
        std::filesystem::create_directories(dir / std::to_string(m));
        std::vector<xmerge::const_tensor_ref> refs;
        values.reserve(8);
        for (int l = 0; l < 4; ++l)
        {
            values.push_back(std::vector<float>(8, static_cast<float>(10 * m + l)));
            refs.push_back(xmerge::as_tensor(values.back(), "layers." + std::to_string(l) + ".w"));
        }
        xmerge::io::save_safetensors(dir / (std::to_string(m) + "/model.safetensors"), refs);
    }
    const std::string text = "merge_method: task_arithmetic\nbase_model: " + (dir / "0") + "\nslices:\n  - sources:\n      - model: " + (dir / "0")
                             + "\n        layer_range: [1, 3]\n      - model: " + (dir / "1") + "\n        layer_range: [0, 2]\n        parameters: {weight: 1.0}\n";
    const auto& registry = xmerge_test::builtin_registry();
    const xmerge::recipe_merge bound(xmerge::parse_recipe(text, "s.yml"), registry);
    REQUIRE(bound.spec().slices.size() == 1);
    const auto& slice = bound.spec().slices[0];
    REQUIRE(slice.base);
    CHECK(slice.base->layer_range == std::make_pair(std::size_t(1), std::size_t(3)));
    CHECK(slice.sources.size() == 1);
    scratch_dir out;
    const auto s = xmerge::merge_models(bound.spec(), registry, out / "m");
    CHECK(s.layers == 2);
    const xmerge::model m = xmerge::model::open(out / "m");
    // output layer 1 = base layer 2 + (model layer 1 - base layer 2)
    CHECK(m.at("layers.1.w").ref().typed_data<float>()[0] == 11.0f);
    CHECK(m.size() == 2);
}

TEST_CASE("recipe: the bundled TIES demo recipe maps onto TIES's parameters", "[recipe]")
{
    xmerge::recipe r = xmerge::load_recipe(std::string(XMERGE_TEST_DATA_DIR) + "/../../examples/recipes/demo-ties.yml");
    CHECK(r.merge_method == "ties");
    CHECK(r.compute_dtype == xmerge::dtype::bfloat16);

    // Models with two layers, at the paths the recipe names, under a scratch directory.
    scratch_dir dir;
    std::vector<std::vector<float>> store;
    store.reserve(64);
    auto relocate = [&](std::string& path)
    {
        const std::string local = dir / path;
        if (!std::filesystem::exists(local))
        {
            std::filesystem::create_directories(local);
            std::vector<xmerge::const_tensor_ref> refs;
            for (const char* name : {"model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight", "model.layers.0.self_attn.q_proj.weight",
                                     "model.layers.1.mlp.up_proj.weight", "model.layers.1.self_attn.q_proj.weight", "lm_head.weight"})
            {
                store.push_back(std::vector<float>(16, static_cast<float>(store.size())));
                refs.push_back(xmerge::as_tensor(store.back(), name));
            }
            xmerge::io::save_safetensors(local + "/model.safetensors", refs);
        }
        path = local;
    };
    relocate(r.base_model);
    for (auto& m : r.models)
    {
        relocate(m.model);
    }

    // TIES as the registry declares it: per-model weight and density, global lambda and normalize.
    xmerge::method_registry registry;
    xmerge::method_info ties;
    ties.name = "ties";
    ties.needs_base = true;
    ties.parameters = {{"weight", xmerge::parameter_scope::per_model, std::nullopt, ""},
                       {"density", xmerge::parameter_scope::per_model, 1.0, ""},
                       {"lambda", xmerge::parameter_scope::global, 1.0, ""},
                       {"normalize", xmerge::parameter_scope::global, true, ""}};
    ties.build = [](const xmerge::method_inputs& in, const xmerge::parameters&) -> xmerge::any_expression { return *in.base + 0.0; };
    registry.add(ties);

    const xmerge::recipe_merge bound(r, registry);
    CHECK(bound.spec().models.size() == 3);  // the listed base is not a task
    const auto plan = xmerge::plan_merge(bound.spec(), registry);
    auto param = [&](const std::string& tensor, const std::string& name)
    {
        for (const auto& t : plan.tensors)
        {
            if (t.name == tensor)
            {
                return t.params.values().at(name);
            }
        }
        FAIL("no tensor " << tensor);
        return xmerge::parameter_value{};
    };
    using list = std::vector<double>;
    CHECK(std::get<list>(param("model.layers.0.mlp.up_proj.weight", "weight")) == list{1.0, 0.6, 0.8});
    CHECK(std::get<list>(param("model.layers.1.self_attn.q_proj.weight", "weight")) == list{1.0, 1.0, 0.4});
    CHECK(std::get<list>(param("model.embed_tokens.weight", "density")) == list{0.2, 0.2, 0.3});
    CHECK(std::get<double>(param("lm_head.weight", "lambda")) == 1.0);
    CHECK(std::get<bool>(param("lm_head.weight", "normalize")) == true);
    CHECK(bound.out_dtype() == xmerge::dtype::bfloat16);
}
