// A recipe merged as `xmerge run` does (recipe_job): the tensors with a merged
// vocabulary, config.json, the tokenizer, the model card and the recipe beside them.

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <xmerge/io/safetensors_writer.hpp>
#include <xmerge/io/tokenizer.hpp>
#include <xmerge/methods/builtin.hpp>
#include <xmerge/recipe/model_card.hpp>
#include <xmerge/recipe/recipe_job.hpp>

#include "test_io_support.hpp"
#include "test_support.hpp"
#include "registry_support.hpp"

using xmerge_test::scratch_dir;

namespace
{
    std::string tokenizer_json(std::size_t n, const std::vector<std::string>& added)
    {
        nlohmann::json j;
        j["model"]["type"] = "BPE";
        for (std::size_t i = 0; i < n; ++i)
        {
            j["model"]["vocab"]["t" + std::to_string(i)] = i;
        }
        j["model"]["merges"] = nlohmann::json::array();
        j["added_tokens"] = nlohmann::json::array();
        for (std::size_t k = 0; k < added.size(); ++k)
        {
            j["added_tokens"].push_back({{"id", n + k}, {"content", added[k]}, {"special", true}});
        }
        return j.dump();
    }

    // A checkpoint: embeddings of `rows` rows (value 10 * tag + row), a head unless tied, config.json, a tokenizer.
    void checkpoint(const std::string& dir, std::size_t rows, float tag, bool tied, const std::vector<std::string>& added,
                    std::vector<std::vector<float>>& keep)
    {
        std::filesystem::create_directories(dir);
        keep.emplace_back();
        for (std::size_t r = 0; r < rows; ++r)
        {
            keep.back().insert(keep.back().end(), {10 * tag + static_cast<float>(r), 1.0f});
        }
        std::vector<xmerge::const_tensor_ref> tensors = {xmerge::as_tensor(keep.back(), {rows, 2}, "model.embed_tokens.weight")};
        keep.emplace_back(2, tag);
        tensors.push_back(xmerge::as_tensor(keep.back(), {2}, "model.norm.weight"));
        if (!tied)
        {
            keep.emplace_back(rows * 2, -tag);
            tensors.push_back(xmerge::as_tensor(keep.back(), {rows, 2}, "lm_head.weight"));
        }
        xmerge::io::save_safetensors(dir + "/model.safetensors", tensors);
        xmerge_test::write_bytes(dir + "/config.json", R"({"model_type": "llama", "num_hidden_layers": 0, "vocab_size": )" + std::to_string(rows)
                                                           + R"(, "torch_dtype": "bfloat16", "tie_word_embeddings": )" + (tied ? "true" : "false") + "}");
        xmerge_test::write_bytes(dir + "/tokenizer.json", tokenizer_json(6, added));
        xmerge_test::write_bytes(dir + "/special_tokens_map.json", R"({"bos_token": "t1"})");
        xmerge_test::write_bytes(dir + "/README.md", "the base's own card\n");
    }

    nlohmann::json read_json(const std::string& path)
    {
        std::ifstream in(path);
        return nlohmann::json::parse(in);
    }

}

TEST_CASE("recipe_job: a union vocabulary, config.json, tokenizer, model card and recipe", "[recipe]")
{
    scratch_dir dir;
    std::vector<std::vector<float>> keep;
    checkpoint(dir / "base", 6, 1, /*tied=*/true, {}, keep);
    checkpoint(dir / "chat", 8, 2, false, {"<s1>", "<s2>"}, keep);
    const std::string text = "merge_method: linear\nbase_model: " + (dir / "base") + "\nmodels:\n  - model: " + (dir / "base") + "\n  - model: " + (dir / "chat")
                             + "\nparameters:\n  weight: 1.0\ntokenizer_source: union\ndtype: float32\n";
    xmerge_test::write_bytes(dir / "r.yml", text);
    const auto& registry = xmerge_test::builtin_registry();
    xmerge::recipe_job job(dir / "r.yml", dir / "out", registry);
    CHECK(job.warnings().empty());
    bool untied_note = false;
    for (const auto& n : job.notes())
    {
        untied_note = untied_note || n.find("tie_word_embeddings set to false") != std::string::npos;
    }
    CHECK(untied_note);
    job.run();

    const auto out = xmerge::model::open(dir / "out");
    REQUIRE(out.contains("lm_head.weight"));
    CHECK(out.at("model.embed_tokens.weight").shape == xmerge::shape_type{8, 2});
    CHECK(out.at("model.embed_tokens.weight").dtype == "F32");
    const auto embed = xmerge_test::float_values(out.at("model.embed_tokens.weight"));
    CHECK(embed[2 * 3] == 0.5f * (10 + 3) + 0.5f * (20 + 3));  // both have token 3
    CHECK(embed[2 * 7] == 27.0f);                               // only chat has <s2>: both rows are chat's
    // The tied base's head is its embedding: its row 0 (10) and chat's head (-2).
    CHECK(xmerge_test::float_values(out.at("lm_head.weight"))[0] == 0.5f * 10 + 0.5f * -2);

    const auto config = read_json(dir / "out/config.json");
    CHECK(config["torch_dtype"] == "float32");
    CHECK(config["vocab_size"] == 8);
    CHECK(config["tie_word_embeddings"] == false);
    const auto tokenizer = xmerge::io::tokenizer_files::open(dir / "out");
    CHECK(tokenizer.size() == 8);
    CHECK(tokenizer.vocabulary().at("<s2>") == 7);
    CHECK(xmerge_test::read_bytes(dir / "out/special_tokens_map.json") == R"({"bos_token": "t1"})");
    CHECK(xmerge_test::read_bytes(dir / "out/mergekit_config.yml") == text);
    const std::string card = xmerge_test::read_bytes(dir / "out/README.md");
    CHECK(card.find("the base's own card") == std::string::npos);
    CHECK(card.find("`linear`") != std::string::npos);
    CHECK(card.find((dir / "chat")) != std::string::npos);
    CHECK(card.find("tokenizer_source: union") != std::string::npos);
    CHECK(card.find("base_model: []") != std::string::npos);  // local paths are not Hub models
}

TEST_CASE("recipe_job: without a merged vocabulary, the reference's files as they are, on request without the tokenizer", "[recipe]")
{
    scratch_dir dir;
    std::vector<std::vector<float>> keep;
    checkpoint(dir / "a", 6, 1, false, {}, keep);
    checkpoint(dir / "b", 6, 2, false, {}, keep);
    const std::string text = "merge_method: passthrough\nmodels:\n  - model: " + (dir / "a") + "\n";
    xmerge_test::write_bytes(dir / "r.yml", text);
    const auto& registry = xmerge_test::builtin_registry();
    xmerge::recipe_job_options o;
    o.copy_tokenizer = false;
    o.model_card = false;
    xmerge::recipe_job(dir / "r.yml", dir / "out", registry, o).run();
    CHECK_FALSE(std::filesystem::exists(dir / "out/tokenizer.json"));
    CHECK_FALSE(std::filesystem::exists(dir / "out/special_tokens_map.json"));
    CHECK(xmerge_test::read_bytes(dir / "out/README.md") == "the base's own card\n");
    // No dtype asked: config.json keeps the reference's.
    CHECK(read_json(dir / "out/config.json")["torch_dtype"] == "bfloat16");
    CHECK(xmerge_test::float_values(xmerge::model::open(dir / "out").at("lm_head.weight"))[0] == -1.0f);

    // Vocabularies of different sizes without tokenizer_source: refused with a hint.
    checkpoint(dir / "c", 8, 3, false, {"<x>", "<y>"}, keep);
    const std::string mixed = "merge_method: linear\nmodels:\n  - model: " + (dir / "a") + "\n  - model: " + (dir / "c") + "\nparameters: {weight: 1}\n";
    xmerge_test::write_bytes(dir / "mixed.yml", mixed);
    CHECK_THROWS_WITH(xmerge::recipe_job(dir / "mixed.yml", dir / "mixed", registry), Catch::Contains("tokenizer_source"));
    // --unsafe-truncate-embeddings: both cut to six rows.
    o = {};
    o.bind.truncate_vocabulary = true;
    xmerge::recipe_job(dir / "mixed.yml", dir / "truncated", registry, o).run();
    CHECK(xmerge::model::open(dir / "truncated").at("lm_head.weight").shape == xmerge::shape_type{6, 2});
    CHECK(read_json(dir / "truncated/config.json")["vocab_size"] == 6);
}

TEST_CASE("model_card: Hub models in the metadata, local paths only in the text", "[recipe]")
{
    const auto r = xmerge::parse_recipe("merge_method: ties\nbase_model: org/base-model\nmodels:\n  - model: org/base-model\n  - model: /local/fine-tune\n"
                                        "  - model: other-org/chat\n",
                                        "r.yml");
    const std::string card = xmerge::model_card(r, "merge_method: ties\n", "merged");
    CHECK(card.rfind("---\nbase_model:\n- org/base-model\n- other-org/chat\n", 0) == 0);
    CHECK(card.find("# merged") != std::string::npos);
    CHECK(card.find("`org/base-model` as the base model") != std::string::npos);
    CHECK(card.find("- `/local/fine-tune`") != std::string::npos);
    CHECK(card.find("```yaml\nmerge_method: ties\n```") != std::string::npos);
    CHECK_FALSE(xmerge::is_hub_id("./models/a"));
    CHECK(xmerge::is_hub_id("meta-llama/Llama-3-8B"));
}
