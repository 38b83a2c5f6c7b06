// Fisher-weighted averaging against a double oracle and its invariants, the
// registry entry with whole-model norms, and the training-side accumulator
// of squared gradients.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "test_support.hpp"
#include "registry_support.hpp"

using namespace xmerge;

namespace
{
    struct fisher_fixture
    {
        std::size_t n;
        std::vector<std::vector<float>> models, fishers;

        explicit fisher_fixture(std::size_t size = 4099, std::size_t k = 3) : n(size)
        {
            for (std::size_t i = 0; i < k; ++i)
            {
                models.push_back(xmerge_test::random_floats(n, static_cast<std::uint32_t>(10 + i)));
                // squared gradients: non-negative, spread over decades
                auto f = xmerge_test::random_floats(n, static_cast<std::uint32_t>(20 + i), -3.0f, 1.0f);
                for (auto& v : f)
                {
                    v = std::pow(10.0f, v);
                }
                fishers.push_back(f);
            }
        }
    };

    // sum_i c_i (F_i + eps) x_i / sum_i c_i (F_i + eps), with the reference's normalization
    std::vector<double> fisher_oracle(const fisher_fixture& f, std::vector<double> c, bool normalize, double eps)
    {
        const std::size_t k = f.models.size();
        if (normalize)
        {
            std::vector<double> inv(k);
            double total = 0.0;
            for (std::size_t i = 0; i < k; ++i)
            {
                double s = 0.0;
                for (float v : f.fishers[i])
                {
                    s += static_cast<double>(v) * v;
                }
                inv[i] = 1.0 / (std::sqrt(s) + eps);
                total += inv[i];
            }
            for (std::size_t i = 0; i < k; ++i)
            {
                c[i] = c[i] * inv[i] / total;
            }
        }
        std::vector<double> out(f.n);
        for (std::size_t e = 0; e < f.n; ++e)
        {
            double num = 0.0, den = 0.0;
            for (std::size_t i = 0; i < k; ++i)
            {
                const double w = c[i] * (f.fishers[i][e] + eps);
                num += w * f.models[i][e];
                den += w;
            }
            out[e] = num / den;
        }
        return out;
    }
}

TEST_CASE("Fisher merging matches a double oracle, with and without normalization", "[fisher]")
{
    fisher_fixture f;
    const std::vector<double> c{0.5, 0.3, 0.2};
    for (bool normalize : {false, true})
    {
        fisher_options o;
        o.weights = c;
        o.normalize = normalize;
        std::vector<float> out;
        evaluate(fisher_merging(inputs(f.models), inputs(f.fishers, "fisher."), o), out);
        const auto expected = fisher_oracle(f, c, normalize, 1e-6);
        for (std::size_t e = 0; e < f.n; ++e)
        {
            REQUIRE(out[e] == Approx(expected[e]).margin(1e-6).epsilon(1e-5));
        }
    }
}

TEST_CASE("Fisher merging with equal Fishers is the weighted average", "[fisher][invariant]")
{
    fisher_fixture f(2049, 4);
    for (auto& fi : f.fishers)
    {
        fi = f.fishers[0];
    }
    const std::vector<double> c{1.0, 2.0, 3.0, 4.0};
    for (auto type : {dtype::float32, dtype::bfloat16})
    {
        std::vector<xmerge_test::buffer> models, fishers;
        for (std::size_t i = 0; i < 4; ++i)
        {
            models.emplace_back(type, f.models[i]);
            fishers.emplace_back(type, f.fishers[i]);
        }
        expression_list<input_node> m, fi;
        for (std::size_t i = 0; i < 4; ++i)
        {
            m.push_back(models[i].leaf());
            fi.push_back(fishers[i].leaf());
        }
        fisher_options o;
        o.weights = c;
        std::vector<float> out;
        evaluate(fisher_merging(m, fi, o), out);
        std::vector<std::vector<float>> rounded;
        for (const auto& b : models)
        {
            rounded.push_back(b.values());
        }
        for (std::size_t e = 0; e < f.n; ++e)
        {
            const double avg = (1.0 * rounded[0][e] + 2.0 * rounded[1][e] + 3.0 * rounded[2][e] + 4.0 * rounded[3][e]) / 10.0;
            REQUIRE(out[e] == Approx(avg).margin(2e-6));
        }
    }
}

TEST_CASE("Fisher merging agrees with the oracle for every dtype mix, size and thread count", "[fisher][simd]")
{
    // uniform dtypes take the typed loop, mixed ones the generic packet path
    const std::vector<std::pair<std::vector<dtype>, std::vector<dtype>>> mixes{
        {{dtype::float32, dtype::float32, dtype::float32}, {dtype::float32, dtype::float32, dtype::float32}},
        {{dtype::bfloat16, dtype::bfloat16, dtype::bfloat16}, {dtype::float16, dtype::float16, dtype::float16}},
        {{dtype::float16, dtype::float16, dtype::float16}, {dtype::bfloat16, dtype::bfloat16, dtype::bfloat16}},
        {{dtype::float32, dtype::bfloat16, dtype::float16}, {dtype::float32, dtype::float32, dtype::float32}},
        {{dtype::bfloat16, dtype::bfloat16, dtype::bfloat16}, {dtype::float32, dtype::bfloat16, dtype::float32}},
    };
    const std::vector<double> c{0.5, 0.3, 0.2};
    fisher_options o;
    o.weights = {0.5, 0.3, 0.2};
    o.normalize = false;
    for (std::size_t n : xmerge_test::odd_sizes())
    {
        fisher_fixture f(n, 3);
        for (const auto& mix : mixes)
        {
            std::vector<xmerge_test::buffer> models, fishers;
            expression_list<input_node> m, fi;
            for (std::size_t i = 0; i < 3; ++i)
            {
                models.emplace_back(mix.first[i], f.models[i]);
                fishers.emplace_back(mix.second[i], f.fishers[i]);
            }
            fisher_fixture rounded(n, 3);
            for (std::size_t i = 0; i < 3; ++i)
            {
                m.push_back(models[i].leaf());
                fi.push_back(fishers[i].leaf());
                rounded.models[i] = models[i].values();
                rounded.fishers[i] = fishers[i].values();
            }
            const auto expected = fisher_oracle(rounded, c, false, 1e-6);
            std::vector<float> one, two;
            evaluate(fisher_merging(m, fi, o), one, eval_options{1});
            evaluate(fisher_merging(m, fi, o), two, eval_options{2, nullptr, 64});
            REQUIRE(one.size() == n);
            CHECK(xmerge_test::same_bits(one, two));
            for (std::size_t e = 0; e < n; ++e)
            {
                REQUIRE(one[e] == Approx(expected[e]).margin(1e-6).epsilon(1e-5));
            }
        }
    }
}

TEST_CASE("Fisher weights concentrate the merge where one model is certain", "[fisher]")
{
    // Model 0 has a large Fisher on the first half, model 1 on the second.
    const std::size_t n = 100;
    std::vector<float> x0(n, 1.0f), x1(n, -1.0f), f0(n), f1(n);
    for (std::size_t e = 0; e < n; ++e)
    {
        f0[e] = e < n / 2 ? 1e3f : 1e-3f;
        f1[e] = e < n / 2 ? 1e-3f : 1e3f;
    }
    fisher_options o;
    o.normalize = false;
    std::vector<float> out;
    const std::vector<std::vector<float>> xs{x0, x1};
    const std::vector<std::vector<float>> fs{f0, f1};
    evaluate(fisher_merging(inputs(xs), inputs(fs), o), out);
    CHECK(out[0] == Approx(1.0).margin(1e-5));
    CHECK(out[n - 1] == Approx(-1.0).margin(1e-5));
}

TEST_CASE("Fisher norms over a whole model normalize every tensor alike", "[fisher][registry]")
{
    // A two-tensor model: the registry derives norms from one tensor unless
    // the whole-model statistic is supplied.
    fisher_fixture a(300, 2), b(500, 2);
    const method_registry& registry = xmerge_test::builtin_registry();
    REQUIRE(registry.contains("fisher"));
    const method_info& info = registry.find("fisher");

    std::vector<method_inputs> tensors(2);
    const fisher_fixture* parts[] = {&a, &b};
    for (std::size_t t = 0; t < 2; ++t)
    {
        tensors[t].tensor = "tensor." + std::to_string(t);
        tensors[t].models = inputs(parts[t]->models);
        tensors[t].extra["fisher"] = inputs(parts[t]->fishers, "fisher.");
    }
    const auto stats = compute_model_statistics(info, tensors);
    REQUIRE(stats.count("fisher_norm") == 1);
    const auto norms = fisher_norms({{as_tensor(a.fishers[0]), as_tensor(b.fishers[0])}, {as_tensor(a.fishers[1]), as_tensor(b.fishers[1])}});
    REQUIRE(stats.at("fisher_norm").size() == 2);
    for (std::size_t i = 0; i < 2; ++i)
    {
        double s = 0.0;
        for (float v : a.fishers[i])
        {
            s += static_cast<double>(v) * v;
        }
        for (float v : b.fishers[i])
        {
            s += static_cast<double>(v) * v;
        }
        CHECK(stats.at("fisher_norm")[i] == Approx(std::sqrt(s)).epsilon(1e-6));
        CHECK(norms[i] == Approx(std::sqrt(s)).epsilon(1e-6));
    }

    // With the whole-model norms, tensor 0 is merged with coefficients c_i / (n_i + eps).
    method_inputs in = tensors[0];
    in.model_statistics = stats;
    const std::vector<double> c{0.6, 0.4};
    std::vector<float> by_name, direct;
    evaluate(registry.build("fisher", in, {{"weight", c}, {"normalize_fisher_weight", true}, {"minimal_fisher_weight", 1e-6}}), by_name);
    fisher_options o;
    o.weights = {c[0] / (stats.at("fisher_norm")[0] + 1e-6), c[1] / (stats.at("fisher_norm")[1] + 1e-6)};
    o.normalize = false;
    evaluate(fisher_merging(in.models, in.extra["fisher"], o), direct);
    for (std::size_t e = 0; e < a.n; ++e)
    {
        REQUIRE(by_name[e] == Approx(direct[e]).margin(1e-6));
    }

    // Without them, this tensor's own norms are used: the same as fisher_merging's default.
    method_inputs alone = tensors[0];
    evaluate(registry.build("fisher", alone, {{"weight", c}}), by_name);
    fisher_options own;
    own.weights = c;
    evaluate(fisher_merging(alone.models, alone.extra["fisher"], own), direct);
    for (std::size_t e = 0; e < a.n; ++e)
    {
        REQUIRE(by_name[e] == Approx(direct[e]).margin(1e-6));
    }
}

TEST_CASE("Fisher merging rejects what it cannot use", "[fisher][errors]")
{
    fisher_fixture f(64, 2);
    const auto models = inputs(f.models);
    const auto fishers = inputs(f.fishers, "fisher.");
    fisher_options o;
    CHECK_NOTHROW(fisher_merging(models, fishers, o));

    const std::vector<std::vector<float>> one_fisher{f.fishers[0]};
    CHECK_THROWS_WITH(fisher_merging(models, inputs(one_fisher, "fisher."), o), Catch::Contains("fisher") && Catch::Contains("expected 2"));
    const std::vector<std::vector<float>> short_fishers{f.fishers[0], std::vector<float>(10, 1.0f)};
    CHECK_THROWS_AS(fisher_merging(models, inputs(short_fishers, "fisher."), o), shape_error);

    o.weights = {1.0, -1.0};
    CHECK_THROWS_WITH(fisher_merging(models, fishers, o), Catch::Contains("weight") && Catch::Contains("non-negative"));
    o.weights = {0.0, 0.0};
    CHECK_THROWS_WITH(fisher_merging(models, fishers, o), Catch::Contains("all model coefficients are zero"));
    o.weights = {1.0, std::nan("")};
    CHECK_THROWS_AS(fisher_merging(models, fishers, o), parameter_error);
    o.weights = {1.0};
    CHECK_THROWS_WITH(fisher_merging(models, fishers, o), Catch::Contains("expected 2"));
    o.weights = {};
    o.minimal_fisher_weight = 0.0;
    CHECK_THROWS_WITH(fisher_merging(models, fishers, o), Catch::Contains("minimal_fisher_weight"));
    o.minimal_fisher_weight = 1e-6;
    o.fisher_norms = {1.0};
    CHECK_THROWS_WITH(fisher_merging(models, fishers, o), Catch::Contains("fisher_norms"));
    o.fisher_norms = {1.0, INFINITY};
    CHECK_THROWS_AS(fisher_merging(models, fishers, o), parameter_error);
    CHECK_THROWS_AS(fisher_merging(expression_list<input_node>{}, fishers, {}), parameter_error);

    // the registry needs the Fisher tensors
    method_inputs in;
    in.tensor = "w";
    in.models = models;
    CHECK_THROWS_WITH(xmerge_test::builtin_registry().build("fisher", in, {}), Catch::Contains("fisher") && Catch::Contains("w"));
}

TEST_CASE("accumulate_squares agrees with its scalar twin at every size", "[fisher][accumulator][simd]")
{
    for (std::size_t n : xmerge_test::odd_sizes())
    {
        const auto g = xmerge_test::random_floats(n, 3);
        const auto start = xmerge_test::random_floats(n, 4, 0.0f, 1.0f);
        auto simd_f = start;
        auto twin_f = start;
        accumulate_squares(simd_f.data(), g.data(), n, 0.5f);
        accumulate_squares<float>(twin_f.data(), g.data(), n, 0.5f);
        for (std::size_t i = 0; i < n; ++i)
        {
            // one fused multiply-add; without FMA instructions the batch rounds the product too
            const double terms = 0.5 * g[i] * g[i] + start[i];
            REQUIRE(twin_f[i] == std::fma(0.5f * g[i], g[i], start[i]));
            REQUIRE(std::fabs(simd_f[i] - twin_f[i]) <= std::ldexp(terms, -23));
        }
    }
}

TEST_CASE("diagonal_fisher averages squared gradients over examples", "[fisher][accumulator]")
{
    const std::size_t n0 = 3000, n1 = 17;
    std::vector<float> f0(n0, 7.0f), f1(n1, 7.0f);  // reset by the constructor
    diagonal_fisher fisher({as_tensor(f0, "w"), as_tensor(f1, "b")});
    CHECK(f0[5] == 0.0f);

    std::vector<double> e0(n0, 0.0), e1(n1, 0.0);
    for (std::uint32_t step = 0; step < 5; ++step)
    {
        const auto g0 = xmerge_test::random_floats(n0, 100 + step);
        const auto g1 = xmerge_test::random_floats(n1, 200 + step);
        // bfloat16 gradients, as mixed-precision training produces them
        xmerge_test::buffer b1(dtype::bfloat16, g1);
        const auto g1_rounded = b1.values();
        fisher.add({as_tensor(g0), b1.cref()}, 2, 1.5);
        for (std::size_t i = 0; i < n0; ++i)
        {
            e0[i] += 1.5 * g0[i] * g0[i];
        }
        for (std::size_t i = 0; i < n1; ++i)
        {
            e1[i] += 1.5 * g1_rounded[i] * g1_rounded[i];
        }
    }
    CHECK(fisher.examples() == 10);
    fisher.finish();
    CHECK(fisher.finished());
    for (std::size_t i = 0; i < n0; ++i)
    {
        REQUIRE(f0[i] == Approx(e0[i] / 10.0).epsilon(1e-5));
    }
    for (std::size_t i = 0; i < n1; ++i)
    {
        REQUIRE(f1[i] == Approx(e1[i] / 10.0).epsilon(1e-5));
    }
    fisher.finish();  // a second call changes nothing
    CHECK(f0[0] == Approx(e0[0] / 10.0).epsilon(1e-5));

    fisher.reset();
    CHECK(fisher.examples() == 0);
    CHECK(f0[0] == 0.0f);
}

TEST_CASE("diagonal_fisher checks buffers, gradients and its state", "[fisher][accumulator][errors]")
{
    std::vector<float> f(10);
    std::vector<bfloat16> half(10);
    CHECK_THROWS_AS(diagonal_fisher({as_tensor(half, "h")}), layout_error);

    diagonal_fisher fisher({as_tensor(f, "w")});
    CHECK_THROWS_WITH(fisher.finish(), Catch::Contains("no example"));
    std::vector<float> g(10, 1.0f), wrong(11, 1.0f);
    CHECK_THROWS_AS(fisher.add({as_tensor(wrong)}), shape_error);
    CHECK_THROWS_WITH(fisher.add({as_tensor(g), as_tensor(g)}), Catch::Contains("expected 1"));
    CHECK_THROWS_WITH(fisher.add({as_tensor(g)}, 1, -1.0), Catch::Contains("scale"));

    std::vector<float> bad(10, 1.0f);
    bad[3] = std::nanf("");
    fisher.add({as_tensor(bad)});
    CHECK_THROWS_WITH(fisher.finish(), Catch::Contains("w") && Catch::Contains("not finite"));

    fisher.reset();
    fisher.add({as_tensor(g)});
    fisher.finish();
    CHECK_THROWS_WITH(fisher.add({as_tensor(g)}), Catch::Contains("reset"));
}
