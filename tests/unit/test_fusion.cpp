// The fused per-chunk loop: its batch path against its float twin, and the
// specialised paths of weighted sums (uniform dtypes, shared base).
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "test_support.hpp"

using namespace xmerge;
using xmerge_test::buffer;

namespace
{
    /// Evaluates expr over [0, n) in chunks, once with batches and once with the float twin.
    template <class E>
    void both_paths(const E& expr, std::size_t n, std::vector<float>& batched, std::vector<float>& scalar)
    {
        detail::evaluator<E> ev(expr);
        detail::statistics_registry registry;
        ev.collect(registry);
        detail::run_statistics({&registry}, {});
        batched.assign(n, 0.0f);
        scalar.assign(n, 0.0f);
        detail::arena a(XMERGE_DEFAULT_CHUNK_SIZE);
        for (std::size_t begin = 0; begin < n; begin += XMERGE_DEFAULT_CHUNK_SIZE)
        {
            const std::size_t count = std::min<std::size_t>(XMERGE_DEFAULT_CHUNK_SIZE, n - begin);
            detail::arena::frame frame(a);
            const auto bound = ev.bind(begin, count, a);
            simd::store(count, batched.data() + begin, bound);
            simd::store<float>(count, scalar.data() + begin, bound);
        }
    }
}

TEST_CASE("the fused batch loop agrees with its float twin", "[fusion][simd]")
{
    for (std::size_t n : xmerge_test::odd_sizes())
    {
        const buffer base(dtype::bfloat16, xmerge_test::random_floats(n, 1), "base");
        const buffer m0(dtype::float16, xmerge_test::random_floats(n, 2));
        const buffer m1(dtype::float32, xmerge_test::random_floats(n, 3));
        expression_list<input_node> models;
        models.push_back(m0.leaf());
        models.push_back(m1.leaf());
        // no fused multiply-adds: bit-identical
        const auto plain = (base.leaf() - m0.leaf()) * (m1.leaf() + 2.0) / norm(m1.leaf());
        std::vector<float> a, b;
        both_paths(plain, n, a, b);
        INFO("n = " << n);
        REQUIRE(xmerge_test::same_bits(a, b));
        // with fused multiply-adds: within one rounding of the terms
        both_paths(task_arithmetic(models, base.leaf(), {0.3, -0.7}, {1.1}), n, a, b);
        for (std::size_t i = 0; i < n; ++i)
        {
            REQUIRE(std::fabs(a[i] - b[i]) <= 4e-7f);
        }
    }
}

TEST_CASE("weighted sums over mixed and uniform dtypes agree", "[fusion][dtype]")
{
    const std::size_t n = 10007;
    const auto v0 = xmerge_test::random_floats(n, 4), v1 = xmerge_test::random_floats(n, 5), v2 = xmerge_test::random_floats(n, 6);
    const auto vb = xmerge_test::random_floats(n, 7);
    const dtype types[] = {dtype::float32, dtype::bfloat16, dtype::float16};
    for (dtype t0 : types)
    {
        for (dtype t1 : types)
        {
            const buffer x0(t0, v0), x1(t1, v1), x2(t0, v2), b(t1, vb, "base");
            expression_list<input_node> models;
            models.push_back(x0.leaf());
            models.push_back(x1.leaf());
            models.push_back(x2.leaf());
            const std::vector<double> w{0.5, -1.25, 2.0};
            std::vector<float> ws, ta;
            evaluate(weighted_sum(models, w), ws);
            evaluate(task_arithmetic(models, b.leaf(), w), ta);
            const auto a0 = x0.values(), a1 = x1.values(), a2 = x2.values(), ab = b.values();
            for (std::size_t i = 0; i < n; ++i)
            {
                const double s = 0.5 * a0[i] - 1.25 * a1[i] + 2.0 * a2[i];
                const double d = ab[i] + 0.5 * (a0[i] - ab[i]) - 1.25 * (a1[i] - ab[i]) + 2.0 * (a2[i] - ab[i]);
                REQUIRE(ws[i] == Approx(s).margin(2e-6));
                REQUIRE(ta[i] == Approx(d).margin(4e-6));
            }
        }
    }
}

TEST_CASE("task vectors against different bases are summed term by term", "[fusion]")
{
    const std::size_t n = 5003;
    const auto x0 = xmerge_test::random_floats(n, 8), x1 = xmerge_test::random_floats(n, 9);
    const auto b0 = xmerge_test::random_floats(n, 10), b1 = xmerge_test::random_floats(n, 11);
    expression_list<decltype(input(x0) - input(b0))> deltas;
    deltas.push_back(input(x0) - input(b0));
    deltas.push_back(input(x1) - input(b1));
    std::vector<float> out;
    evaluate(weighted_sum(deltas, {1.0, 0.5}), out);
    for (std::size_t i = 0; i < n; ++i)
    {
        REQUIRE(out[i] == Approx((x0[i] - b0[i]) + 0.5 * (x1[i] - b1[i])).margin(1e-6));
    }
}
