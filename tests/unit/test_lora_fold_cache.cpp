// The cache behind MODEL+ADAPTER references: one fold per pair, reused while
// the inputs are unchanged, refolded when they change, temporary caches
// removed, and a failed fold leaving nothing in the cache.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <xmerge/lora/fold_cache.hpp>

#include "test_io_support.hpp"

using namespace xmerge;

namespace
{
    const std::string lora_data = std::string(XMERGE_TEST_DATA_DIR) + "/lora/";

    /// Largest absolute difference between two checkpoints' tensors of the same names.
    double max_difference(const model& a, const model& b)
    {
        double worst = 0.0;
        for (const auto& t : a.tensors())
        {
            const auto& u = b.at(t.name);
            REQUIRE(u.shape == t.shape);
            const auto x = xmerge_test::float_values(t);
            const auto y = xmerge_test::float_values(u);
            for (std::size_t i = 0; i < x.size(); ++i)
            {
                worst = std::max(worst, static_cast<double>(std::fabs(x[i] - y[i])));
            }
        }
        return worst;
    }
}

TEST_CASE("fold_cache folds each model and adapter pair once and reuses it", "[lora][fold_cache]")
{
    xmerge_test::scratch_dir dir;
    const std::string cache_dir = dir / "cache";
    std::string first;
    {
        lora::fold_cache cache(cache_dir, false);
        first = cache.folded(lora_data + "base_llama", lora_data + "lora");
        CHECK(cache.folded(lora_data + "base_llama", lora_data + "lora") == first);
        CHECK(cache.folds() == 1);
        const std::string other = cache.folded(lora_data + "base_llama", lora_data + "dora");
        CHECK(other != first);
        CHECK(cache.folds() == 2);
        CHECK(max_difference(model::open(first), model::open(lora_data + "lora/expected.safetensors")) < 1e-5);
    }
    // A named cache outlives its object; another one finds the fold.
    REQUIRE(std::filesystem::exists(first));
    lora::fold_cache again(cache_dir, false);
    CHECK(again.folded(lora_data + "base_llama", lora_data + "lora") == first);
    CHECK(again.folds() == 0);
}

TEST_CASE("fold_cache folds again when an input changes", "[lora][fold_cache]")
{
    xmerge_test::scratch_dir dir;
    const std::string adapter = dir / "adapter";
    std::filesystem::copy(lora_data + "lora", adapter);
    lora::fold_cache cache(dir / "cache", false);
    const std::string before = cache.folded(lora_data + "base_llama", adapter);
    const std::string weights = adapter + "/adapter_model.safetensors";
    std::filesystem::last_write_time(weights, std::filesystem::last_write_time(weights) + std::chrono::seconds(5));

    lora::fold_cache later(dir / "cache", false);
    const std::string after = later.folded(lora_data + "base_llama", adapter);
    CHECK(after != before);
    CHECK(later.folds() == 1);
}

TEST_CASE("a temporary fold_cache is removed with its object and must be new", "[lora][fold_cache]")
{
    xmerge_test::scratch_dir dir;
    const std::string cache_dir = dir / "tmp";
    {
        lora::fold_cache cache(cache_dir, true);
        const std::string folded = cache.folded(lora_data + "base_llama", lora_data + "lora");
        CHECK(std::filesystem::exists(folded));
    }
    CHECK_FALSE(std::filesystem::exists(cache_dir));
    std::filesystem::create_directories(cache_dir);
    CHECK_THROWS_AS(lora::fold_cache(cache_dir, true), io_error);
}

TEST_CASE("fold_cache folds to the chosen dtype, and a misfit leaves no entry", "[lora][fold_cache]")
{
    xmerge_test::scratch_dir dir;
    lora::fold_cache_options o;
    o.out_dtype = dtype::bfloat16;
    lora::fold_cache cache(dir / "cache", false, o);
    const model folded = model::open(cache.folded(lora_data + "base_llama", lora_data + "lora"));
    for (const auto& t : folded.tensors())
    {
        CHECK(t.dtype == "BF16");
    }

    try
    {
        cache.folded(lora_data + "base_gpt2", lora_data + "lora");
        FAIL("an adapter of another model was folded");
    }
    catch (const io_error& e)
    {
        CHECK(std::string(e.what()).find("lora") != std::string::npos);
    }
    std::size_t entries = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir / "cache"))
    {
        entries += e.path().filename().string()[0] != '.';
    }
    CHECK(entries == 1);
    CHECK(cache.folds() == 1);
}
