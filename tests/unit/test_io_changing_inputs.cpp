// Inputs that change or are not what they seem: a file that shrinks while
// mapped (no SIGBUS, an error naming file and tensor), a file rewritten or
// replaced during a merge (refused before the output is published), FIFOs
// and other non-regular files (refused without blocking), headers with a
// byte order mark or NUL padding, and headers of very many tensors.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <xmerge/io/safetensors.hpp>
#include <xmerge/io/safetensors_writer.hpp>
#include <xmerge/methods/builtin.hpp>
#include <xmerge/model/merge.hpp>
#include <xmerge/model/model.hpp>

#include "test_io_support.hpp"
#include "registry_support.hpp"

using xmerge_test::scratch_dir;
namespace fs = std::filesystem;
using namespace std::string_literals;

namespace
{
    // A file of `count` F32 tensors "t0", "t1", ... of `n` elements each, every element equal to `value`.
    void write_model(const std::string& path, std::size_t count, std::size_t n, float value)
    {
        std::vector<float> data(n, value);
        std::vector<std::pair<xmerge::io::tensor_info, const void*>> tensors;
        for (std::size_t i = 0; i < count; ++i)
        {
            tensors.push_back({{"t" + std::to_string(i), "F32", {n}, 0, 0}, data.data()});
        }
        xmerge::io::save_safetensors(path, tensors);
    }

    double sum_bytes(const std::uint8_t* p, std::size_t n)
    {
        double s = 0.0;
        for (std::size_t i = 0; i < n; ++i)
        {
            s += p[i];
        }
        return s;
    }

    // Writes the bytes of a fresh model into the existing file (same inode), as an in-place rewrite does.
    void rewrite_in_place(const std::string& path, std::size_t count, std::size_t n, float value)
    {
        write_model(path + ".new", count, n, value);
        const std::string bytes = xmerge_test::read_bytes(path + ".new");
        fs::remove(path + ".new");
        std::fstream out(path, std::ios::binary | std::ios::in | std::ios::out);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }

    // Past the coarse timestamp granularity, so a rewrite gets a new modification time.
    void let_clock_tick() { std::this_thread::sleep_for(std::chrono::milliseconds(30)); }
}

TEST_CASE("safetensors_file: a file truncated while mapped gives an error naming it and the tensor, not SIGBUS", "[io][changing]")
{
    scratch_dir dir;
    const std::string path = dir / "model.safetensors";
    write_model(path, 4, 1 << 18, 1.0f);  // 4 tensors of 1 MiB
    const xmerge::io::safetensors_file f(path);
    CHECK_NOTHROW(f.check_unchanged());
    REQUIRE(::truncate(path.c_str(), 4096) == 0);  // as `cp` over it or a new download does first

    // Every byte of the last tensor is now past the end of the file: reading it used to kill the process.
    const auto& t = f.info("t3");
    CHECK(sum_bytes(f.raw("t3"), t.bytes()) >= 0.0);
    CHECK_THROWS_WITH(f.check_unchanged(false), Catch::Contains(path) && Catch::Contains("'t3'") && Catch::Contains("shrank"));
    CHECK_THROWS_WITH(f.check_unchanged(), Catch::Contains("shrank"));
}

TEST_CASE("safetensors_file: rewritten in place or replaced since opened is detected", "[io][changing]")
{
    scratch_dir dir;
    const std::string path = dir / "model.safetensors";
    write_model(path, 2, 1000, 1.0f);
    {
        const xmerge::io::safetensors_file f(path);
        let_clock_tick();
        rewrite_in_place(path, 2, 1000, 2.0f);  // same size, same inode, other bytes
        CHECK_THROWS_WITH(f.check_unchanged(), Catch::Contains(path) && Catch::Contains("was modified") && Catch::Contains("two versions"));
        CHECK_NOTHROW(f.check_unchanged(false));  // nothing was read past an end
    }
    {
        const xmerge::io::safetensors_file f(path);
        write_model(dir / "new.safetensors", 2, 1000, 3.0f);
        fs::rename(dir / "new.safetensors", path);
        CHECK_THROWS_WITH(f.check_unchanged(), Catch::Contains("was replaced by another file"));
    }
    {
        const xmerge::io::safetensors_file f(path);
        rewrite_in_place(path, 3, 1000, 3.0f);
        CHECK_THROWS_WITH(f.check_unchanged(), Catch::Contains("changed size"));
    }
}

TEST_CASE("run_merge: an input that shrinks or changes during the merge fails it, and nothing is published", "[io][changing]")
{
    scratch_dir dir;
    for (const char* name : {"base", "a", "b"})
    {
        fs::create_directories(dir / name);
    }
    const std::size_t n = 1 << 16;
    write_model(dir / "base/model.safetensors", 6, n, 1.0f);
    write_model(dir / "a/model.safetensors", 6, n, 2.0f);
    write_model(dir / "b/model.safetensors", 6, n, 3.0f);
    const auto& registry = xmerge_test::builtin_registry();

    auto merge_while = [&](const std::string& out, const std::function<void()>& change)
    {
        const auto base = xmerge::model::open(dir / "base");
        const auto a = xmerge::model::open(dir / "a");
        const auto b = xmerge::model::open(dir / "b");
        xmerge::merge_spec spec;
        spec.method = "task_arithmetic";
        spec.base = &base;
        spec.models.push_back({&a, {{"weight", 1.0}}, {}, {}});
        spec.models.push_back({&b, {{"weight", 1.0}}, {}, {}});
        const auto plan = xmerge::plan_merge(spec, registry);
        xmerge::merge_options o;
        o.threads = 2;
        bool changed = false;
        o.progress = [&](const xmerge::merge_progress& p)
        {
            if (p.done == 2 && !changed)
            {
                changed = true;
                change();
            }
        };
        xmerge::run_merge(plan, registry, out, o);
    };

    // Truncated after two tensors: the third read finds the file short.
    CHECK_THROWS_WITH(merge_while(dir / "out1", [&] { REQUIRE(::truncate((dir / "a/model.safetensors").c_str(), 100) == 0); }),
                      Catch::Contains("a/model.safetensors") && Catch::Contains("'t") && Catch::Contains("shrank"));
    CHECK_FALSE(fs::exists(dir / "out1"));

    // Rewritten in place with the same size: every read succeeds, the check before publishing refuses.
    write_model(dir / "a/model.safetensors", 6, n, 2.0f);
    CHECK_THROWS_WITH(merge_while(dir / "out2",
                                  [&]
                                  {
                                      let_clock_tick();
                                      rewrite_in_place(dir / "b/model.safetensors", 6, n, 4.0f);
                                  }),
                      Catch::Contains("b/model.safetensors") && Catch::Contains("was modified"));
    CHECK_FALSE(fs::exists(dir / "out2"));

    // Untouched: the same merge succeeds.
    merge_while(dir / "out3", [] {});
    CHECK(xmerge::model::open(dir / "out3").size() == 6);
    std::vector<std::string> left;
    for (const auto& e : fs::directory_iterator(dir.path()))
    {
        left.push_back(e.path().filename().string());
    }
    std::sort(left.begin(), left.end());
    CHECK(left == std::vector<std::string>{"a", "b", "base", "out3"});
}

TEST_CASE("non-regular files named like checkpoints are refused at once, without blocking", "[io][changing]")
{
    scratch_dir dir;
    REQUIRE(::mkfifo((dir / "model.safetensors").c_str(), 0600) == 0);
    CHECK_THROWS_WITH(xmerge::io::safetensors_file(dir / "model.safetensors"), Catch::Contains("is a FIFO, not a regular file"));
    CHECK_THROWS_WITH(xmerge::model::open(dir / "model.safetensors"), Catch::Contains("FIFO"));
    CHECK_THROWS_WITH(xmerge::model::open(dir.path().string()), Catch::Contains("FIFO"));
    fs::remove(dir / "model.safetensors");
    REQUIRE(::mkfifo((dir / "model.safetensors.index.json").c_str(), 0600) == 0);
    CHECK_THROWS_WITH(xmerge::model::open(dir / "model.safetensors.index.json"), Catch::Contains("FIFO"));
    CHECK_THROWS_WITH(xmerge::io::safetensors_file("/dev/null"), Catch::Contains("is a device, not a regular file"));
}

TEST_CASE("parse_header: a byte order mark, leading bytes or NUL padding are refused as the reference does", "[io][changing]")
{
    const std::string entry = R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
    const std::string data(4, '\0');
    auto parse = [](const std::string& image)
    { return xmerge::io::parse_header(reinterpret_cast<const std::uint8_t*>(image.data()), image.size(), "x.safetensors"); };
    CHECK(parse(xmerge_test::safetensors_image(entry, data)).tensors.size() == 1);
    CHECK(parse(xmerge_test::safetensors_image(entry + "    ", data)).tensors.size() == 1);  // space padding is fine
    CHECK_THROWS_WITH(parse(xmerge_test::safetensors_image("\xEF\xBB\xBF" + entry, data)), Catch::Contains("byte order mark"));
    CHECK_THROWS_WITH(parse(xmerge_test::safetensors_image(" " + entry, data)), Catch::Contains("starts with whitespace"));
    CHECK_THROWS_WITH(parse(xmerge_test::safetensors_image(entry + std::string(4, '\0'), data)), Catch::Contains("NUL byte"));
    CHECK_THROWS_WITH(parse(xmerge_test::safetensors_image(entry + " \0 "s, data)), Catch::Contains("NUL byte"));
}

TEST_CASE("parse_header: 100 000 tensors parse in linear time and keep their order", "[io][changing]")
{
    // Zero-size tensors all start at offset 0: their order is the header's.
    const std::size_t count = 100000;
    std::string header = "{";
    for (std::size_t i = 0; i < count; ++i)
    {
        header += (i ? "," : "") + std::string("\"z") + std::to_string(count - i) + R"(":{"dtype":"F32","shape":[0],"data_offsets":[0,0]})";
    }
    header += R"(,"__metadata__":{"format":"pt"}})";
    const std::string image = xmerge_test::safetensors_image(header, "");
    const auto h = xmerge::io::parse_header(reinterpret_cast<const std::uint8_t*>(image.data()), image.size(), "many.safetensors");
    REQUIRE(h.tensors.size() == count);
    CHECK(h.tensors.front().name == "z100000");
    CHECK(h.tensors.back().name == "z1");
    CHECK(h.metadata.at("format") == "pt");
    // A repeat among them is still found.
    const std::string repeated = xmerge_test::safetensors_image(header.substr(0, header.size() - 1) + R"(,"z5":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})", "");
    CHECK_THROWS_WITH(xmerge::io::parse_header(reinterpret_cast<const std::uint8_t*>(repeated.data()), repeated.size(), "many.safetensors"),
                      Catch::Contains("'z5'") && Catch::Contains("appears twice"));
}
