// Collapsing mixture-of-experts checkpoints into dense ones, and upcycling back.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "test_io_support.hpp"
#include "test_support.hpp"
#include "xmerge/io/safetensors_writer.hpp"
#include "xmerge/model/moe.hpp"

using namespace xmerge;
using xmerge_test::scratch_dir;

namespace
{
    constexpr std::size_t hidden = 6, inter = 10, vocab = 16, layers = 2;

    // A small Mixtral-shaped checkpoint: named float32 tensors with distinct random values.
    struct moe_checkpoint
    {
        std::map<std::string, std::vector<float>> values;
        std::map<std::string, shape_type> shapes;

        void add(const std::string& name, shape_type shape)
        {
            values[name] = xmerge_test::random_floats(numel(shape), static_cast<std::uint32_t>(values.size() * 7 + 1));
            shapes[name] = shape;
        }

        void save(const std::string& dir, const nlohmann::json& config) const
        {
            std::filesystem::create_directories(dir);
            std::vector<const_tensor_ref> refs;
            for (const auto& [name, v] : values)
            {
                refs.push_back(const_tensor_ref(v.data(), dtype::float32, shapes.at(name), name));
            }
            io::save_safetensors(dir + "/model.safetensors", refs);
            xmerge_test::write_bytes(dir + "/config.json", config.dump(2));
            xmerge_test::write_bytes(dir + "/tokenizer.json", "{\"version\": \"1.0\"}");
        }
    };

    moe_checkpoint mixtral(std::size_t experts)
    {
        moe_checkpoint m;
        m.add("model.embed_tokens.weight", {vocab, hidden});
        for (std::size_t l = 0; l < layers; ++l)
        {
            const std::string p = "model.layers." + std::to_string(l) + ".";
            m.add(p + "input_layernorm.weight", {hidden});
            m.add(p + "self_attn.q_proj.weight", {hidden, hidden});
            m.add(p + "block_sparse_moe.gate.weight", {experts, hidden});
            for (std::size_t e = 0; e < experts; ++e)
            {
                const std::string x = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
                m.add(x + "w1.weight", {inter, hidden});
                m.add(x + "w2.weight", {hidden, inter});
                m.add(x + "w3.weight", {inter, hidden});
            }
        }
        return m;
    }

    nlohmann::json mixtral_config(std::size_t experts)
    {
        return {{"architectures", {"MixtralForCausalLM"}}, {"model_type", "mixtral"}, {"hidden_size", hidden}, {"intermediate_size", inter},
                {"num_local_experts", experts}, {"num_experts_per_tok", 2}, {"router_aux_loss_coef", 0.02}, {"output_router_logits", false},
                {"torch_dtype", "float32"}};
    }

    nlohmann::json read_json(const std::string& path)
    {
        return nlohmann::json::parse(xmerge_test::read_bytes(path));
    }

}

TEST_CASE("collapsing Mixtral experts averages each family and drops the routers", "[io][moe]")
{
    scratch_dir dir;
    const std::size_t experts = 4;
    const auto source = mixtral(experts);
    source.save(dir / "moe", mixtral_config(experts));
    const model moe = model::open(dir / "moe");

    for (bool weighted : {false, true})
    {
        collapse_options options;
        options.threads = weighted ? 2 : 1;
        std::vector<double> w = {1, 1, 1, 1};
        if (weighted)
        {
            w = {0.1, 0.0, 0.6, 0.3};
            options.weights = {1.0, 0.0, 6.0, 3.0};  // normalized by the collapse
        }
        const std::string out = dir / (weighted ? "dense-weighted" : "dense");
        const moe_summary s = collapse_experts(moe, out, moe_layout::mixtral(), options);
        CHECK(s.experts == experts);
        CHECK(s.dropped == layers);
        CHECK(s.tensors == 1 + layers * 5);
        const model dense = model::open(out);
        CHECK(dense.size() == 1 + layers * 5);
        for (std::size_t l = 0; l < layers; ++l)
        {
            const std::string p = "model.layers." + std::to_string(l) + ".";
            CHECK_FALSE(dense.contains(p + "block_sparse_moe.gate.weight"));
            CHECK(xmerge_test::float_values(dense.at(p + "self_attn.q_proj.weight")) == source.values.at(p + "self_attn.q_proj.weight"));
            for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{{"w1", "gate_proj"}, {"w2", "down_proj"}, {"w3", "up_proj"}})
            {
                const auto got = xmerge_test::float_values(dense.at(p + "mlp." + to + ".weight"));
                CHECK(dense.at(p + "mlp." + to + ".weight").shape == source.shapes.at(p + "block_sparse_moe.experts.0." + from + ".weight"));
                const double total = w[0] + w[1] + w[2] + w[3];
                for (std::size_t i = 0; i < got.size(); ++i)
                {
                    double expect = 0.0;
                    for (std::size_t e = 0; e < experts; ++e)
                    {
                        expect += w[e] / total * source.values.at(p + "block_sparse_moe.experts." + std::to_string(e) + "." + from + ".weight")[i];
                    }
                    REQUIRE(got[i] == Approx(expect).margin(1e-6));
                }
            }
        }
        const auto config = read_json(out + "/config.json");
        CHECK(config["model_type"] == "mistral");
        CHECK(config["architectures"] == nlohmann::json::array({"MistralForCausalLM"}));
        for (const char* key : {"num_local_experts", "num_experts_per_tok", "router_aux_loss_coef", "output_router_logits"})
        {
            CHECK_FALSE(config.contains(key));
        }
        CHECK(config["intermediate_size"] == inter);
        CHECK(xmerge_test::read_bytes(out + "/tokenizer.json") == xmerge_test::read_bytes(dir / "moe/tokenizer.json"));
    }

    SECTION("bfloat16 output")
    {
        collapse_options options;
        options.out_dtype = dtype::bfloat16;
        collapse_experts(moe, dir / "dense-bf16", moe_layout::mixtral(), options);
        const model dense = model::open(dir / "dense-bf16");
        CHECK(dense.at("model.layers.0.mlp.up_proj.weight").dtype == "BF16");
        CHECK(read_json(dir / "dense-bf16/config.json")["torch_dtype"] == "bfloat16");
    }

    SECTION("a model opened from its file brings no companion files")
    {
        collapse_experts(model::open(dir / "moe/model.safetensors"), dir / "from-file", moe_layout::mixtral());
        CHECK(std::filesystem::exists(dir / "from-file/model.safetensors"));
        CHECK_FALSE(std::filesystem::exists(dir / "from-file/config.json"));
        CHECK_FALSE(std::filesystem::exists(dir / "from-file/tokenizer.json"));
    }

    SECTION("bad weights and layouts leave no output")
    {
        collapse_options options;
        options.weights = {1.0, 2.0};
        CHECK_THROWS_AS(collapse_experts(moe, dir / "bad", moe_layout::mixtral(), options), parameter_error);
        options.weights = {1.0, -1.0, 1.0, 1.0};
        CHECK_THROWS_AS(collapse_experts(moe, dir / "bad", moe_layout::mixtral(), options), parameter_error);
        options.weights = {0.0, 0.0, 0.0, 0.0};
        CHECK_THROWS_AS(collapse_experts(moe, dir / "bad", moe_layout::mixtral(), options), parameter_error);
        CHECK_THROWS_AS(collapse_experts(moe, dir / "bad", moe_layout::qwen3_moe()), parameter_error);
        CHECK_FALSE(std::filesystem::exists(dir / "bad"));
    }
}

TEST_CASE("collapsing refuses incomplete or inconsistent expert families", "[io][moe]")
{
    scratch_dir dir;
    SECTION("a layer missing an expert")
    {
        auto m = mixtral(3);
        m.values.erase("model.layers.1.block_sparse_moe.experts.2.w3.weight");
        m.shapes.erase("model.layers.1.block_sparse_moe.experts.2.w3.weight");
        m.save(dir / "moe", mixtral_config(3));
        CHECK_THROWS_AS(collapse_experts(model::open(dir / "moe"), dir / "out", moe_layout::mixtral()), io_error);
    }
    SECTION("experts of different shapes")
    {
        auto m = mixtral(3);
        m.add("model.layers.0.block_sparse_moe.experts.1.w1.weight", {inter + 1, hidden});
        m.save(dir / "moe", mixtral_config(3));
        CHECK_THROWS_AS(collapse_experts(model::open(dir / "moe"), dir / "out", moe_layout::mixtral()), shape_error);
    }
    SECTION("a dense name the model already has")
    {
        auto m = mixtral(2);
        m.add("model.layers.0.mlp.gate_proj.weight", {inter, hidden});
        m.save(dir / "moe", mixtral_config(2));
        CHECK_THROWS_AS(collapse_experts(model::open(dir / "moe"), dir / "out", moe_layout::mixtral()), io_error);
    }
    CHECK_FALSE(std::filesystem::exists(dir / "out"));
}

TEST_CASE("upcycling a dense model gives identical experts and a router per layer", "[io][moe]")
{
    scratch_dir dir;
    mixtral(2).save(dir / "moe", mixtral_config(2));
    collapse_experts(model::open(dir / "moe"), dir / "dense", moe_layout::mixtral());
    const model dense = model::open(dir / "dense");

    for (router_init init : {router_init::zeros, router_init::normal})
    {
        upcycle_options options;
        options.experts = 3;
        options.experts_per_token = 2;
        options.init = init;
        options.seed = 11;
        const std::string out = dir / (init == router_init::zeros ? "up-zeros" : "up-normal");
        const moe_summary s = upcycle_experts(dense, out, moe_layout::mixtral(), options);
        CHECK(s.experts == 3);
        const model up = model::open(out);
        CHECK(up.size() == 1 + layers * (2 + 1 + 3 * 3));
        for (std::size_t l = 0; l < layers; ++l)
        {
            const std::string p = "model.layers." + std::to_string(l) + ".";
            for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{{"w1", "gate_proj"}, {"w2", "down_proj"}, {"w3", "up_proj"}})
            {
                for (std::size_t e = 0; e < 3; ++e)
                {
                    CHECK(xmerge_test::float_values(up.at(p + "block_sparse_moe.experts." + std::to_string(e) + "." + from + ".weight")) == xmerge_test::float_values(dense.at(p + "mlp." + to + ".weight")));
                }
            }
            const std::string router = p + "block_sparse_moe.gate.weight";
            CHECK(up.at(router).shape == shape_type{3, hidden});
            const auto r = xmerge_test::float_values(up.at(router));
            double sum = 0.0, squares = 0.0;
            for (float v : r)
            {
                sum += v;
                squares += double(v) * v;
                if (init == router_init::zeros)
                {
                    REQUIRE(v == 0.0f);
                }
                else
                {
                    REQUIRE(std::abs(v) < 0.02 * 6);
                }
            }
            if (init == router_init::normal)
            {
                CHECK(squares > 0.0);
                // The two layers' routers draw from different streams.
                CHECK(xmerge_test::float_values(up.at("model.layers.0.block_sparse_moe.gate.weight")) != xmerge_test::float_values(up.at("model.layers.1.block_sparse_moe.gate.weight")));
            }
        }
        const auto config = read_json(out + "/config.json");
        CHECK(config["model_type"] == "mixtral");
        CHECK(config["architectures"] == nlohmann::json::array({"MixtralForCausalLM"}));
        CHECK(config["num_local_experts"] == 3);
        CHECK(config["num_experts_per_tok"] == 2);
    }

    SECTION("the same seed gives the same routers; collapsing the upcycled model gives the dense one back")
    {
        upcycle_options options;
        options.experts = 3;
        options.seed = 11;
        upcycle_experts(dense, dir / "again", moe_layout::mixtral(), options);
        CHECK(xmerge_test::float_values(model::open(dir / "again").at("model.layers.1.block_sparse_moe.gate.weight"))
              == xmerge_test::float_values(model::open(dir / "up-normal").at("model.layers.1.block_sparse_moe.gate.weight")));
        collapse_experts(model::open(dir / "again"), dir / "round-trip", moe_layout::mixtral());
        const model back = model::open(dir / "round-trip");
        REQUIRE(back.size() == dense.size());
        for (const auto& t : dense.tensors())
        {
            const auto a = xmerge_test::float_values(dense.at(t.name)), b = xmerge_test::float_values(back.at(t.name));
            for (std::size_t i = 0; i < a.size(); ++i)
            {
                REQUIRE(b[i] == Approx(a[i]).margin(1e-6));
            }
        }
    }

    SECTION("bad options")
    {
        upcycle_options options;
        options.experts = 0;
        CHECK_THROWS_AS(upcycle_experts(dense, dir / "bad", moe_layout::mixtral(), options), parameter_error);
        options.experts = 2;
        options.experts_per_token = 3;
        CHECK_THROWS_AS(upcycle_experts(dense, dir / "bad", moe_layout::mixtral(), options), parameter_error);
        CHECK_THROWS_AS(upcycle_experts(dense, dir / "bad", moe_layout::qwen2_moe()), parameter_error);
        CHECK_FALSE(std::filesystem::exists(dir / "bad"));
    }
}

TEST_CASE("Qwen3-MoE collapse sets the dense intermediate size", "[io][moe]")
{
    scratch_dir dir;
    moe_checkpoint m;
    m.add("model.layers.0.mlp.gate.weight", {2, hidden});
    for (std::size_t e = 0; e < 2; ++e)
    {
        for (const char* proj : {"gate_proj", "up_proj"})
        {
            m.add("model.layers.0.mlp.experts." + std::to_string(e) + "." + proj + ".weight", {4, hidden});
        }
        m.add("model.layers.0.mlp.experts." + std::to_string(e) + ".down_proj.weight", {hidden, 4});
    }
    m.save(dir / "moe", {{"architectures", {"Qwen3MoeForCausalLM"}}, {"model_type", "qwen3_moe"}, {"intermediate_size", 24}, {"moe_intermediate_size", 4},
                          {"num_experts", 2}, {"num_experts_per_tok", 1}, {"norm_topk_prob", true}});
    collapse_experts(model::open(dir / "moe"), dir / "dense", moe_layout::qwen3_moe());
    const model dense = model::open(dir / "dense");
    CHECK(dense.size() == 3);
    CHECK(dense.contains("model.layers.0.mlp.down_proj.weight"));
    const auto config = read_json(dir / "dense/config.json");
    CHECK(config["intermediate_size"] == 4);
    CHECK(config["model_type"] == "qwen3");
    CHECK_FALSE(config.contains("num_experts"));
    CHECK_FALSE(config.contains("moe_intermediate_size"));
}
