// Sharded checkpoints: the atomic directory writer, the shard index, and
// models opened from a file, a shard set or memory.

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <xmerge/io/checkpoint_writer.hpp>
#include <xmerge/io/shard_index.hpp>
#include <xmerge/model/model.hpp>

#include "test_io_support.hpp"
#include "test_support.hpp"

using xmerge_test::scratch_dir;

namespace
{
    // Ten F32 tensors of 1000 bytes each (250 elements) plus an I64 one, filled with known values.
    std::vector<xmerge::io::tensor_info> ten_tensors()
    {
        std::vector<xmerge::io::tensor_info> out;
        for (int i = 0; i < 10; ++i)
        {
            out.push_back({"layers." + std::to_string(i) + ".w", "F32", {250}, 0, 0});
        }
        out.push_back({"position_ids", "I64", {5}, 0, 0});
        return out;
    }

    void fill_all(xmerge::io::checkpoint_writer& w, const std::vector<xmerge::io::tensor_info>& layout)
    {
        for (const auto& t : layout)
        {
            if (t.dtype == "F32")
            {
                float* p = w.tensor(t.name).typed_data<float>();
                for (int k = 0; k < 250; ++k)
                {
                    p[k] = static_cast<float>(t.name.size() * 1000 + k);
                }
            }
            else
            {
                const std::int64_t ids[5] = {0, 1, 2, 3, 4};
                w.write(t.name, ids, sizeof ids);
            }
            w.finish(t.name);
        }
    }
}

TEST_CASE("checkpoint_writer: shards by size, writes the index, and reads back as one model", "[io]")
{
    scratch_dir dir;
    const auto layout = ten_tensors();
    xmerge::io::checkpoint_options o;
    o.max_shard_bytes = 3000;  // three 1000-byte tensors per shard
    o.metadata = {{"format", "pt"}};
    xmerge::io::checkpoint_writer w(dir / "out", layout, o);
    CHECK(w.shard_count() == 4);
    CHECK(w.shard_of("layers.0.w") == "model-00001-of-00004.safetensors");
    CHECK(w.shard_of("position_ids") == "model-00004-of-00004.safetensors");
    fill_all(w, layout);
    w.add_file_contents("config.json", "{}");
    w.commit();

    // Only the finished directory exists, no staging leftovers.
    CHECK(dir.entries() == std::vector<std::string>{"out"});
    const auto index = xmerge::io::read_shard_index(dir / "out/model.safetensors.index.json");
    CHECK(index.weight_map.size() == 11);
    CHECK(index.total_size == 10 * 1000 + 40);
    CHECK(index.files().size() == 4);

    const xmerge::model m = xmerge::model::open(dir / "out");
    CHECK(m.size() == 11);
    CHECK(m.files().size() == 4);
    CHECK(m.metadata().at("format") == "pt");
    CHECK(m.total_bytes() == 10040);
    const auto& t = m.at("layers.7.w");
    CHECK(t.ref().typed_data<float>()[249] == static_cast<float>(t.name.size() * 1000 + 249));
    CHECK(t.origin().find("model-00003-of-00004.safetensors") != std::string::npos);
    CHECK_FALSE(m.at("position_ids").is_arithmetic());
    // the same model through the index file itself
    CHECK(xmerge::model::open(dir / "out/model.safetensors.index.json").size() == 11);
    CHECK_THROWS_WITH(m.at("nope"), Catch::Contains("nope") && Catch::Contains("no such tensor"));
}

TEST_CASE("checkpoint_writer: a failure leaves neither the target nor a staging directory", "[io]")
{
    scratch_dir dir;
    const auto layout = ten_tensors();
    {
        xmerge::io::checkpoint_writer w(dir / "out", layout);
        w.tensor("layers.0.w");
        w.finish("layers.0.w");
        CHECK_THROWS_WITH(w.commit(), Catch::Contains("never written"));
    }
    CHECK(dir.entries().empty());
    {
        xmerge::io::checkpoint_writer w(dir / "out", layout);
        // abandoned without commit (as when a merge throws)
    }
    CHECK(dir.entries().empty());
}

TEST_CASE("checkpoint_writer: an existing directory is kept unless overwriting, and replaced only when complete", "[io]")
{
    scratch_dir dir;
    std::filesystem::create_directories(dir / "out");
    xmerge_test::write_bytes(dir / "out/keep.txt", "old");
    const auto layout = ten_tensors();
    CHECK_THROWS_WITH(xmerge::io::checkpoint_writer(dir / "out", layout), Catch::Contains("exists and is not empty"));
    CHECK(xmerge_test::read_bytes(dir / "out/keep.txt") == "old");

    xmerge::io::checkpoint_options o;
    o.overwrite = true;
    {
        xmerge::io::checkpoint_writer w(dir / "out", layout, o);
        // the old directory is untouched while the new one is being written
        CHECK(std::filesystem::exists(dir / "out/keep.txt"));
    }
    CHECK(std::filesystem::exists(dir / "out/keep.txt"));
    xmerge::io::checkpoint_writer w(dir / "out", layout, o);
    fill_all(w, layout);
    w.commit();
    CHECK_FALSE(std::filesystem::exists(dir / "out/keep.txt"));
    CHECK(std::filesystem::exists(dir / "out/model.safetensors"));
    CHECK(dir.entries() == std::vector<std::string>{"out"});

    // an empty directory is simply filled
    std::filesystem::create_directories(dir / "empty");
    xmerge::io::checkpoint_writer e(dir / "empty", layout);
    fill_all(e, layout);
    e.commit();
    CHECK(xmerge::model::open(dir / "empty").size() == 11);
}

TEST_CASE("shard index: inconsistent or unsafe indexes are refused", "[io]")
{
    scratch_dir dir;
    const auto layout = ten_tensors();
    xmerge::io::checkpoint_options o;
    o.max_shard_bytes = 5000;
    xmerge::io::checkpoint_writer w(dir / "ck", layout, o);
    fill_all(w, layout);
    w.commit();
    const std::string index_path = dir / "ck/model.safetensors.index.json";
    const std::string original = xmerge_test::read_bytes(index_path);

    auto with_index = [&](const std::string& text) { xmerge_test::write_bytes(index_path, text); };
    with_index(R"({"weight_map": {"layers.0.w": "../escape.safetensors"}})");
    CHECK_THROWS_WITH(xmerge::model::open(dir / "ck"), Catch::Contains("not a file inside the index's directory"));
    with_index(R"({"weight_map": {"layers.0.w": "/etc/passwd"}})");
    CHECK_THROWS_WITH(xmerge::model::open(dir / "ck"), Catch::Contains("not a file inside"));
    with_index(R"({"weight_map": 3})");
    CHECK_THROWS_WITH(xmerge::model::open(dir / "ck"), Catch::Contains("no \"weight_map\" object"));
    with_index("{not json");
    CHECK_THROWS_WITH(xmerge::model::open(dir / "ck"), Catch::Contains("not valid JSON"));
    with_index(R"({"weight_map": {"layers.0.w": "model-00001-of-00003.safetensors", "ghost": "model-00001-of-00003.safetensors"}})");
    CHECK_THROWS_WITH(xmerge::model::open(dir / "ck"), Catch::Contains("is in this shard but not in the index"));

    // every tensor listed, plus one that is in no shard
    nlohmann::json j = nlohmann::json::parse(original);
    j["weight_map"]["ghost"] = "model-00001-of-00003.safetensors";
    with_index(j.dump());
    CHECK_THROWS_WITH(xmerge::model::open(dir / "ck"), Catch::Contains("ghost") && Catch::Contains("missing from shard"));
    with_index(original);
    CHECK(xmerge::model::open(dir / "ck").size() == 11);
}

TEST_CASE("locate_checkpoint: directories without safetensors say what they hold", "[io]")
{
    scratch_dir dir;
    std::filesystem::create_directories(dir / "bin");
    xmerge_test::write_bytes(dir / "bin/pytorch_model.bin", "x");
    CHECK_THROWS_WITH(xmerge::model::open(dir / "bin"), Catch::Contains("PyTorch pickle weights"));
    std::filesystem::create_directories(dir / "none");
    CHECK_THROWS_WITH(xmerge::model::open(dir / "none"), Catch::Contains("holds no .safetensors file"));
    CHECK_THROWS_WITH(xmerge::model::open(dir / "absent"), Catch::Contains("no such file or directory"));
    // a directory with one oddly named file
    std::filesystem::create_directories(dir / "one");
    const std::vector<float> v = {1, 2};
    xmerge::io::save_safetensors(dir / "one/diffusion_pytorch_model.safetensors", {xmerge::as_tensor(v, "x")});
    CHECK(xmerge::model::open(dir / "one").size() == 1);
}

TEST_CASE("model: in-memory tensors are referenced, checked and named", "[io]")
{
    const std::vector<float> w(6, 2.0f);
    const std::int32_t ids[3] = {1, 2, 3};
    xmerge::model m("mine");
    m.add("w", xmerge::as_tensor(w, {2, 3}, "w"));
    m.add_raw("ids", "I32", {3}, ids);
    CHECK(m.size() == 2);
    CHECK(m.at("w").ref().data() == w.data());
    CHECK(m.at("w").origin() == "memory");
    CHECK(m.total_bytes() == 24 + 12);
    CHECK_THROWS_WITH(m.add("w", xmerge::as_tensor(w)), Catch::Contains("added twice"));
    CHECK_THROWS_WITH(m.add_raw("x", "I33", {1}, ids), Catch::Contains("'I33' is unknown"));
    CHECK_THROWS_WITH(m.at("ids").ref(), Catch::Contains("cannot be used in arithmetic"));
}
