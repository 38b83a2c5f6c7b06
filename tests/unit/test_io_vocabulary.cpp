// Merged vocabularies: tokenizer files, the layout of token rows on an output
// vocabulary with mergekit's rules for missing tokens, building the output
// tokenizer (union, base, a model), and config.json edits.

#include <cstring>
#include <map>
#include <filesystem>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <xmerge/io/model_config.hpp>
#include <xmerge/io/tokenizer.hpp>
#include <xmerge/model/vocabulary.hpp>
#include <xmerge/recipe/vocabulary_merge.hpp>

#include "test_io_support.hpp"

using xmerge_test::scratch_dir;

namespace
{
    // A model with one token-indexed tensor: row r holds {100 * tag + r, -(100 * tag + r)}.
    struct embedding_model
    {
        std::vector<float> values;
        xmerge::model m;

        embedding_model(const std::string& name, std::size_t rows, float tag) : m(name)
        {
            for (std::size_t r = 0; r < rows; ++r)
            {
                values.push_back(100 * tag + static_cast<float>(r));
                values.push_back(-(100 * tag + static_cast<float>(r)));
            }
            m.add("model.embed_tokens.weight", xmerge::as_tensor(values, {rows, 2}, "embed"));
        }
    };

    std::vector<float> row(const xmerge::model_tensor& t, std::size_t r)
    {
        const float* p = reinterpret_cast<const float*>(t.data) + 2 * r;
        return {p[0], p[1]};
    }

    // tokenizer.json of a BPE model with tokens t0..t{n-1} and the given added tokens (appended with the next ids).
    std::string tokenizer_json(std::size_t n, const std::vector<std::string>& added, bool special = false)
    {
        nlohmann::json j;
        j["version"] = "1.0";
        j["model"]["type"] = "BPE";
        for (std::size_t i = 0; i < n; ++i)
        {
            j["model"]["vocab"]["t" + std::to_string(i)] = i;
        }
        j["model"]["merges"] = nlohmann::json::array({"t0 t1", "t1 t" + std::to_string(n - 1)});
        j["added_tokens"] = nlohmann::json::array();
        for (std::size_t k = 0; k < added.size(); ++k)
        {
            j["added_tokens"].push_back({{"id", n + k}, {"content", added[k]}, {"special", special}, {"normalized", !special}});
        }
        return j.dump();
    }

    // A checkpoint directory: config.json with vocab_size, a tokenizer, and a `rows` x 2 embedding.
    std::string checkpoint(const scratch_dir& dir, const std::string& name, std::size_t rows, const std::string& tokenizer)
    {
        const std::filesystem::path p = dir.path() / name;
        std::filesystem::create_directories(p);
        std::string data(rows * 2 * sizeof(float), '\0');
        const std::string header = R"({"model.embed_tokens.weight":{"dtype":"F32","shape":[)" + std::to_string(rows) + R"(,2],"data_offsets":[0,)"
                                   + std::to_string(data.size()) + "]}}";
        xmerge_test::write_bytes((p / "model.safetensors").string(), xmerge_test::safetensors_image(header, data));
        xmerge_test::write_bytes((p / "config.json").string(), R"({"model_type": "llama", "vocab_size": )" + std::to_string(rows) + "}");
        if (!tokenizer.empty())
        {
            xmerge_test::write_bytes((p / "tokenizer.json").string(), tokenizer);
        }
        return p.string();
    }
}

TEST_CASE("aligned_inputs: own rows, then the one model having the token, the base, the mean, zeros", "[io][vocabulary]")
{
    embedding_model base("base", 4, 1), a("a", 5, 2), b("b", 5, 3);
    xmerge::vocabulary_alignment v;
    v.tokens = 7;
    v.rows = 8;  // padded
    v.base = &base.m;
    v.order = {&a.m, &b.m, &base.m};
    // token:       0  1  2   3   4   5   6
    v.rows_of[&base.m] = {0, 1, 2, 3, -1, -1, -1};
    v.rows_of[&a.m] = {0, 1, 2, -1, 4, 3, -1};
    v.rows_of[&b.m] = {0, 1, 2, 3, -1, 4, -1};
    const auto& e = [](const embedding_model& x) { return &x.m.at("model.embed_tokens.weight"); };
    const xmerge::aligned_inputs in(v, "model.embed_tokens.weight", {{&base.m, e(base)}, {&a.m, e(a)}, {&b.m, e(b)}});
    REQUIRE(in.size() == 3);
    CHECK(in[0].shape == xmerge::shape_type{8, 2});
    CHECK(in[0].dtype == "F32");
    // Tokens every model has: their own rows.
    CHECK(row(in[1], 2) == std::vector<float>{202, -202});
    // Token 3: a lacks it, the base has it.
    CHECK(row(in[1], 3) == std::vector<float>{103, -103});
    CHECK(row(in[2], 3) == std::vector<float>{303, -303});
    // Token 4: only a has it (its row 4).
    CHECK(row(in[0], 4) == std::vector<float>{204, -204});
    CHECK(row(in[2], 4) == std::vector<float>{204, -204});
    // Token 5: a and b have it, not the base: their mean, for the base.
    CHECK(row(in[0], 5) == std::vector<float>{(203.0f + 304.0f) / 2, -(203.0f + 304.0f) / 2});
    CHECK(row(in[1], 5) == std::vector<float>{203, -203});
    // Token 6: nobody has it.
    CHECK(row(in[0], 6) == std::vector<float>{0, 0});
    // The padding row: the mean of the seven token rows.
    float mean = 0;
    for (std::size_t t = 0; t < 7; ++t)
    {
        mean += row(in[2], t)[0];
    }
    CHECK(row(in[2], 7)[0] == Approx(mean / 7));

    // A rule for token 1, forced: every model takes b's row 4; unforced it only fills gaps.
    v.configured[1] = {xmerge::token_fill::kind::row, &b.m, 4, true};
    v.configured[6] = {xmerge::token_fill::kind::model, &a.m, -1, false};
    v.rows_of[&a.m][6] = 0;
    const xmerge::aligned_inputs forced(v, "model.embed_tokens.weight", {{&base.m, e(base)}, {&a.m, e(a)}, {&b.m, e(b)}});
    CHECK(row(forced[0], 1) == std::vector<float>{304, -304});
    CHECK(row(forced[1], 1) == std::vector<float>{304, -304});
    CHECK(row(forced[0], 6) == std::vector<float>{200, -200});
    CHECK(row(forced[1], 6) == std::vector<float>{200, -200});

    // Rows of another width: refused, naming the model.
    const std::vector<float> three(12, 1.0f);
    xmerge::model wide("wide");
    wide.add("model.embed_tokens.weight", xmerge::as_tensor(three, {4, 3}, "embed"));
    v.rows_of[&wide] = v.rows_of[&base.m];
    CHECK_THROWS_WITH(xmerge::aligned_inputs(v, "model.embed_tokens.weight", {{&base.m, e(base)}, {&wide, &wide.at("model.embed_tokens.weight")}}),
                      Catch::Contains("'wide'"));
}

TEST_CASE("tokenizer_files: vocabulary, added tokens, truncation and new tokens", "[io][vocabulary]")
{
    scratch_dir dir;
    CHECK_FALSE(xmerge::io::tokenizer_files::present(dir.path().string()));
    CHECK_THROWS_WITH(xmerge::io::tokenizer_files::open(dir.path().string()), Catch::Contains("tokenizer.json"));
    xmerge_test::write_bytes(dir / "tokenizer.json", tokenizer_json(6, {"<a>", "<b>"}, true));
    xmerge_test::write_bytes(dir / "tokenizer_config.json", R"({"model_max_length": 8, "added_tokens_decoder": {"6": {"content": "<a>"}, "7": {"content": "<b>"}}})");
    auto t = xmerge::io::tokenizer_files::open(dir.path().string());
    CHECK(t.size() == 8);
    CHECK(t.vocabulary().at("<b>") == 7);
    CHECK(t.added_tokens().at(6)["content"] == "<a>");

    // Tokens past the embedding rows go, with the merges using them.
    t.truncate(5);
    CHECK(t.size() == 5);
    CHECK_FALSE(t.contains("t5"));
    CHECK(t.added_tokens().empty());
    const auto files = t.serialize();
    REQUIRE(files.size() == 2);
    const auto json = nlohmann::json::parse(files[0].second);
    CHECK(json["model"]["merges"].size() == 1);
    CHECK(nlohmann::json::parse(files[1].second)["added_tokens_decoder"].empty());

    // New tokens take the next ids; one already there is left alone.
    t.add({{"content", "<|im_start|>"}, {"special", false}});
    t.add({{"content", "t1"}});
    CHECK(t.vocabulary().at("<|im_start|>") == 5);
    CHECK(t.vocabulary().at("t1") == 1);
    const auto round_trip = nlohmann::json::parse(t.serialize()[0].second);
    CHECK(round_trip["added_tokens"].back()["id"] == 5);
    CHECK(round_trip["added_tokens"].back()["normalized"] == true);

    // Only BPE files can drop tokens.
    xmerge_test::write_bytes(dir / "tokenizer.json", R"({"model": {"type": "Unigram", "vocab": [["a", 0.0], ["b", -1.0], ["c", -2.0]]}})");
    auto unigram = xmerge::io::tokenizer_files::open(dir.path().string());
    CHECK(unigram.vocabulary().at("c") == 2);
    CHECK_THROWS_WITH(unigram.truncate(2), Catch::Contains("BPE"));
}

TEST_CASE("merge_vocabularies: union, base and a model's tokenizer, rows laid out as mergekit does", "[io][vocabulary]")
{
    scratch_dir dir;
    const auto base = xmerge::model::open(checkpoint(dir, "base", 6, tokenizer_json(6, {})));
    const auto chat = xmerge::model::open(checkpoint(dir, "chat", 8, tokenizer_json(6, {"<s1>", "<s2>"})));
    // Lists a token past its six rows: unused padding.
    const auto padded = xmerge::model::open(checkpoint(dir, "padded", 6, tokenizer_json(6, {"<pad0>"})));
    const auto bare = xmerge::model::open(checkpoint(dir, "bare", 6, ""));
    std::map<std::string, const xmerge::model*> by_path = {{"chat", &chat}};
    auto open = [&](const std::string& path, const std::string&) { return by_path.at(path); };
    const std::vector<const xmerge::model*> models = {&base, &padded, &chat, &bare};

    xmerge::recipe_tokenizer config;
    config.source = "union";
    const auto u = xmerge::merge_vocabularies(config, &base, models, open);
    CHECK(u.tokenizer.size() == 8);
    CHECK(u.tokenizer.vocabulary().at("<s2>") == 7);
    CHECK_FALSE(u.tokenizer.contains("<pad0>"));
    CHECK(u.alignment->tokens == 8);
    CHECK(u.alignment->rows_of.at(&chat) == std::vector<std::int64_t>{0, 1, 2, 3, 4, 5, 6, 7});
    CHECK(u.alignment->rows_of.at(&base) == std::vector<std::int64_t>{0, 1, 2, 3, 4, 5, -1, -1});
    CHECK(u.alignment->rows_of.at(&bare) == std::vector<std::int64_t>{0, 1, 2, 3, 4, 5, -1, -1});
    REQUIRE(u.notes.size() == 1);
    CHECK_THAT(u.notes[0], Catch::Contains("bare") && Catch::Contains("base's"));

    config.source = "base";
    config.pad_to_multiple_of = 4;
    const auto b = xmerge::merge_vocabularies(config, &base, models, open);
    CHECK(b.tokenizer.size() == 6);
    CHECK(b.alignment->rows == 8);
    CHECK(b.alignment->rows_of.at(&chat)[5] == 5);

    config = {};
    config.source = "chat";
    config.tokens["<new>"] = {xmerge::recipe_token::kind::zero, "", std::nullopt, "", true};
    const auto c = xmerge::merge_vocabularies(config, &base, models, open);
    CHECK(c.tokenizer.size() == 9);
    CHECK(c.alignment->configured.at(8).what == xmerge::token_fill::kind::zero);
    CHECK(c.alignment->configured.at(8).force);

    // A vocabulary that differs beyond added tokens: refused, naming the model and a token.
    nlohmann::json j = nlohmann::json::parse(tokenizer_json(6, {}));
    j["model"]["vocab"].erase("t5");
    j["model"]["vocab"]["zz"] = 5;
    const auto different = xmerge::model::open(checkpoint(dir, "other", 6, j.dump()));
    config = {};
    CHECK_THROWS_WITH(xmerge::merge_vocabularies(config, &base, {&base, &different}, open), Catch::Contains("'zz'") && Catch::Contains("other"));
}

TEST_CASE("model_config: dtype, layer count, vocabulary size and tying, other keys kept in order", "[io][vocabulary]")
{
    scratch_dir dir;
    xmerge_test::write_bytes(dir / "modern.json", R"({"b": 1, "dtype": "bfloat16", "num_hidden_layers": 2, "a": 2, "tie_word_embeddings": true})");
    auto modern = xmerge::io::model_config::open(dir / "modern.json");
    modern.set_dtype(xmerge::dtype::float32);
    modern.set_layer_count(5);
    modern.set_tied_embeddings(false);
    CHECK(modern.json()["dtype"] == "float32");
    CHECK_FALSE(modern.json().contains("torch_dtype"));
    CHECK(modern.json()["num_hidden_layers"] == 5);
    CHECK(modern.tied_embeddings() == false);
    CHECK(modern.dump().find("\"b\"") < modern.dump().find("\"a\""));

    xmerge_test::write_bytes(dir / "legacy.json", R"({"torch_dtype": "float16", "n_layer": 12})");
    auto legacy = xmerge::io::model_config::open(dir / "legacy.json");
    legacy.set_dtype(xmerge::dtype::bfloat16);
    legacy.set_layer_count(24);
    CHECK(legacy.json()["torch_dtype"] == "bfloat16");
    CHECK(legacy.json()["n_layer"] == 24);
    CHECK_FALSE(legacy.vocab_size());

    xmerge_test::write_bytes(dir / "vlm.json", R"({"model_type": "llava", "text_config": {"vocab_size": 64, "num_hidden_layers": 2}})");
    auto vlm = xmerge::io::model_config::open(dir / "vlm.json");
    CHECK(vlm.vocab_size() == 64u);
    vlm.set_vocab_size(66);
    vlm.set_dtype(xmerge::dtype::float32);
    CHECK(vlm.json()["text_config"]["vocab_size"] == 66);
    CHECK(vlm.json()["torch_dtype"] == "float32");

    xmerge_test::write_bytes(dir / "broken.json", "[1, 2");
    CHECK_THROWS_WITH(xmerge::io::model_config::open(dir / "broken.json"), Catch::Contains("broken.json"));
}
