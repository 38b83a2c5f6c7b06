// The evaluation engine: every dtype in and out, thread and chunk
// independence, special values, in-place updates and output checks.
#include <catch2/catch.hpp>

#include <atomic>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "test_support.hpp"

using namespace xmerge;
using xmerge_test::buffer;

namespace
{
    const dtype all_dtypes[] = {dtype::float32, dtype::bfloat16, dtype::float16};
}

TEST_CASE("task arithmetic over every input and output dtype matches a double oracle", "[evaluate][dtype]")
{
    for (dtype in_type : all_dtypes)
    {
        for (dtype out_type : all_dtypes)
        {
            for (std::size_t n : xmerge_test::odd_sizes())
            {
                const buffer base(in_type, xmerge_test::random_floats(n, 1, -2.0f, 2.0f), "base");
                std::vector<buffer> models;
                for (std::uint32_t k = 0; k < 3; ++k)
                {
                    models.emplace_back(in_type, xmerge_test::random_floats(n, 10 + k, -2.0f, 2.0f));
                }
                expression_list<input_node> leaves;
                for (const auto& m : models)
                {
                    leaves.push_back(m.leaf());
                }
                const std::vector<double> w{0.7, -0.4, 1.3};
                buffer out(out_type, n, "out");
                evaluate(task_arithmetic(leaves, base.leaf(), w, {0.9}), out.ref());

                const auto b = base.values();
                std::vector<std::vector<float>> x;
                for (const auto& m : models)
                {
                    x.push_back(m.values());
                }
                const auto got = out.values();
                INFO(name_of(in_type) << " -> " << name_of(out_type) << ", n = " << n);
                for (std::size_t i = 0; i < n; ++i)
                {
                    double mixed = 0.0;
                    for (std::size_t k = 0; k < 3; ++k)
                    {
                        mixed += w[k] * (static_cast<double>(x[k][i]) - b[i]);
                    }
                    const double expected = b[i] + 0.9 * mixed;
                    // float32 arithmetic error (a few ulps of the magnitudes involved) plus the output rounding
                    const double tol = 8.0 * xmerge_test::ulp_of(dtype::float32, 8.0) + 0.5 * xmerge_test::ulp_of(out_type, expected);
                    REQUIRE(std::fabs(got[i] - expected) <= tol);
                }
            }
        }
    }
}

TEST_CASE("results are bitwise identical for any thread count or executor", "[evaluate][threads]")
{
    const std::size_t n = 300007;
    const buffer base(dtype::bfloat16, xmerge_test::random_floats(n, 21), "base");
    const buffer m0(dtype::float32, xmerge_test::random_floats(n, 22));
    const buffer m1(dtype::float16, xmerge_test::random_floats(n, 23));
    const auto d0 = m0.leaf() - base.leaf();
    const auto d1 = m1.leaf() - base.leaf();
    // statistics (norms, a dot product) and an element-wise pass
    const auto e = base.leaf() + (d0 * norm(d1) + d1 * norm(d0)) * (dot(d0, d1) / (sum_squares(d0) + 1.0));

    std::vector<float> reference;
    evaluate(e, reference, {1});
    thread_pool pool(3);
    for (std::size_t threads : {2u, 3u, 0u})
    {
        std::vector<float> out;
        evaluate(e, out, {threads});
        REQUIRE(xmerge_test::same_bits(out, reference));
        evaluate(e, out, {threads, &pool});
        REQUIRE(xmerge_test::same_bits(out, reference));
    }
    eval_options small_tasks;
    small_tasks.threads = 2;
    small_tasks.chunks_per_task = 1;
    std::vector<float> out;
    evaluate(e, out, small_tasks);
    REQUIRE(xmerge_test::same_bits(out, reference));
    REQUIRE(value_of(dot(d0, d1), {1}) == value_of(dot(d0, d1), {2}));
}

TEST_CASE("element-wise results do not depend on the chunk size", "[evaluate][chunks]")
{
    const std::size_t n = 100003;
    const auto a = xmerge_test::random_floats(n, 31);
    const auto b = xmerge_test::random_floats(n, 32);
    const auto e = lerp(input(a), input(b), 0.37) * 1.5 - input(b);
    std::vector<float> reference;
    evaluate(e, reference);
    for (std::size_t chunk : {64u, 192u, 4096u, 65536u})
    {
        eval_options o;
        o.chunk_size = chunk;
        o.threads = 2;
        std::vector<float> out;
        evaluate(e, out, o);
        REQUIRE(xmerge_test::same_bits(out, reference));
    }
}

TEST_CASE("NaN, infinity and negative zero pass through", "[evaluate][special]")
{
    const float inf = std::numeric_limits<float>::infinity();
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const std::vector<float> a{nan, inf, -inf, -0.0f, 1.0f, 0.0f};
    const std::vector<float> b{1.0f, 1.0f, 1.0f, -0.0f, nan, 0.0f};
    const std::vector<std::vector<float>> pair{a, b};
    for (dtype out_type : all_dtypes)
    {
        buffer out(out_type, a.size());
        evaluate(linear(inputs(pair), {1.0, 1.0}), out.ref());
        const auto v = out.values();
        CHECK(std::isnan(v[0]));
        CHECK(v[1] == inf);
        CHECK(v[2] == -inf);
        CHECK(v[3] == 0.0f);
        CHECK(std::signbit(v[3]));  // (-0 + -0) / 2
        CHECK(std::isnan(v[4]));
        CHECK_FALSE(std::signbit(v[5]));
    }
    for (dtype in_type : all_dtypes)
    {
        const buffer in(in_type, a);
        std::vector<float> out;
        evaluate(in.leaf() * 1.0, out);
        CHECK(std::isnan(out[0]));
        CHECK(out[1] == inf);
        CHECK(std::signbit(out[3]));
    }
}

TEST_CASE("an output may be one of the inputs (in place), nothing else overlapping", "[evaluate][alias]")
{
    std::vector<float> x{1, 2, 3, 4, 5, 6, 7, 8};
    const auto xr = as_tensor(x, "x");
    evaluate(input(xr) * 2.0 + 1.0, xr);
    CHECK(x == std::vector<float>{3, 5, 7, 9, 11, 13, 15, 17});

    const tensor_ref front(x.data(), dtype::float32, {4}, "front");
    const tensor_ref shifted(x.data() + 2, dtype::float32, {4}, "shifted");
    CHECK_THROWS_AS(evaluate(input(front) * 2.0, shifted), layout_error);
    CHECK_THROWS_WITH(evaluate(input(front) * 2.0, shifted), Catch::Contains("overlaps"));

    // in place with statistics: the norm is taken before anything is written
    std::vector<float> y(5000, 2.0f);
    const auto yr = as_tensor(y);
    evaluate(input(yr) / norm(input(yr)), yr);
    CHECK(y[4999] == Approx(2.0 / std::sqrt(4.0 * 5000)).epsilon(1e-6));
}

TEST_CASE("outputs are checked and containers resized", "[evaluate][errors]")
{
    const std::vector<float> a(12, 1.0f);
    const auto x = input(as_tensor(a, {3, 4}, "a"));
    std::vector<float> wrong(11);
    CHECK_THROWS_AS(evaluate(x, as_tensor(wrong, "out")), shape_error);
    CHECK_THROWS_WITH(evaluate(x, as_tensor(wrong, "out")), Catch::Contains("out") && Catch::Contains("[3, 4]"));

    std::vector<float> v;
    evaluate(x, v);
    CHECK(v.size() == 12);
    xt::xarray<float> arr;
    evaluate(x, arr);
    CHECK(arr.shape() == std::vector<std::size_t>{3, 4});

    eval_options bad;
    bad.chunk_size = 100;
    CHECK_THROWS_AS(evaluate(x, v, bad), parameter_error);
    bad.chunk_size = 0;
    CHECK_THROWS_AS(evaluate(x, v, bad), parameter_error);
}

TEST_CASE("evaluate_all runs many tensors of different sizes as one job", "[evaluate][threads]")
{
    std::vector<std::vector<float>> in, out;
    std::vector<input_node> leaves;
    for (std::size_t i = 0; i < 20; ++i)
    {
        in.push_back(xmerge_test::random_floats(i * 997 + 1, static_cast<std::uint32_t>(40 + i)));
        out.emplace_back(in.back().size());
    }
    std::vector<decltype(input(in[0]) * 2.0)> exprs;
    std::vector<tensor_ref> outs;
    for (std::size_t i = 0; i < in.size(); ++i)
    {
        exprs.push_back(input(in[i]) * 2.0);
        outs.push_back(as_tensor(out[i]));
    }
    evaluate_all(exprs, outs, {2});
    for (std::size_t i = 0; i < in.size(); ++i)
    {
        for (std::size_t j = 0; j < in[i].size(); ++j)
        {
            REQUIRE(out[i][j] == 2.0f * in[i][j]);
        }
    }
    outs.pop_back();
    CHECK_THROWS_AS(evaluate_all(exprs, outs), parameter_error);
}

TEST_CASE("a custom executor runs the work", "[evaluate][threads]")
{
    struct failing_executor final : executor
    {
        std::size_t concurrency() const noexcept override { return 2; }
        void run(std::size_t n, const std::function<void(std::size_t)>& job) override
        {
            for (std::size_t i = 0; i < n; ++i)
            {
                job(i);
            }
        }
    } exec;
    const std::vector<float> a(100000, 1.0f);
    std::vector<float> out;
    eval_options o;
    o.threads = 2;
    o.exec = &exec;
    evaluate(input(a) + 1.0, out, o);
    CHECK(out[99999] == 2.0f);
}

TEST_CASE("the first exception thrown by a task reaches the caller", "[evaluate][threads]")
{
    for (std::size_t threads : {1u, 2u, 4u})
    {
        std::atomic<std::size_t> ran{0};
        const auto run = [&]
        {
            detail::run_tasks(
                1000, threads, nullptr, [] { return 0; },
                [&](int&, std::size_t t)
                {
                    ++ran;
                    if (t == 500)
                    {
                        throw std::runtime_error("task 500 failed");
                    }
                });
        };
        CHECK_THROWS_WITH(run(), "task 500 failed");
        CHECK(ran.load() <= 1000);
    }
}
