// The list node: a new K-input part as a functor over a term view, through
// every binder path (typed per dtype, mixed dtypes, task vectors of one
// base or several, two lists, scalar weights), and shared sub-expressions
// computed once per chunk.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "test_support.hpp"

using namespace xmerge;
using xmerge_test::buffer;

namespace
{
    /// The mean of the terms without the largest and the smallest (K >= 3): a part no method ships.
    struct trimmed_mean_fn
    {
        static constexpr const char* what = "a trimmed mean";

        template <class Terms>
        auto operator()(const Terms& t) const
        {
            auto lo = t[0], hi = t[0], total = t[0];
            for (std::size_t k = 1; k < t.size(); ++k)
            {
                const auto v = t[k];
                lo = simd::min(lo, v);
                hi = simd::max(hi, v);
                total += v;
            }
            using B = typename Terms::batch;
            return (total - lo - hi) / B(static_cast<float>(t.size() - 2));
        }
    };

    float trimmed_mean(std::vector<float> v)
    {
        float lo = v[0], hi = v[0], total = v[0];
        for (std::size_t k = 1; k < v.size(); ++k)
        {
            lo = std::min(lo, v[k]);
            hi = std::max(hi, v[k]);
            total += v[k];
        }
        return (total - lo - hi) / static_cast<float>(v.size() - 2);
    }

    /// w_k-weighted sum of x_k * y_k over two lists.
    struct weighted_products_fn
    {
        template <class Terms>
        auto operator()(const Terms& t) const
        {
            auto acc = t.weight(0) * (t[0] * t.template at<1>(0));
            for (std::size_t k = 1; k < t.size(); ++k)
            {
                acc = simd::fma(t.weight(k), t[k] * t.template at<1>(k), acc);
            }
            return acc;
        }
    };

    /// The median of three terms (the strategy guide's example).
    struct median3_fn
    {
        template <class Terms>
        auto operator()(const Terms& t) const
        {
            const auto a = t[0], b = t[1], c = t[2];
            return simd::max(simd::min(a, b), simd::min(simd::max(a, b), c));
        }
    };

    std::atomic<std::size_t> packets_computed{0};

    /// Counts how often its packet is computed.
    struct counting_fn
    {
        template <class B>
        B operator()(const B& x) const
        {
            packets_computed.fetch_add(1, std::memory_order_relaxed);
            return x * B(2.0f);
        }
    };
}

TEST_CASE("a list-node functor runs on every binder path with the same results", "[list_node]")
{
    const dtype mixes[][3] = {{dtype::float32, dtype::float32, dtype::float32},
                              {dtype::bfloat16, dtype::bfloat16, dtype::bfloat16},
                              {dtype::float16, dtype::float16, dtype::float16},
                              {dtype::float32, dtype::bfloat16, dtype::float16}};
    for (const auto& mix : mixes)
    {
        for (std::size_t n : xmerge_test::odd_sizes())
        {
            const buffer base(mix[0], xmerge_test::random_floats(n, 1), "base");
            std::vector<buffer> models;
            for (std::uint32_t k = 0; k < 4; ++k)
            {
                models.emplace_back(mix[k % 3], xmerge_test::random_floats(n, 10 + k));
            }
            expression_list<input_node> leaves;
            for (const auto& m : models)
            {
                leaves.push_back(m.leaf());
            }
            std::vector<float> plain, deltas, one_base;
            evaluate(combine(trimmed_mean_fn{}, leaves), plain);
            evaluate(combine(trimmed_mean_fn{}, task_vectors(leaves, base.leaf())), deltas);
            // the same task vectors, but not recognised as sharing a base
            evaluate(combine(trimmed_mean_fn{}, transform(leaves, [&](const auto& x) { return x - 1.0f * base.leaf(); })), one_base);
            std::vector<std::vector<float>> x;
            for (const auto& m : models)
            {
                x.push_back(m.values());
            }
            const auto b = base.values();
            INFO(name_of(mix[0]) << "/" << name_of(mix[1]) << ", n = " << n);
            for (std::size_t i = 0; i < n; ++i)
            {
                REQUIRE(plain[i] == trimmed_mean({x[0][i], x[1][i], x[2][i], x[3][i]}));
                REQUIRE(deltas[i] == trimmed_mean({x[0][i] - b[i], x[1][i] - b[i], x[2][i] - b[i], x[3][i] - b[i]}));
            }
            REQUIRE(xmerge_test::same_bits(deltas, one_base));
        }
    }
}

TEST_CASE("the strategy guide's median of three task vectors", "[list_node]")
{
    const std::size_t n = 3001;
    const auto base = xmerge_test::random_floats(n, 81);
    const std::vector<std::vector<float>> xs{xmerge_test::random_floats(n, 82), xmerge_test::random_floats(n, 83), xmerge_test::random_floats(n, 84)};
    const auto b = input(base, "base");
    std::vector<float> out;
    evaluate(b + combine(median3_fn{}, task_vectors(inputs(xs), b)), out, {2});
    for (std::size_t i = 0; i < n; ++i)
    {
        std::vector<float> d{xs[0][i] - base[i], xs[1][i] - base[i], xs[2][i] - base[i]};
        std::sort(d.begin(), d.end());
        REQUIRE(out[i] == base[i] + d[1]);
    }
}

TEST_CASE("a list node reads two lists and scalar-expression weights", "[list_node]")
{
    const std::size_t n = 5003;
    std::vector<std::vector<float>> xs, ys;
    for (std::uint32_t k = 0; k < 3; ++k)
    {
        xs.push_back(xmerge_test::random_floats(n, 20 + k));
        ys.push_back(xmerge_test::random_floats(n, 30 + k));
    }
    const auto x = inputs(xs);
    const auto y = inputs(ys, "y.");
    expression_list<any_scalar> weights;
    for (std::size_t k = 0; k < 3; ++k)
    {
        weights.push_back(xmerge::norm(x[k]) * 0.01);
    }
    std::vector<float> out;
    evaluate(combine_weighted(weighted_products_fn{}, weights, x, y), out);
    std::vector<double> w;
    for (std::size_t k = 0; k < 3; ++k)
    {
        w.push_back(value_of(xmerge::norm(x[k])) * 0.01);
    }
    for (std::size_t i = 0; i < n; ++i)
    {
        double s = 0.0;
        for (std::size_t k = 0; k < 3; ++k)
        {
            s += w[k] * xs[k][i] * ys[k][i];
        }
        REQUIRE(out[i] == Approx(s).margin(1e-6));
    }
    // lists of different lengths, and weights of the wrong count, are refused
    const std::vector<std::vector<float>> two_models{ys[0], ys[1]};
    const auto two = inputs(two_models);
    CHECK_THROWS_AS(combine(weighted_products_fn{}, x, two), parameter_error);
    CHECK_THROWS_WITH(combine_weighted(weighted_products_fn{}, std::vector<double>{1.0, 2.0}, x, y), Catch::Contains("expected 3"));
    CHECK_THROWS_WITH(combine(trimmed_mean_fn{}, expression_list<input_node>{}), Catch::Contains("a trimmed mean needs at least one model"));
}

TEST_CASE("a shared sub-expression read several times is computed once per chunk", "[list_node][shared]")
{
    const std::size_t n = 10000;
    const auto a = xmerge_test::random_floats(n, 71);
    const auto s = shared(map(counting_fn{}, input(a)));
    const auto e = s + s * s - s;
    std::vector<float> out;
    packets_computed = 0;
    evaluate(e, out);
    const std::size_t chunks = (n + XMERGE_DEFAULT_CHUNK_SIZE - 1) / XMERGE_DEFAULT_CHUNK_SIZE;
    const std::size_t packets = (n + simd::lanes - 1) / simd::lanes;
    // once per packet, not four times; the last chunk's padding costs at most one packet per chunk
    CHECK(packets_computed <= packets + chunks);
    CHECK(packets_computed >= packets);
    for (std::size_t i = 0; i < n; ++i)
    {
        const float v = a[i] * 2.0f;
        REQUIRE(out[i] == (v + v * v) - v);
    }
    // read once: computed once as well
    packets_computed = 0;
    evaluate(shared(map(counting_fn{}, input(a))) + 1.0f, out);
    CHECK(packets_computed >= packets);
    CHECK(packets_computed <= packets + chunks);
    // the same in a statistic: one computation per chunk, and the element-wise pass its own
    packets_computed = 0;
    CHECK(value_of(xmerge::dot(s, s)) == Approx(value_of(xmerge::dot(input(a), input(a))) * 4.0).epsilon(1e-6));
    CHECK(packets_computed <= packets + chunks);
}
