// safetensors reading and writing: every dtype, metadata, validation of
// malformed headers, alignment, and the single-file writer's atomicity.

#include <cstring>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <xmerge/io/safetensors.hpp>
#include <xmerge/io/safetensors_writer.hpp>

#include "test_io_support.hpp"
#include "test_support.hpp"

using xmerge_test::safetensors_image;
using xmerge_test::scratch_dir;

namespace
{
    std::string parse_error(const std::string& image)
    {
        try
        {
            xmerge::io::parse_header(reinterpret_cast<const std::uint8_t*>(image.data()), image.size(), "bad.safetensors");
        }
        catch (const xmerge::io_error& e)
        {
            CHECK(e.file() == "bad.safetensors");
            return e.what();
        }
        return "no error";
    }
}

TEST_CASE("safetensors: every dtype round-trips byte for byte with metadata", "[io]")
{
    scratch_dir dir;
    const std::vector<std::pair<std::string, std::size_t>> dtypes = {
        {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"F8_E8M0", 1}, {"I16", 2}, {"U16", 2},  {"F16", 2},  {"BF16", 2},
        {"I32", 4},  {"U32", 4}, {"F32", 4}, {"F64", 8},     {"I64", 8},     {"U64", 8},     {"C64", 8}, {"F4", 0},   {"F6_E2M3", 0}};
    std::vector<std::vector<std::uint8_t>> storage;
    std::vector<std::pair<xmerge::io::tensor_info, const void*>> tensors;
    for (std::size_t i = 0; i < dtypes.size(); ++i)
    {
        xmerge::io::tensor_info info;
        info.name = "t." + dtypes[i].first;
        info.dtype = dtypes[i].first;
        info.shape = {3, 4};  // 12 elements: whole bytes for 4- and 6-bit types too
        std::size_t bytes = 0;
        REQUIRE(xmerge::io::storage_bytes(info.dtype, 12, bytes));
        if (dtypes[i].second)
        {
            CHECK(bytes == 12 * dtypes[i].second);
        }
        std::vector<std::uint8_t> data(bytes);
        for (std::size_t b = 0; b < bytes; ++b)
        {
            data[b] = static_cast<std::uint8_t>(b * 7 + i);
        }
        storage.push_back(std::move(data));
        tensors.emplace_back(info, nullptr);
    }
    for (std::size_t i = 0; i < tensors.size(); ++i)
    {
        tensors[i].second = storage[i].data();
    }
    const std::string path = dir / "all.safetensors";
    xmerge::io::save_safetensors(path, tensors, {{"format", "pt"}, {"note", "ünïcode"}});

    const xmerge::io::safetensors_file f(path);
    CHECK(f.metadata().at("format") == "pt");
    CHECK(f.metadata().at("note") == "ünïcode");
    REQUIRE(f.tensors().size() == dtypes.size());
    CHECK(f.data_offset() % 8 == 0);
    for (std::size_t i = 0; i < tensors.size(); ++i)
    {
        const auto& info = f.info(tensors[i].first.name);
        CHECK(info.dtype == dtypes[i].first);
        CHECK(info.shape == xmerge::shape_type{3, 4});
        REQUIRE(info.bytes() == storage[i].size());
        CHECK(std::memcmp(f.raw(info.name), storage[i].data(), info.bytes()) == 0);
        // Wider types are laid out first, so every tensor is aligned to its element size.
        const std::size_t size = xmerge::io::dtype_size(info.dtype);
        if (size > 1)
        {
            CHECK(reinterpret_cast<std::uintptr_t>(f.raw(info.name)) % size == 0);
        }
    }
    CHECK_THROWS_WITH(f.tensor("t.I64"), Catch::Contains("t.I64") && Catch::Contains("cannot be used in arithmetic"));
    CHECK_THROWS_WITH(f.info("missing"), Catch::Contains("all.safetensors") && Catch::Contains("missing") && Catch::Contains("no such tensor"));
}

TEST_CASE("safetensors: float tensors are served as typed, zero-copy references", "[io]")
{
    scratch_dir dir;
    const auto values = xmerge_test::random_floats(1000, 3);
    xmerge_test::buffer a(xmerge::dtype::float32, values, "w.f32"), b(xmerge::dtype::bfloat16, values, "w.bf16"), c(xmerge::dtype::float16, values, "w.f16");
    const std::string path = dir / "f.safetensors";
    xmerge::io::save_safetensors(path, {a.cref(), b.cref(), c.cref()});
    const xmerge::io::safetensors_file f(path);
    for (const auto* buf : {&a, &b, &c})
    {
        const std::string name = buf == &a ? "w.f32" : (buf == &b ? "w.bf16" : "w.f16");
        const auto r = f.tensor(name);
        CHECK(r.type() == buf->type());
        CHECK(r.name() == name);
        REQUIRE(r.bytes() == buf->bytes().size());
        CHECK(std::memcmp(r.data(), buf->bytes().data(), r.bytes()) == 0);
        CHECK(static_cast<const std::uint8_t*>(r.data()) >= f.file().data());  // inside the mapping
    }
}

TEST_CASE("safetensors: a header whose length is not a multiple of 8 still reads correctly", "[io]")
{
    scratch_dir dir;
    // 4-byte floats after a 9-byte header: misaligned in the mapping.
    const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    std::string h = header + std::string((8 - header.size() % 8) % 8 + 1, ' ');
    float v[2] = {1.5f, -2.25f};
    const std::string path = dir / "odd.safetensors";
    xmerge_test::write_bytes(path, safetensors_image(h, std::string(reinterpret_cast<const char*>(v), 8)));
    const xmerge::io::safetensors_file f(path);
    const auto r = f.tensor("a");
    CHECK(reinterpret_cast<std::uintptr_t>(r.data()) % 4 == 0);
    CHECK(r.typed_data<float>()[0] == 1.5f);
    CHECK(r.typed_data<float>()[1] == -2.25f);
    f.release("a");
}

TEST_CASE("safetensors: malformed headers give an error naming the file, tensor and fault", "[io]")
{
    const std::string ok_tensor = R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
    const std::string eight(8, 'x');
    CHECK_THAT(parse_error("1234"), Catch::Contains("too short"));
    CHECK_THAT(parse_error(std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + "{}"), Catch::Contains("exceeds the limit"));
    CHECK_THAT(parse_error(std::string("\x40\x00\x00\x00\x00\x00\x00\x00", 8) + "{}"), Catch::Contains("exceeds the 2 bytes"));
    CHECK_THAT(parse_error(safetensors_image("{\"w\":", "")), Catch::Contains("not valid JSON"));
    CHECK_THAT(parse_error(safetensors_image("{\"w\xff\":1}", "")), Catch::Contains("not valid JSON"));
    CHECK_THAT(parse_error(safetensors_image("[1,2]", "")), Catch::Contains("not a JSON object"));
    CHECK_THAT(parse_error(safetensors_image(R"({"w":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", eight)), Catch::Contains("'w'") && Catch::Contains("unknown dtype 'Q7'"));
    CHECK_THAT(parse_error(safetensors_image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", eight)), Catch::Contains("non-negative"));
    CHECK_THAT(parse_error(safetensors_image(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight)), Catch::Contains("not a non-negative integer"));
    CHECK_THAT(parse_error(safetensors_image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", eight)), Catch::Contains("before begin"));
    CHECK_THAT(parse_error(safetensors_image(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight)), Catch::Contains("needs 12 bytes"));
    CHECK_THAT(parse_error(safetensors_image(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", eight)), Catch::Contains("past the 8 bytes"));
    CHECK_THAT(parse_error(safetensors_image(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", eight)), Catch::Contains("overflows"));
    CHECK_THAT(parse_error(safetensors_image(R"({"w":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}})", "x")), Catch::Contains("whole number of bytes"));
    CHECK_THAT(parse_error(safetensors_image("{" + ok_tensor + R"(,"v":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight)),
               Catch::Contains("'v'") && Catch::Contains("overlaps tensor 'w'"));
    CHECK_THAT(parse_error(safetensors_image(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight)), Catch::Contains("gap of 4 bytes"));
    CHECK_THAT(parse_error(safetensors_image("{" + ok_tensor + "}", eight + "zz")), Catch::Contains("2 bytes after the last tensor"));
    CHECK_THAT(parse_error(safetensors_image("{" + ok_tensor + "," + ok_tensor + "}", eight)), Catch::Contains("twice"));
    CHECK_THAT(parse_error(safetensors_image(R"({"__metadata__":{"a":1}})", "")), Catch::Contains("not a string"));
    CHECK_THAT(parse_error(safetensors_image(R"({"w":{"dtype":"F32","shape":[2]}})", eight)), Catch::Contains("data_offsets"));
    CHECK_THAT(parse_error(safetensors_image(R"({"w":7})", eight)), Catch::Contains("not an object"));
    // a valid header for contrast
    const std::string good = safetensors_image("{" + ok_tensor + "}", eight);
    const auto h = xmerge::io::parse_header(reinterpret_cast<const std::uint8_t*>(good.data()), good.size(), "good");
    CHECK(h.tensors.size() == 1);
    CHECK(h.data_size == 8);
}

TEST_CASE("safetensors_writer: nothing appears under the name until every tensor is written", "[io]")
{
    scratch_dir dir;
    const std::string path = dir / "out.safetensors";
    std::vector<xmerge::io::tensor_info> layout = {{"a", "F32", {4}, 0, 0}, {"b", "BF16", {2, 3}, 0, 0}, {"c", "I64", {1}, 0, 0}};
    {
        xmerge::io::safetensors_writer w(path, layout);
        const float a[4] = {1, 2, 3, 4};
        w.write("a", a, sizeof a);
        w.finish("a");
        CHECK_THROWS_WITH(w.write("c", a, 4), Catch::Contains("got 4 bytes for a tensor of 8"));
        CHECK_THROWS_WITH(w.tensor("c"), Catch::Contains("cannot be written by arithmetic"));
        CHECK_THROWS_WITH(w.data("zz"), Catch::Contains("not part of this file's layout"));
        CHECK_THROWS_WITH(w.commit(), Catch::Contains("'c'") && Catch::Contains("never written"));
        CHECK_FALSE(std::filesystem::exists(path));
    }
    // the abandoned writer left nothing behind, not even its temporary file
    CHECK(dir.entries().empty());

    xmerge::io::safetensors_writer w(path, layout, {{"k", "v"}});
    xmerge::tensor_ref b = w.tensor("b");
    const std::vector<float> six = {1, 2, 3, 4, 5, 6};
    xmerge::evaluate(xmerge::input(six) * 2.0, b.reshaped({6}));
    w.finish("b");
    const std::int64_t c = -7;
    w.write("c", &c, 8);
    w.finish("c");
    const float a[4] = {1, 2, 3, 4};
    std::memcpy(w.data("a"), a, sizeof a);
    w.finish("a");
    w.commit();
    CHECK(dir.entries() == std::vector<std::string>{"out.safetensors"});
    const xmerge::io::safetensors_file f(path);
    CHECK(f.metadata().at("k") == "v");
    CHECK(f.tensor("a").typed_data<float>()[3] == 4.0f);
    CHECK(static_cast<float>(f.tensor("b").typed_data<xmerge::bfloat16>()[5]) == 12.0f);
    std::int64_t got = 0;
    std::memcpy(&got, f.raw("c"), 8);
    CHECK(got == -7);
}

TEST_CASE("layout_header: names must be unique and valid, dtypes known", "[io]")
{
    std::vector<xmerge::io::tensor_info> dup = {{"a", "F32", {1}, 0, 0}, {"a", "F32", {1}, 0, 0}};
    CHECK_THROWS_WITH(xmerge::io::layout_header(dup, {}, "x"), Catch::Contains("twice"));
    std::vector<xmerge::io::tensor_info> bad = {{"a", "F13", {1}, 0, 0}};
    CHECK_THROWS_WITH(xmerge::io::layout_header(bad, {}, "x"), Catch::Contains("'F13' is unknown"));
    std::vector<xmerge::io::tensor_info> reserved = {{"__metadata__", "F32", {1}, 0, 0}};
    CHECK_THROWS_WITH(xmerge::io::layout_header(reserved, {}, "x"), Catch::Contains("not a valid tensor name"));
    std::vector<xmerge::io::tensor_info> empty_shape = {{"s", "F32", {}, 0, 0}, {"z", "F32", {0, 5}, 0, 0}};
    const std::string h = xmerge::io::layout_header(empty_shape, {}, "x");
    CHECK(h.size() % 8 == 0);
    CHECK(empty_shape[0].bytes() + empty_shape[1].bytes() == 4);  // a scalar has one element, [0, 5] none
}
