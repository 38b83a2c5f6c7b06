// Tensor references and their adaptors.
#include <catch2/catch.hpp>

#include <vector>

#include <xtensor/xarray.hpp>
#include <xtensor/xbuilder.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

#include "test_support.hpp"

using namespace xmerge;

TEST_CASE("as_tensor adapts vectors, raw pointers and xtensor containers", "[tensor_ref]")
{
    std::vector<float> v(12);
    const tensor_ref r = as_tensor(v, {3, 4}, "w");
    CHECK(r.data() == v.data());
    CHECK(r.type() == dtype::float32);
    CHECK(r.shape() == shape_type{3, 4});
    CHECK(r.size() == 12);
    CHECK(r.bytes() == 48);
    CHECK(r.name() == "w");

    const std::vector<bfloat16> cv(5);
    const const_tensor_ref cr = as_tensor(cv);
    CHECK(cr.type() == dtype::bfloat16);
    CHECK(cr.shape() == shape_type{5});

    float16 raw[6];
    const tensor_ref rr = as_tensor(raw, {2, 3});
    CHECK(rr.type() == dtype::float16);
    CHECK(rr.size() == 6);

    xt::xtensor<float, 2> t = xt::zeros<float>({4, 5});
    const tensor_ref tr = as_tensor(t, "t");
    CHECK(tr.data() == t.data());
    CHECK(tr.shape() == shape_type{4, 5});

    // a contiguous row of a matrix, with its offset
    auto row = xt::view(t, 2, xt::all());
    const tensor_ref rowref = as_tensor(row);
    CHECK(rowref.data() == t.data() + 10);
    CHECK(rowref.shape() == shape_type{5});
}

TEST_CASE("as_tensor refuses what it cannot reference", "[tensor_ref]")
{
    std::vector<float> v(12);
    CHECK_THROWS_AS(as_tensor(v, {5, 3}, "w"), shape_error);
    CHECK_THROWS_WITH(as_tensor(v, {5, 3}, "w"), Catch::Contains("'w'") && Catch::Contains("[5, 3]"));

    xt::xarray<float, xt::layout_type::column_major> cm = xt::zeros<float>({3, 4});
    CHECK_THROWS_AS(as_tensor(cm), layout_error);

    xt::xtensor<float, 2> t = xt::zeros<float>({4, 5});
    auto column = xt::view(t, xt::all(), 1);
    CHECK_THROWS_AS(as_tensor(column), layout_error);

    CHECK_THROWS_AS(tensor_ref(nullptr, dtype::float32, {3}), layout_error);
    CHECK_NOTHROW(tensor_ref(nullptr, dtype::float32, {0}));
}

TEST_CASE("typed access, renaming, reshaping and overlap", "[tensor_ref]")
{
    std::vector<float> v(12);
    const tensor_ref r = as_tensor(v, "x");
    CHECK(r.typed_data<float>() == v.data());
    CHECK_THROWS_AS(r.typed_data<bfloat16>(), layout_error);
    CHECK(r.with_name("y").name() == "y");
    CHECK(r.reshaped({2, 6}).shape() == shape_type{2, 6});
    CHECK_THROWS_AS(r.reshaped({5}), shape_error);

    const tensor_ref head(v.data(), dtype::float32, {6});
    const tensor_ref tail(v.data() + 6, dtype::float32, {6});
    const tensor_ref middle(v.data() + 3, dtype::float32, {6});
    CHECK(overlaps(head, middle));
    CHECK(overlaps(middle, tail));
    CHECK_FALSE(overlaps(head, tail));
    CHECK(same_memory(r, head));
    const const_tensor_ref c = r;  // writable converts to read-only
    CHECK(c.data() == r.data());
}
