// Post-hoc EMA snapshots written as checkpoints and reconstructed from them.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "test_io_support.hpp"
#include "test_support.hpp"
#include "xmerge/online/posthoc_ema_files.hpp"

using namespace xmerge;
using xmerge_test::scratch_dir;

TEST_CASE("post-hoc EMA from snapshot checkpoints matches the in-memory reconstruction", "[io][posthoc_ema]")
{
    scratch_dir dir;
    const std::vector<std::size_t> sizes = {1, 33, 1000};
    std::vector<std::vector<float>> a, b;
    for (std::size_t n : sizes)
    {
        a.emplace_back(n);
        b.emplace_back(n);
    }
    std::vector<tensor_ref> ra, rb;
    for (std::size_t k = 0; k < sizes.size(); ++k)
    {
        ra.push_back(as_tensor(a[k], "layer." + std::to_string(k)));
        rb.push_back(as_tensor(b[k], "layer." + std::to_string(k)));
    }
    power_ema tracker({ra, rb});
    posthoc_ema memory;
    std::vector<std::string> files;
    for (std::size_t t = 1; t <= 300; ++t)
    {
        std::vector<std::vector<float>> x;
        std::vector<const_tensor_ref> refs;
        for (std::size_t k = 0; k < sizes.size(); ++k)
        {
            x.push_back(xmerge_test::random_floats(sizes[k], static_cast<std::uint32_t>(t * 10 + k)));
        }
        for (std::size_t k = 0; k < sizes.size(); ++k)
        {
            refs.push_back(as_tensor(x[k], "layer." + std::to_string(k)));
        }
        tracker.update(refs);
        if (t % 50 == 0)
        {
            memory.add(tracker);
            for (const auto& p : save_ema_snapshots(dir / "snapshot", tracker))
            {
                files.push_back(p);
            }
        }
    }
    REQUIRE(files.size() == 12);
    const ema_profile p = ema_snapshot_profile(model::open(files[3]));
    CHECK(p.time == 100.0);
    CHECK(p.sigma_rel == 0.10);

    for (double sigma : {0.05, 0.07, 0.12})
    {
        posthoc_ema_options options;
        options.threads = 2;
        const std::string out = dir / ("phema-" + std::to_string(sigma));
        const auto x = reconstruct_ema_checkpoint(files, sigma, out, options);
        CHECK(x == posthoc_ema_coefficients(memory.profiles(), {sigma, 300.0}));
        std::vector<std::vector<float>> expect;
        std::vector<tensor_ref> outs;
        for (std::size_t n : sizes)
        {
            expect.emplace_back(n);
        }
        for (auto& e : expect)
        {
            outs.push_back(as_tensor(e));
        }
        memory.reconstruct(sigma, outs);
        const model m = model::open(out);
        CHECK(ema_snapshot_profile(m).sigma_rel == sigma);
        for (std::size_t k = 0; k < sizes.size(); ++k)
        {
            const float* got = m.at("layer." + std::to_string(k)).ref().typed_data<float>();
            for (std::size_t i = 0; i < sizes[k]; ++i)
            {
                REQUIRE(got[i] == expect[k][i]);
            }
        }
    }

    SECTION("mismatched or foreign checkpoints are refused before anything is written")
    {
        std::vector<float> other(5);
        save_ema_snapshot(dir / "other", {0.05, 400.0}, {as_tensor(other, "layer.0")});
        auto with_other = files;
        with_other.push_back(dir / "other");
        CHECK_THROWS_AS(reconstruct_ema_checkpoint(with_other, 0.08, dir / "bad"), io_error);
        io::save_safetensors(dir / "plain.safetensors", {as_tensor(other, "layer.0")});
        CHECK_THROWS_AS(ema_snapshot_profile(model::open(dir / "plain.safetensors")), io_error);
        CHECK_THROWS_AS(save_ema_snapshot(dir / "unnamed", {0.05, 1.0}, {as_tensor(other)}), parameter_error);
        CHECK_FALSE(std::filesystem::exists(dir / "bad"));
        CHECK_FALSE(std::filesystem::exists(dir / "unnamed"));
    }
}
