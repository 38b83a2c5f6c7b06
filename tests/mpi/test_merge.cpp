// mpi::run_merge on in-memory models against the one-process run_merge,
// byte for byte, and its refusals and failures.

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <unistd.h>

#include <xmerge/io/checkpoint_writer.hpp>
#include <xmerge/methods/fisher.hpp>
#include <xmerge/methods/linear.hpp>
#include <xmerge/model/merge.hpp>
#include <xmerge/mpi/merge.hpp>

#include "mpi_test_support.hpp"

namespace fs = std::filesystem;
using namespace xmerge_test;

namespace
{
    // A directory every rank uses, made by rank 0.
    std::string shared_directory()
    {
        std::string dir;
        if (rank() == 0)
        {
            dir = (fs::temp_directory_path() / ("xmerge-mpi-test-" + std::to_string(::getpid()))).string();
            fs::remove_all(dir);
            fs::create_directories(dir);
        }
        unsigned long long n = dir.size();
        MPI_Bcast(&n, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
        dir.resize(n);
        MPI_Bcast(&dir[0], static_cast<int>(n), MPI_CHAR, 0, MPI_COMM_WORLD);
        return dir;
    }

    std::string contents(const fs::path& p)
    {
        std::ifstream in(p, std::ios::binary);
        return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    }

    // True when both directories hold the same file names with the same bytes.
    bool same_directory(const fs::path& a, const fs::path& b)
    {
        std::vector<std::string> names_a, names_b;
        for (const auto& e : fs::directory_iterator(a))
        {
            names_a.push_back(e.path().filename().string());
        }
        for (const auto& e : fs::directory_iterator(b))
        {
            names_b.push_back(e.path().filename().string());
        }
        std::sort(names_a.begin(), names_a.end());
        std::sort(names_b.begin(), names_b.end());
        if (names_a != names_b)
        {
            return false;
        }
        for (const auto& n : names_a)
        {
            if (contents(a / n) != contents(b / n))
            {
                return false;
            }
        }
        return true;
    }

    bool has_staging_leftover(const fs::path& dir)
    {
        for (const auto& e : fs::directory_iterator(dir))
        {
            if (e.path().filename().string().find(".partial-") != std::string::npos)
            {
                return true;
            }
        }
        return false;
    }

    // Three models and their "Fisher" tensors (squares of other values), eleven tensors of awkward sizes.
    struct models
    {
        std::vector<param_set> values, fishers;
        std::vector<xmerge::model> weights, fisher_models;

        models()
        {
            for (int m = 0; m < 3; ++m)
            {
                values.push_back(make_params(m, 40, true));
                fishers.push_back(make_params(m + 3, 41, true));
                for (auto& b : fishers.back().bytes)
                {
                    float* f = reinterpret_cast<float*>(b.data());
                    for (std::size_t i = 0; i < b.size() / 4; ++i)
                    {
                        f[i] = f[i] * f[i];
                    }
                }
            }
            weights.resize(3);
            fisher_models.resize(3);
            for (int m = 0; m < 3; ++m)
            {
                for (int copy = 0; copy < 2; ++copy)  // each tensor twice, under two names
                {
                    const auto w = values[static_cast<std::size_t>(m)].crefs();
                    const auto f = fishers[static_cast<std::size_t>(m)].crefs();
                    for (std::size_t k = 1; k < w.size(); ++k)
                    {
                        const std::string name = "layers." + std::to_string(copy) + ".t" + std::to_string(k);
                        weights[static_cast<std::size_t>(m)].add(name, w[k]);
                        fisher_models[static_cast<std::size_t>(m)].add(name, f[k]);
                    }
                }
            }
        }
    };

    xmerge::method_registry registry()
    {
        xmerge::method_registry r;
        r.add(xmerge::linear_method());
        r.add(xmerge::fisher_method());
        return r;
    }
}

TEST_CASE("assign_shards: largest first onto the least loaded rank, deterministic", "[mpi][merge]")
{
    CHECK(xmerge::mpi::assign_shards({5, 1, 4, 3, 3}, 2) == std::vector<int>{0, 1, 1, 1, 0});
    CHECK(xmerge::mpi::assign_shards({5, 1, 4}, 1) == std::vector<int>{0, 0, 0});
    CHECK(xmerge::mpi::assign_shards({2, 2}, 4) == std::vector<int>{0, 1});
    CHECK(xmerge::mpi::assign_shards({}, 3).empty());
}

TEST_CASE("checkpoint_options::written_elsewhere leaves shards to other writers and still indexes them", "[mpi][merge]")
{
    const std::string dir = shared_directory();
    if (rank() == 0)
    {
        std::vector<xmerge::io::tensor_info> layout;
        for (int k = 0; k < 4; ++k)
        {
            layout.push_back({"t" + std::to_string(k), "F32", {100}, 0, 0});
        }
        xmerge::io::checkpoint_options o;
        o.max_shard_bytes = 400;
        o.written_elsewhere = [](std::size_t s) { return s % 2 == 1; };
        xmerge::io::checkpoint_writer w(dir + "/out", layout, o);
        CHECK_THROWS_AS(w.tensor("t1"), xmerge::io_error);
        const auto groups = xmerge::io::shard_layout(layout, o.max_shard_bytes, "test");
        REQUIRE(groups.shards.size() == 4);
        std::vector<float> ones(100, 1.0f);
        for (std::size_t s = 0; s < 4; ++s)
        {
            const std::string name = groups.shards[s][0].name;
            if (s % 2 == 0)
            {
                w.write(name, ones.data(), 400);
                w.finish(name);
            }
            else
            {
                xmerge::io::writer_options wo;
                wo.temporary_name = false;
                xmerge::io::save_safetensors(w.staging_directory() + "/" + xmerge::io::shard_file_name(s + 1, 4), {{groups.shards[s][0], ones.data()}}, {}, wo);
            }
        }
        w.commit();
        const xmerge::model m = xmerge::model::open(dir + "/out");
        CHECK(m.size() == 4);
        fs::remove_all(dir);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

TEST_CASE("mpi::run_merge writes the bytes of run_merge, whatever the number of ranks", "[mpi][merge]")
{
    const std::string dir = shared_directory();
    const models in;
    const xmerge::method_registry methods = registry();
    for (const char* method : {"linear", "fisher"})
    {
        CAPTURE(method);
        xmerge::merge_spec spec;
        spec.method = method;
        for (std::size_t m = 0; m < 3; ++m)
        {
            std::map<std::string, const xmerge::model*> extra;
            if (std::string(method) == "fisher")
            {
                extra["fisher"] = &in.fisher_models[m];
            }
            spec.models.emplace_back(&in.weights[m], std::map<std::string, xmerge::parameter_setting>{{"weight", 0.2 * static_cast<double>(m + 1)}}, extra);
        }
        if (std::string(method) == "fisher")
        {
            spec.parameters["normalize_fisher_weight"] = xmerge::parameter_setting(true);
        }
        xmerge::merge_options o;
        o.threads = 1;
        o.output.max_shard_bytes = 3000;
        o.file_contents = {{"note.txt", "written once, by rank 0"}};
        const xmerge::merge_plan plan = xmerge::plan_merge(spec, methods, o);

        const std::string single = dir + "/single-" + std::to_string(rank()) + "-" + method;
        xmerge::run_merge(plan, methods, single, o);
        const std::string together = dir + "/together-" + method;
        const auto s = xmerge::mpi::run_merge(plan, methods, together, o, MPI_COMM_WORLD);
        CHECK(same_directory(single, together));
        CHECK(s.total.tensors == plan.tensors.size());
        CHECK(s.total.shards > 3);
        std::uintmax_t files = 0;
        for (const auto& e : fs::directory_iterator(together))
        {
            files += fs::file_size(e.path());
        }
        CHECK(s.total.bytes_written == files);
        unsigned long long here = s.here.tensors, sum = 0;
        MPI_Allreduce(&here, &sum, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
        CHECK(sum == plan.tensors.size());
        CHECK((ranks() == 1 || s.shards_here < s.total.shards));
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank() == 0)
    {
        fs::remove_all(dir);
    }
}

TEST_CASE("mpi::run_merge: one rank's failure stops every rank and leaves nothing", "[mpi][merge]")
{
    const std::string dir = shared_directory();
    const models in;
    const xmerge::method_registry methods = registry();
    xmerge::merge_spec spec;
    spec.method = "linear";
    spec.parameters["weight"] = xmerge::parameter_setting(1.0);
    for (std::size_t m = 0; m < 3; ++m)
    {
        spec.models.emplace_back(&in.weights[m]);
    }
    xmerge::merge_options o;
    o.threads = 1;
    o.output.max_shard_bytes = 3000;
    const xmerge::merge_plan plan = xmerge::plan_merge(spec, methods, o);

    SECTION("the last rank throws after its first tensor")
    {
        const int failing = ranks() - 1;
        o.progress = [failing](const xmerge::merge_progress&)
        {
            if (rank() == failing)
            {
                throw std::runtime_error("disk on fire");
            }
        };
        try
        {
            xmerge::mpi::run_merge(plan, methods, dir + "/out", o, MPI_COMM_WORLD);
            FAIL("no exception");
        }
        catch (const xmerge::mpi::error& e)
        {
            CHECK_THAT(e.what(), Catch::Contains("rank " + std::to_string(failing) + " of " + std::to_string(ranks()) + ": disk on fire"));
        }
    }
    SECTION("ranks that planned differently")
    {
        o.seed = static_cast<std::uint64_t>(rank());
        if (ranks() > 1)
        {
            CHECK_THROWS_WITH(xmerge::mpi::run_merge(plan, methods, dir + "/out", o, MPI_COMM_WORLD), Catch::Contains("the plan of rank 1"));
        }
    }
    SECTION("an output that exists and is not empty")
    {
        if (rank() == 0)
        {
            fs::create_directories(dir + "/out");
            std::ofstream(dir + "/out/keep") << "keep";
        }
        MPI_Barrier(MPI_COMM_WORLD);
        CHECK_THROWS_WITH(xmerge::mpi::run_merge(plan, methods, dir + "/out", o, MPI_COMM_WORLD), Catch::Contains("rank 0 of"));
        CHECK(contents(dir + "/out/keep") == "keep");
        MPI_Barrier(MPI_COMM_WORLD);
        if (rank() == 0)
        {
            fs::remove_all(dir + "/out");
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    CHECK(!fs::exists(dir + "/out"));
    CHECK(!has_staging_leftover(dir));
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank() == 0)
    {
        fs::remove_all(dir);
    }
}
