// PEFT's adapter format: adapters written by the peft package fold into the
// values peft's merge_and_unload computed (tests/data/lora, made by
// generate.py there), adapters written here read back the same, and bad
// adapters are refused naming the file and the tensor.
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <xmerge/lora/adapter.hpp>
#include <xmerge/lora/config.hpp>
#include <xmerge/lora/fold_model.hpp>
#include <xmerge/lora/write.hpp>

#include "test_io_support.hpp"
#include "test_support.hpp"

using namespace xmerge;

namespace
{
    const std::string data_dir = std::string(XMERGE_TEST_DATA_DIR) + "/lora/";

    struct peft_case
    {
        const char* name;
        const char* base;
    };

    const peft_case peft_cases[] = {{"lora", "base_llama"},
                                    {"rslora", "base_llama"},
                                    {"patterns", "base_llama"},
                                    {"dora", "base_llama"},
                                    {"embedding_saved", "base_llama"},
                                    {"fan_in_fan_out", "base_gpt2"},
                                    {"dora_fan_in_fan_out", "base_gpt2"},
                                    {"conv", "base_conv"},
                                    {"bf16", "base_llama_bf16"}};

    /**
     * Every tensor of `got` equals `expected`'s within `ulps` of its dtype, a
     * float32 product error, and, where `rounded_update`, one unit of the
     * update expected - base in the dtype (peft rounds a bfloat16 update
     * before adding it; here the sum is rounded once).
     */
    void require_same_model(const model& got, const model& expected, const model& base, double ulps, bool rounded_update)
    {
        REQUIRE(got.size() == expected.size());
        for (const model_tensor& e : expected.tensors())
        {
            CAPTURE(e.name);
            const model_tensor& g = got.at(e.name);
            REQUIRE(g.dtype == e.dtype);
            REQUIRE(g.shape == e.shape);
            dtype type = dtype::float32;
            REQUIRE(io::to_dtype(e.dtype, type));
            const auto gv = xmerge_test::float_values(g), ev = xmerge_test::float_values(e), bv = xmerge_test::float_values(base.at(e.name));
            for (std::size_t i = 0; i < ev.size(); ++i)
            {
                const double tol = ulps * xmerge_test::ulp_of(type, ev[i]) + 2e-6 * (1.0 + std::fabs(ev[i]))
                                   + (rounded_update ? xmerge_test::ulp_of(type, static_cast<double>(ev[i]) - bv[i]) : 0.0);
                if (!(std::fabs(gv[i] - ev[i]) <= tol))
                {
                    FAIL("element " << i << ": got " << gv[i] << ", peft computed " << ev[i]);
                }
            }
        }
    }

    /// An in-memory adapter from PEFT-named float tensors.
    struct memory_adapter
    {
        std::vector<std::vector<float>> storage;
        model tensors{"memory adapter"};

        void add(const std::string& name, shape_type shape, float value = 0.5f)
        {
            storage.emplace_back(numel(shape), value);
            tensors.add(name, as_tensor(storage.back().data(), shape, name));
        }
    };

    std::string error_of(const std::function<void()>& f)
    {
        try
        {
            f();
        }
        catch (const merge_error& e)
        {
            return e.what();
        }
        return "no error";
    }
}

TEST_CASE("adapters saved by peft fold into what peft's merge_and_unload computes", "[lora][format][peft]")
{
    for (const auto& c : peft_cases)
    {
        CAPTURE(c.name);
        const model base = model::open(data_dir + c.base);
        const lora::adapter a = lora::adapter::open(data_dir + c.name);
        REQUIRE(!a.layers().empty());
        xmerge_test::scratch_dir dir;
        merge_options options;
        options.threads = 2;
        const auto summary = lora::fold_adapter(base, a, dir / "folded", options);
        REQUIRE(summary.tensors == base.size());
        REQUIRE(summary.merged + summary.copied == base.size());
        const model expected = model::open(data_dir + std::string(c.name) + "/expected.safetensors");
        const bool bf16 = std::string(c.name) == "bf16";
        require_same_model(model::open(dir / "folded"), expected, base, bf16 ? 1.01 : 8.0, bf16);

        // The data is not trivial: every updated weight differs from the base.
        for (const auto& l : a.layers())
        {
            const auto bv = xmerge_test::float_values(base.at(l.target)), ev = xmerge_test::float_values(expected.at(l.target));
            double diff = 0.0;
            for (std::size_t i = 0; i < bv.size(); ++i)
            {
                diff = std::max(diff, static_cast<double>(std::fabs(bv[i] - ev[i])));
            }
            REQUIRE(diff > 1e-2);
        }
    }
}

TEST_CASE("reading resolves per-module ranks, alphas, layouts and replacements as peft does", "[lora][format]")
{
    const lora::adapter patterns = lora::adapter::open(data_dir + "patterns");
    const auto scale = [&](const std::string& module) { return patterns.find(module + ".weight")->scale; };
    const auto rank = [&](const std::string& module) { return patterns.find(module + ".weight")->rank(); };
    // rank_pattern {"layers\.1\.self_attn\.q_proj": 6, "v_proj": 2}, alpha_pattern {"model\.layers\.0\.mlp\.up_proj": 16, "q_proj": 3}
    CHECK(rank("model.layers.0.self_attn.q_proj") == 4);
    CHECK(scale("model.layers.0.self_attn.q_proj") == 3.0 / 4.0);
    CHECK(rank("model.layers.1.self_attn.q_proj") == 6);
    CHECK(scale("model.layers.1.self_attn.q_proj") == 3.0 / 6.0);
    CHECK(rank("model.layers.0.self_attn.v_proj") == 2);
    CHECK(scale("model.layers.0.self_attn.v_proj") == 8.0 / 2.0);
    CHECK(scale("model.layers.0.mlp.up_proj") == 16.0 / 4.0);
    CHECK(scale("model.layers.1.mlp.up_proj") == 8.0 / 4.0);

    const lora::adapter rs = lora::adapter::open(data_dir + "rslora/adapter_model.safetensors");
    REQUIRE(rs.layers().size() == 4);
    for (const auto& l : rs.layers())
    {
        CHECK(l.scale == Approx(4.0 / std::sqrt(8.0)).epsilon(1e-15));
        REQUIRE(l.bias.has_value());
    }
    CHECK(rs.find_bias_update("model.layers.0.self_attn.v_proj.bias") != nullptr);

    const lora::adapter saved = lora::adapter::open(data_dir + "embedding_saved");
    const lora::layer* embed = saved.find("model.embed_tokens.weight");
    REQUIRE(embed != nullptr);
    CHECK(embed->embedding);
    CHECK(embed->layout == lora::factor_layout::in_out);
    CHECK(saved.find("model.layers.0.self_attn.k_proj.weight")->layout == lora::factor_layout::out_in);
    CHECK(saved.find_replacement("lm_head.weight") != nullptr);
    CHECK(saved.find_replacement("model.norm.bias") != nullptr);
    CHECK(saved.find_replacement("model.embed_tokens.weight") == nullptr);

    const lora::adapter gpt2 = lora::adapter::open(data_dir + "fan_in_fan_out");
    CHECK(gpt2.find("transformer.h.0.attn.c_attn.weight")->layout == lora::factor_layout::in_out);
    CHECK(lora::adapter::open(data_dir + "dora").layers()[0].is_dora());
}

TEST_CASE("PEFT's pattern rule matches a name or a dot-separated tail of it", "[lora][format]")
{
    CHECK(lora::pattern_matches("q_proj", "model.layers.0.self_attn.q_proj"));
    CHECK(lora::pattern_matches("q_proj", "q_proj"));
    CHECK_FALSE(lora::pattern_matches("q_proj", "model.layers.0.self_attn.xq_proj"));
    CHECK(lora::pattern_matches("layers\\.1\\..*", "model.layers.1.mlp.up_proj"));
    const std::string exact = lora::escape_pattern("model.layers.1.mlp");
    CHECK(lora::pattern_matches(exact, "model.layers.1.mlp"));
    CHECK_FALSE(lora::pattern_matches(exact, "model.layers.11.mlp"));
    CHECK_FALSE(lora::pattern_matches(exact, "model.layersX1.mlp"));
}

TEST_CASE("adapters written here read back and fold the same", "[lora][format][write]")
{
    for (const auto& c : peft_cases)
    {
        CAPTURE(c.name);
        const model base = model::open(data_dir + c.base);
        const lora::adapter a = lora::adapter::open(data_dir + c.name);
        xmerge_test::scratch_dir dir;
        lora::write_adapter(dir / "copy", a);
        const lora::adapter b = lora::adapter::open(dir / "copy");
        REQUIRE(b.layers().size() == a.layers().size());
        REQUIRE(b.replacements().size() == a.replacements().size());
        for (const auto& l : a.layers())
        {
            const lora::layer* m = b.find(l.target);
            REQUIRE(m != nullptr);
            CHECK(m->rank() == l.rank());
            CHECK(m->scale == Approx(l.scale).epsilon(1e-14));
            CHECK(m->layout == l.layout);
            CHECK(m->is_dora() == l.is_dora());
        }
        lora::fold_adapter(base, a, dir / "a");
        lora::fold_adapter(base, b, dir / "b");
        const model fa = model::open(dir / "a"), fb = model::open(dir / "b");
        for (const model_tensor& t : fa.tensors())
        {
            REQUIRE(xmerge_test::same_bits(xmerge_test::float_values(t), xmerge_test::float_values(fb.at(t.name))));
        }

        // In bfloat16: the factors round, the layers and their ranks stay.
        lora::write_options bf16;
        bf16.out_dtype = dtype::bfloat16;
        lora::write_adapter(dir / "bf16", a, bf16);
        const lora::adapter h = lora::adapter::open(dir / "bf16");
        REQUIRE(h.layers().size() == a.layers().size());
        CHECK(h.layers()[0].a.type() == dtype::bfloat16);
    }
}

TEST_CASE("bad adapters are refused naming the file and the tensor", "[lora][format][errors]")
{
    lora::adapter_config config;
    config.r = 2;
    config.lora_alpha = 4;
    const std::string prefix = "base_model.model.layer.";

    SECTION("a lora_A without its lora_B")
    {
        memory_adapter m;
        m.add(prefix + "lora_A.weight", {2, 3});
        const auto e = error_of([&] { lora::adapter(config, m.tensors); });
        CHECK_THAT(e, Catch::Contains("memory adapter") && Catch::Contains(prefix + "lora_A.weight") && Catch::Contains("lora_B.weight"));
    }
    SECTION("factors whose ranks disagree")
    {
        memory_adapter m;
        m.add(prefix + "lora_A.weight", {2, 3});
        m.add(prefix + "lora_B.weight", {4, 3});
        CHECK_THAT(error_of([&] { lora::adapter(config, m.tensors); }), Catch::Contains("rank mismatch") && Catch::Contains(prefix + "lora_B.weight"));
    }
    SECTION("a rank the config does not give")
    {
        memory_adapter m;
        m.add(prefix + "lora_A.weight", {3, 3});
        m.add(prefix + "lora_B.weight", {4, 3});
        CHECK_THAT(error_of([&] { lora::adapter(config, m.tensors); }), Catch::Contains("has rank 3") && Catch::Contains("r = 2"));
    }
    SECTION("a DoRA magnitude without use_dora, and use_dora without magnitudes")
    {
        memory_adapter m;
        m.add(prefix + "lora_A.weight", {2, 3});
        m.add(prefix + "lora_B.weight", {4, 2});
        m.add(prefix + "lora_magnitude_vector", {4});
        CHECK_THAT(error_of([&] { lora::adapter(config, m.tensors); }), Catch::Contains("use_dora") && Catch::Contains("lora_magnitude_vector"));
        memory_adapter n;
        n.add(prefix + "lora_A.weight", {2, 3});
        n.add(prefix + "lora_B.weight", {4, 2});
        auto dora = config;
        dora.use_dora = true;
        CHECK_THAT(error_of([&] { lora::adapter(dora, n.tensors); }), Catch::Contains("no lora_magnitude_vector"));
    }
    SECTION("LoRA tensors of an unknown kind")
    {
        memory_adapter m;
        m.add(prefix + "lora_E", {2});
        CHECK_THAT(error_of([&] { lora::adapter(config, m.tensors); }), Catch::Contains("does not know"));
    }
    SECTION("a base that lacks the target or has another shape")
    {
        memory_adapter m;
        m.add(prefix + "lora_A.weight", {2, 3});
        m.add(prefix + "lora_B.weight", {4, 2});
        m.add("base_model.model.head.weight", {5});
        const lora::adapter a(config, m.tensors);
        std::vector<float> w(12, 1.0f), wrong(15, 1.0f), head(5, 1.0f), short_head(4, 1.0f);
        model missing("base");
        missing.add("head.weight", as_tensor(head, {5}));
        CHECK_THAT(error_of([&] { a.check_against(missing); }),
                   Catch::Contains("memory adapter") && Catch::Contains(prefix + "lora_A.weight") && Catch::Contains("layer.weight") && Catch::Contains("base"));
        model mismatched("base");
        mismatched.add("layer.weight", as_tensor(wrong, {5, 3}));
        mismatched.add("head.weight", as_tensor(head, {5}));
        CHECK_THAT(error_of([&] { a.check_against(mismatched); }), Catch::Contains("[5, 3]") && Catch::Contains(prefix + "lora_A.weight"));
        model short_replacement("base");
        short_replacement.add("layer.weight", as_tensor(w, {4, 3}));
        short_replacement.add("head.weight", as_tensor(short_head, {4}));
        CHECK_THAT(error_of([&] { a.check_against(short_replacement); }), Catch::Contains("base_model.model.head.weight") && Catch::Contains("[4]"));

        // Nothing is written for an adapter that does not fit.
        xmerge_test::scratch_dir dir;
        CHECK_THROWS_AS(lora::fold_adapter(mismatched, a, dir / "out"), io_error);
        CHECK(dir.entries().empty());
    }
    SECTION("configs that are not LoRA configs")
    {
        CHECK_THAT(error_of([] { lora::parse_adapter_config("{\"peft_type\": \"PREFIX_TUNING\"}", "c.json"); }), Catch::Contains("c.json") && Catch::Contains("LORA"));
        CHECK_THAT(error_of([] { lora::parse_adapter_config("{\"r\": -4}", "c.json"); }), Catch::Contains("'r'"));
        CHECK_THAT(error_of([] { lora::parse_adapter_config("{\"r\": 4,", "c.json"); }), Catch::Contains("JSON"));
        CHECK_THAT(error_of([] { lora::parse_adapter_config("{\"rank_pattern\": {\"(q\": 2}}", "c.json"); }), Catch::Contains("rank_pattern"));
        CHECK_THAT(error_of([] { lora::adapter::open("/nonexistent/adapter"); }), Catch::Contains("/nonexistent/adapter") && Catch::Contains("no such adapter"));
        xmerge_test::scratch_dir dir;
        CHECK_THAT(error_of([&] { lora::adapter::open(dir.path().string()); }), Catch::Contains("adapter_config.json"));
    }
}

TEST_CASE("configs keep the fields they do not interpret", "[lora][format]")
{
    const auto c = lora::parse_adapter_config(R"({"r": 4, "lora_alpha": 16.5, "task_type": "CAUSAL_LM", "target_modules": "layers\\..*proj"})", "c.json");
    CHECK(c.lora_alpha == 16.5);
    CHECK(c.target_modules_regex == "layers\\..*proj");
    const auto again = lora::parse_adapter_config(lora::to_json(c), "again.json");
    CHECK(again.other.at("task_type") == "CAUSAL_LM");
    CHECK(again.lora_alpha == 16.5);
    CHECK(again.target_modules_regex == c.target_modules_regex);
}
