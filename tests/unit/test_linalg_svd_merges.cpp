// TSV-M, Iso-C and Iso-CTS: the properties that define them (decorrelated
// task subspaces, a flat spectrum), their reductions to simpler merges, and
// their parameter checks.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "linalg_support.hpp"
#include "registry_support.hpp"

using namespace xmerge;

namespace
{
    struct task_fixture
    {
        std::size_t m, n;
        std::vector<float> base;
        std::vector<std::vector<float>> models;

        task_fixture(std::size_t m_, std::size_t n_, std::size_t k) : m(m_), n(n_), base(xmerge_test::normal_matrix(m, n, 1))
        {
            for (std::size_t i = 0; i < k; ++i)
            {
                auto d = xmerge_test::normal_matrix(m, n, static_cast<std::uint32_t>(10 + i), 0.02f);
                for (std::size_t e = 0; e < d.size(); ++e)
                {
                    d[e] += base[e];
                }
                models.push_back(std::move(d));
            }
        }

        input_node base_leaf() const { return input(as_tensor(base, {m, n}, "layer.weight")); }
        expression_list<input_node> model_leaves() const
        {
            expression_list<input_node> l;
            for (std::size_t i = 0; i < models.size(); ++i)
            {
                l.push_back(input(as_tensor(models[i], {m, n}, "model." + std::to_string(i))));
            }
            return l;
        }
        // (result - base) / alpha
        std::vector<double> merged_task_vector(const std::vector<float>& result, double alpha) const
        {
            std::vector<double> d(result.size());
            for (std::size_t e = 0; e < d.size(); ++e)
            {
                d[e] = (static_cast<double>(result[e]) - base[e]) / alpha;
            }
            return d;
        }
        std::vector<double> task_vector_sum() const
        {
            std::vector<double> s(m * n, 0.0);
            for (const auto& x : models)
            {
                for (std::size_t e = 0; e < s.size(); ++e)
                {
                    s[e] += static_cast<double>(x[e]) - base[e];
                }
            }
            return s;
        }
    };
}

TEST_CASE("TSV-M of one model is its task vector", "[linalg][tsv_m]")
{
    const task_fixture f(20, 14, 1);
    std::vector<float> out;
    evaluate(tsv_m(f.model_leaves(), f.base_leaf(), {0.7}), out);
    for (std::size_t e = 0; e < out.size(); ++e)
    {
        const double expected = f.base[e] + 0.7 * (static_cast<double>(f.models[0][e]) - f.base[e]);
        REQUIRE(out[e] == Approx(expected).margin(2e-6));
    }
}

TEST_CASE("TSV-M leaves task subspaces that are already orthogonal alone", "[linalg][tsv_m][invariant]")
{
    // Task vectors on disjoint row and column blocks have orthogonal singular
    // vectors across tasks: orthogonalizing changes nothing, so the merge is
    // the sum of each task's rank-k truncation (here the task vector itself).
    const std::size_t m = 24, n = 20, tasks = 2, k = 10;
    task_fixture f(m, n, tasks);
    std::vector<std::vector<double>> truncated(tasks);
    for (std::size_t i = 0; i < tasks; ++i)
    {
        auto d = xmerge_test::normal_matrix(m, n, static_cast<std::uint32_t>(50 + i), 0.05f);
        for (std::size_t r = 0; r < m; ++r)
        {
            for (std::size_t c = 0; c < n; ++c)
            {
                const bool mine = (r < m / 2) == (i == 0) && (c < n / 2) == (i == 0);
                if (!mine)
                {
                    d[r * n + c] = 0.0f;
                }
                f.models[i][r * n + c] = f.base[r * n + c] + d[r * n + c];
                d[r * n + c] = f.models[i][r * n + c] - f.base[r * n + c];  // what the merge sees
            }
        }
        const auto s = svd<double>(xmerge_test::to_matrix<double>(d, m, n));
        truncated[i].assign(m * n, 0.0);
        for (std::size_t r = 0; r < m; ++r)
        {
            for (std::size_t c = 0; c < n; ++c)
            {
                for (std::size_t l = 0; l < k; ++l)
                {
                    truncated[i][r * n + c] += s.u(r, l) * s.s(l) * s.vt(l, c);
                }
            }
        }
    }
    std::vector<float> out;
    evaluate(tsv_m(f.model_leaves(), f.base_leaf(), {1.0, linalg_precision::float64}), out);
    const auto merged = f.merged_task_vector(out, 1.0);
    for (std::size_t e = 0; e < merged.size(); ++e)
    {
        REQUIRE(merged[e] == Approx(truncated[0][e] + truncated[1][e]).margin(1e-6));
    }
}

TEST_CASE("Iso-C flattens the spectrum of the summed task vector", "[linalg][iso_c][invariant]")
{
    const task_fixture f(30, 22, 3);
    for (auto precision : {linalg_precision::float32, linalg_precision::float64})
    {
        std::vector<float> out;
        evaluate(iso_c(f.model_leaves(), f.base_leaf(), {1.5, precision}), out);
        const auto s_sum = xmerge_test::singular_values(f.task_vector_sum(), f.m, f.n);
        double mean = 0.0;
        for (double v : s_sum)
        {
            mean += v / static_cast<double>(s_sum.size());
        }
        const auto s_out = xmerge_test::singular_values(f.merged_task_vector(out, 1.5), f.m, f.n);
        for (double v : s_out)
        {
            CHECK(v == Approx(mean).epsilon(1e-4));
        }
        // same singular subspaces: the merged vector is mean * polar(sum)
        const auto polar = polar_factor<double>(xmerge_test::to_matrix<double>(f.task_vector_sum(), f.m, f.n));
        const auto merged = f.merged_task_vector(out, 1.5);
        for (std::size_t e = 0; e < merged.size(); ++e)
        {
            REQUIRE(merged[e] == Approx(mean * polar.data()[e]).margin(2e-5 * mean));
        }
    }
}

TEST_CASE("Iso-CTS with the whole rank in common is Iso-C", "[linalg][iso_cts][invariant]")
{
    const task_fixture f(18, 26, 3);
    std::vector<float> cts, c;
    evaluate(iso_cts(f.model_leaves(), f.base_leaf(), {1.0, 0.9, linalg_precision::float64}), cts);
    evaluate(iso_c(f.model_leaves(), f.base_leaf(), {0.9, linalg_precision::float64}), c);
    for (std::size_t e = 0; e < c.size(); ++e)
    {
        REQUIRE(cts[e] == Approx(c[e]).margin(1e-6));
    }
    // and its spectrum is flat for any split
    std::vector<float> half;
    evaluate(iso_cts(f.model_leaves(), f.base_leaf(), {0.5, 1.0, linalg_precision::float64}), half);
    const auto s = xmerge_test::singular_values(f.merged_task_vector(half, 1.0), f.m, f.n);
    for (double v : s)
    {
        CHECK(v == Approx(s[0]).epsilon(1e-4));  // the result is rounded to float32 next to a base of norm ~1
    }
}

TEST_CASE("Iso-CTS splits the rank so the task part divides evenly", "[linalg][iso_cts]")
{
    // c = r - T * round((r - floor(r f)) / T), halves to even, never negative
    CHECK(detail::iso_cts_common_size(48, 4, 0.8) == 40);  // 38 -> 10/4 = 2.5 -> 2 -> 8 left for tasks
    CHECK(detail::iso_cts_common_size(30, 3, 0.5) == 15);
    CHECK(detail::iso_cts_common_size(64, 4, 0.0) == 0);
    CHECK(detail::iso_cts_common_size(10, 4, 0.3) == 2);   // 3 -> 7/4 = 1.75 -> 2 -> 8
    CHECK(detail::iso_cts_common_size(6, 4, 0.0) == 2);    // 6/4 = 1.5 -> 2 -> 8 > 6: one task block fewer
    CHECK(detail::iso_cts_common_size(40, 3, 1.0) == 40);
}

TEST_CASE("SVD merges use the mean task vector for tensors that are not 2-D", "[linalg][tsv_m][iso_c][iso_cts]")
{
    const std::vector<float> base = xmerge_test::random_floats(57, 1);
    const std::vector<std::vector<float>> models{xmerge_test::random_floats(57, 2), xmerge_test::random_floats(57, 3)};
    const auto b = input(base, "bias");
    for (int method = 0; method < 3; ++method)
    {
        std::vector<float> out;
        if (method == 0)
        {
            evaluate(tsv_m(inputs(models), b, {0.5}), out);
        }
        else if (method == 1)
        {
            evaluate(iso_c(inputs(models), b, {0.5}), out);
        }
        else
        {
            evaluate(iso_cts(inputs(models), b, {0.8, 0.5}), out);
        }
        for (std::size_t e = 0; e < base.size(); ++e)
        {
            const double mean = ((static_cast<double>(models[0][e]) - base[e]) + (static_cast<double>(models[1][e]) - base[e])) / 2.0;
            REQUIRE(out[e] == Approx(base[e] + 0.5 * mean).margin(1e-6));
        }
    }
}

TEST_CASE("float32 and float64 SVD merges agree, for bfloat16 inputs too", "[linalg][tsv_m][iso_cts][dtype]")
{
    const task_fixture f(40, 32, 4);
    std::vector<xmerge_test::buffer> bf;
    expression_list<input_node> models;
    for (std::size_t i = 0; i < 4; ++i)
    {
        bf.emplace_back(dtype::bfloat16, f.models[i]);
    }
    for (std::size_t i = 0; i < 4; ++i)
    {
        models.push_back(input(bf[i].cref().reshaped({f.m, f.n})));
    }
    xmerge_test::buffer base_bf(dtype::bfloat16, f.base);
    const auto base = input(base_bf.cref().reshaped({f.m, f.n}));
    std::vector<float> a, b;
    evaluate(tsv_m(models, base, {1.0, linalg_precision::float32}), a);
    evaluate(tsv_m(models, base, {1.0, linalg_precision::float64}), b);
    for (std::size_t e = 0; e < a.size(); ++e)
    {
        REQUIRE(a[e] == Approx(b[e]).margin(1e-5));
    }
    evaluate(iso_cts(models, base, {0.6, 1.0, linalg_precision::float32}), a);
    evaluate(iso_cts(models, base, {0.6, 1.0, linalg_precision::float64}), b);
    for (std::size_t e = 0; e < a.size(); ++e)
    {
        REQUIRE(a[e] == Approx(b[e]).margin(1e-5));
    }
}

TEST_CASE("SVD merges check models, base and parameters", "[linalg][tsv_m][iso_c][iso_cts][errors]")
{
    const task_fixture f(8, 6, 2);
    const auto models = f.model_leaves();
    const auto base = f.base_leaf();
    CHECK_THROWS_WITH(tsv_m(expression_list<input_node>{}, base), Catch::Contains("at least one model"));
    const std::vector<float> other(7 * 6);
    CHECK_THROWS_WITH(iso_c(models, input(as_tensor(other, {7, 6}, "other"))), Catch::Contains("model 0") && Catch::Contains("[7, 6]"));
    CHECK_THROWS_WITH(iso_c(models, base, {INFINITY}), Catch::Contains("alpha") && Catch::Contains("layer.weight"));
    CHECK_THROWS_WITH(iso_cts(models, base, {1.2}), Catch::Contains("common_space_fraction"));

    auto broken = f.models[1];
    broken[5] = std::nanf("");
    expression_list<input_node> with_nan{std::vector<input_node>{models[0], input(as_tensor(broken, {8, 6}, "model.1"))}};
    std::vector<float> out;
    CHECK_THROWS_WITH(evaluate(tsv_m(with_nan, base), out), Catch::Contains("model.1") && Catch::Contains("not finite"));
    CHECK_THROWS_WITH(evaluate(iso_c(with_nan, base), out), Catch::Contains("not finite"));

    method_inputs in;
    in.tensor = "layer.weight";
    in.models = models;
    const method_registry& r = xmerge_test::builtin_registry();
    CHECK_THROWS_WITH(r.build("tsv_m", in, {}), Catch::Contains("base model"));
    in.base = base;
    std::vector<float> by_name, direct;
    evaluate(r.build("iso_cts", in, {{"common_space_fraction", 0.5}, {"alpha", 1.2}}), by_name);
    evaluate(iso_cts(models, base, {0.5, 1.2}), direct);
    CHECK(xmerge_test::same_bits(by_name, direct));
}
