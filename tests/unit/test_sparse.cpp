// Rank masks, random masks, rescaling, sign election and the sparse methods
// (TIES, DARE, Breadcrumbs, DELLA, SCE, MagMax) against oracles and invariants.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "test_support.hpp"
#include "registry_support.hpp"

using namespace xmerge;

namespace
{
    /// Indices ordered by |v| descending, lower index first among equal magnitudes, NaN first.
    std::vector<std::size_t> magnitude_order(const std::vector<float>& v)
    {
        std::vector<std::size_t> idx(v.size());
        std::iota(idx.begin(), idx.end(), std::size_t{0});
        const auto key = [&](std::size_t i) { return std::isnan(v[i]) ? std::numeric_limits<float>::infinity() * 2 : std::fabs(v[i]); };
        std::stable_sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b)
                         {
                             const float ka = key(a), kb = key(b);
                             if (std::isnan(v[a]) != std::isnan(v[b]))
                             {
                                 return std::isnan(v[a]);
                             }
                             return ka > kb;
                         });
        return idx;
    }

    std::vector<float> rank_range_oracle(const std::vector<float>& v, std::size_t first, std::size_t last)
    {
        const auto order = magnitude_order(v);
        std::vector<float> mask(v.size(), 0.0f);
        for (std::size_t r = first; r < std::min(last, v.size()); ++r)
        {
            mask[order[r]] = 1.0f;
        }
        return mask;
    }

    struct family
    {
        std::size_t n;
        std::vector<float> base;
        std::vector<std::vector<float>> models;

        family(std::size_t size, std::size_t k, std::uint32_t seed) : n(size), base(xmerge_test::random_floats(size, seed))
        {
            for (std::size_t m = 0; m < k; ++m)
            {
                auto x = xmerge_test::random_floats(size, seed + 1 + static_cast<std::uint32_t>(m), -0.1f, 0.1f);
                for (std::size_t i = 0; i < size; ++i)
                {
                    x[i] += base[i];
                }
                models.push_back(std::move(x));
            }
        }

        input_node base_leaf() const { return input(base, "base"); }
        expression_list<input_node> leaves() const { return inputs(models); }
        std::vector<float> delta(std::size_t k) const
        {
            std::vector<float> d(n);
            for (std::size_t i = 0; i < n; ++i)
            {
                d[i] = models[k][i] - base[i];
            }
            return d;
        }
    };
}

TEST_CASE("rank masks keep exactly the requested ranks", "[sparse][select]")
{
    for (std::size_t n : {0u, 1u, 5u, 17u, 1000u, 70001u, 300000u})
    {
        auto v = xmerge_test::random_floats(n, 3, -2.0f, 2.0f);
        for (std::size_t i = 0; i + 7 < n; i += 7)
        {
            v[i + 3] = -v[i];  // equal magnitudes, opposite signs
        }
        for (std::size_t i = 11; i < n; i += 101)
        {
            v[i] = 0.5f;  // many exact ties
        }
        const auto x = input(v, "v");
        for (double q : {0.0, 0.01, 0.3, 0.5, 0.97, 1.0})
        {
            const auto k = static_cast<std::size_t>(q * static_cast<double>(n));
            std::vector<float> got;
            evaluate(top_k_mask(x, static_cast<double>(k)), got, {2});
            INFO("n = " << n << ", k = " << k);
            REQUIRE(got == rank_range_oracle(v, 0, k));
        }
        const std::size_t first = n / 10, last = n - n / 5;
        std::vector<float> got;
        evaluate(rank_range_mask(x, static_cast<double>(first), static_cast<double>(last)), got);
        REQUIRE(got == rank_range_oracle(v, first, last));
    }
}

TEST_CASE("rank masks handle structured data, NaN and constant tensors", "[sparse][select]")
{
    const std::size_t n = 400000;
    // magnitudes growing along the tensor: chunk samples are far from uniform
    std::vector<float> growing(n);
    for (std::size_t i = 0; i < n; ++i)
    {
        growing[i] = static_cast<float>(i % 1000) * (i % 2 ? 1.0f : -1.0f) + static_cast<float>(i) * 1e-3f;
    }
    std::vector<float> got;
    evaluate(top_k_mask(input(growing), 12345.0), got, {2});
    REQUIRE(got == rank_range_oracle(growing, 0, 12345));

    std::vector<float> constant(n, -3.0f);
    evaluate(top_k_mask(input(constant), 99999.0), got);
    REQUIRE(got == rank_range_oracle(constant, 0, 99999));  // the lowest indices

    std::vector<float> with_nan = xmerge_test::random_floats(1000, 5);
    with_nan[10] = std::numeric_limits<float>::quiet_NaN();
    with_nan[20] = std::numeric_limits<float>::infinity();
    evaluate(top_k_mask(input(with_nan), 2.0), got);
    CHECK(got[10] == 1.0f);  // NaN ranks first, as in a descending sort
    CHECK(got[20] == 1.0f);
    CHECK(std::accumulate(got.begin(), got.end(), 0.0f) == 2.0f);
}

TEST_CASE("the selection is the same for every thread count and chunk size", "[sparse][select][threads]")
{
    const auto v = xmerge_test::random_floats(500000, 8);
    std::vector<float> reference;
    evaluate(top_k_mask(input(v), 123456.0), reference, {1});
    for (std::size_t chunk : {64u, 2048u, 8192u})
    {
        for (std::size_t threads : {1u, 2u, 3u})
        {
            eval_options o;
            o.threads = threads;
            o.chunk_size = chunk;
            std::vector<float> got;
            evaluate(top_k_mask(input(v), 123456.0), got, o);
            REQUIRE(xmerge_test::same_bits(got, reference));
        }
    }
}

TEST_CASE("Bernoulli masks keep a binomial fraction, reproducibly", "[sparse][random]")
{
    const std::size_t n = 1 << 20;
    const std::vector<float> ones(n, 1.0f);
    const auto like = input(ones, "layers.0.w");
    for (double p : {0.1, 0.5, 0.9})
    {
        std::vector<float> mask;
        evaluate(bernoulli_mask(like, p, simd::make_random_key(42, simd::hash_name("layers.0.w"), 0)), mask, {2});
        const double kept = std::accumulate(mask.begin(), mask.end(), 0.0);
        const double mean = p * static_cast<double>(n);
        const double sigma = std::sqrt(static_cast<double>(n) * p * (1.0 - p));
        INFO("p = " << p << ", kept = " << kept);
        CHECK(std::fabs(kept - mean) < 6.0 * sigma);
        // no long runs of equal decisions hiding a broken stream: half the pairs of neighbours differ for p = 0.5
        if (p == 0.5)
        {
            std::size_t changes = 0;
            for (std::size_t i = 1; i < n; ++i)
            {
                changes += mask[i] != mask[i - 1];
            }
            CHECK(std::fabs(static_cast<double>(changes) - 0.5 * n) < 6.0 * std::sqrt(0.25 * n));
        }
    }

    const auto key = simd::make_random_key(7, 99, 1);
    std::vector<float> reference;
    evaluate(bernoulli_mask(like, 0.3, key), reference, {1});
    for (std::size_t chunk : {64u, 4096u})
    {
        eval_options o;
        o.threads = 2;
        o.chunk_size = chunk;
        std::vector<float> got;
        evaluate(bernoulli_mask(like, 0.3, key), got, o);
        REQUIRE(xmerge_test::same_bits(got, reference));
    }
    std::vector<float> other;
    evaluate(bernoulli_mask(like, 0.3, simd::make_random_key(8, 99, 1)), other);
    CHECK_FALSE(other == reference);  // another seed
    evaluate(bernoulli_mask(like, 0.3, simd::make_random_key(7, 100, 1)), other);
    CHECK_FALSE(other == reference);  // another tensor
    evaluate(bernoulli_mask(like, 0.3, simd::make_random_key(7, 99, 2)), other);
    CHECK_FALSE(other == reference);  // another model
}

TEST_CASE("DARE drops at random and rescales exactly", "[sparse][dare]")
{
    const family f(200003, 2, 11);
    const double p = 0.25;
    for (bool elect : {false, true})
    {
        // one model, lambda 1, weight 1: the output minus the base is the rescaled, masked task vector
        gta_options o = dare_options({1.0}, {p}, elect, 5, "w", rescale_kind::density);
        expression_list<input_node> one;
        one.push_back(f.leaves()[0]);
        std::vector<float> out;
        evaluate(generalized_task_arithmetic(one, f.base_leaf(), o), out, {2});
        const auto d = f.delta(0);
        std::size_t kept = 0;
        for (std::size_t i = 0; i < f.n; ++i)
        {
            const float merged = out[i] - f.base[i];
            if (out[i] != f.base[i])
            {
                ++kept;
                REQUIRE(out[i] == Approx(f.base[i] + d[i] * 4.0).margin(1e-6));
            }
            (void)merged;
        }
        const double sigma = std::sqrt(f.n * p * (1 - p));
        CHECK(std::fabs(static_cast<double>(kept) - p * f.n) < 6.0 * sigma);
    }
}

TEST_CASE("DARE with L1 rescaling keeps each task vector's L1 norm", "[sparse][dare]")
{
    const family f(100000, 1, 12);
    gta_options o = dare_options({1.0}, {0.3}, false, 9, "w", rescale_kind::l1);
    std::vector<float> out;
    evaluate(generalized_task_arithmetic(f.leaves(), f.base_leaf(), o), out);
    double before = 0.0, after = 0.0;
    const auto d = f.delta(0);
    for (std::size_t i = 0; i < f.n; ++i)
    {
        before += std::fabs(d[i]);
        after += std::fabs(static_cast<double>(out[i]) - f.base[i]);
    }
    CHECK(after == Approx(before).epsilon(1e-4));
}

TEST_CASE("density 1 leaves task vectors unchanged", "[sparse][properties]")
{
    const family f(30011, 3, 13);
    std::vector<float> plain;
    evaluate(task_arithmetic(f.leaves(), f.base_leaf(), {0.5, 1.0, -0.25}, {0.8}), plain);
    for (sparsification s : {sparsification::magnitude, sparsification::random, sparsification::outliers, sparsification::ranked_random})
    {
        gta_options o;
        o.weights = {0.5, 1.0, -0.25};
        o.densities = {1.0};
        o.method = s;
        o.rescale = rescale_kind::l1;
        o.lambda = 0.8;
        std::vector<float> got;
        evaluate(generalized_task_arithmetic(f.leaves(), f.base_leaf(), o), got);
        for (std::size_t i = 0; i < f.n; ++i)
        {
            REQUIRE(got[i] == Approx(plain[i]).margin(1e-6));
        }
    }
}

TEST_CASE("TIES with one model is its trimmed task vector", "[sparse][ties]")
{
    const family f(10007, 1, 14);
    std::vector<float> got;
    evaluate(ties(f.leaves(), f.base_leaf(), {0.7}, {0.3}, 1.5), got, {2});
    const auto d = f.delta(0);
    const auto keep = rank_range_oracle(d, 0, static_cast<std::size_t>(0.3 * f.n));
    for (std::size_t i = 0; i < f.n; ++i)
    {
        REQUIRE(got[i] == Approx(f.base[i] + 1.5 * keep[i] * d[i]).margin(1e-6));
    }
}

TEST_CASE("sign election follows its definition", "[sparse][election]")
{
    const std::vector<std::vector<float>> t{{1.0f, -2.0f, 0.0f, 3.0f, -1.0f},
                                            {2.0f, 1.0f, 0.0f, -1.0f, -1.0f},
                                            {-4.0f, 1.5f, 5.0f, -1.0f, 0.0f}};
    const std::vector<double> w{1.0, 2.0, 0.5};
    const auto terms = inputs(t);
    std::vector<float> out;
    // sum election, mergekit divisor: element 0: votes 1 + 4 - 2 = 3 > 0 -> models 0, 1 agree
    evaluate(elected_sum(terms, w, {sign_consensus::sum, merge_divisor::weights, true}), out);
    CHECK(out[0] == Approx((1.0 + 4.0) / 3.0));
    CHECK(out[1] == Approx((2.0 + 0.75) / 2.5));  // votes -2 + 2 + 0.75 > 0: models 1, 2
    CHECK(out[2] == Approx(2.5 / 0.5));           // zeros never agree
    CHECK(out[3] == Approx(3.0 / 1.0));           // 3 - 2 - 0.5 > 0
    CHECK(out[4] == Approx(-3.0 / 3.0));          // ties of the vote go to +, but here it is negative
    // count election: element 3 has one positive, two negative entries
    evaluate(elected_sum(terms, w, {sign_consensus::count, merge_divisor::count, true}), out);
    CHECK(out[3] == Approx((-2.0 - 0.5) / 2.0));
    // no consensus, divided by the sum of weights
    evaluate(elected_sum(terms, w, {sign_consensus::none, merge_divisor::weights, true}), out);
    CHECK(out[0] == Approx((1.0 + 4.0 - 2.0) / 3.5));
    // election on unweighted entries (SCE): element 0 votes 1 + 2 - 4 < 0
    evaluate(elected_sum(terms, w, {sign_consensus::sum, merge_divisor::none, false}), out);
    CHECK(out[0] == Approx(-2.0));
}

TEST_CASE("Breadcrumbs keeps the top entries when gamma * n < 1", "[sparse][breadcrumbs]")
{
    const family f(50, 1, 15);
    gta_options o = breadcrumbs_options({1.0}, {0.5}, {0.01}, false);
    std::vector<float> got;
    evaluate(generalized_task_arithmetic(f.leaves(), f.base_leaf(), o), got);
    const auto d = f.delta(0);
    const auto keep = rank_range_oracle(d, 0, 25);
    for (std::size_t i = 0; i < f.n; ++i)
    {
        REQUIRE(got[i] == Approx(f.base[i] + keep[i] * d[i]).margin(1e-7));
    }
}

TEST_CASE("DELLA keeps larger magnitudes more often and reproducibly", "[sparse][della]")
{
    const family f(256 * 512, 1, 16);  // 256 rows of 512
    xmerge::tensor_ref base_ref = as_tensor(const_cast<std::vector<float>&>(f.base), {256, 512}, "base");
    xmerge::tensor_ref model_ref = as_tensor(const_cast<std::vector<float>&>(f.models[0]), {256, 512}, "model.0");
    expression_list<input_node> models;
    models.push_back(input(model_ref));
    gta_options o = della_options({1.0}, {0.5}, {0.4}, false, 3, "w");
    o.rescale = rescale_kind::none;
    std::vector<float> a, b;
    evaluate(generalized_task_arithmetic(models, input(base_ref), o), a, {1});
    evaluate(generalized_task_arithmetic(models, input(base_ref), o), b, {2});
    REQUIRE(xmerge_test::same_bits(a, b));
    // per row, the top half by magnitude keeps ~ (0.5 + 0.2) of its entries, the bottom half ~ (0.5 - 0.2)
    const auto d = f.delta(0);
    double top = 0.0, bottom = 0.0, total = 0.0;
    for (std::size_t r = 0; r < 256; ++r)
    {
        std::vector<float> row(d.begin() + r * 512, d.begin() + (r + 1) * 512);
        const auto order = magnitude_order(row);
        for (std::size_t rank = 0; rank < 512; ++rank)
        {
            const std::size_t i = r * 512 + order[rank];
            const double kept = a[i] != f.base[i] ? 1.0 : 0.0;
            (rank < 256 ? top : bottom) += kept;
            total += kept;
        }
    }
    const double n = 256.0 * 512.0;
    CHECK(std::fabs(total - 0.5 * n) < 6.0 * std::sqrt(n * 0.25));
    CHECK(top / (n / 2) == Approx(0.7).margin(0.02));
    CHECK(bottom / (n / 2) == Approx(0.3).margin(0.02));
    o.epsilons = {0.6};
    CHECK_THROWS_AS(generalized_task_arithmetic(models, input(base_ref), o), parameter_error);
}

TEST_CASE("SCE, NearSwap and MagMax match direct formulas", "[sparse][sce][nearswap][magmax]")
{
    const family f(20011, 3, 17);
    std::vector<std::vector<float>> d;
    for (std::size_t k = 0; k < 3; ++k)
    {
        d.push_back(f.delta(k));
    }
    for (double topk : {1.0, 0.3})
    {
        std::vector<float> got;
        evaluate(sce(f.leaves(), f.base_leaf(), topk), got, {2});
        // oracle: mergekit's SCE in double precision
        std::vector<double> var(f.n);
        std::size_t nonzero = 0;
        for (std::size_t i = 0; i < f.n; ++i)
        {
            double mean = 0.0, v = 0.0;
            for (const auto& dk : d)
            {
                mean += dk[i] / 3.0;
            }
            for (const auto& dk : d)
            {
                v += (dk[i] - mean) * (dk[i] - mean) / 3.0;
            }
            var[i] = v;
            nonzero += v != 0.0;
        }
        std::vector<float> mask(f.n, 1.0f);
        if (topk < 1.0)
        {
            std::vector<float> varf(var.begin(), var.end());
            std::vector<float> variance_f(f.n);
            evaluate(variance(transform(f.leaves(), [&](const input_node& m) { return m - f.base_leaf(); })), variance_f);
            mask = rank_range_oracle(variance_f, 0, static_cast<std::size_t>(std::floor(topk * nonzero)));
        }
        std::vector<double> w(3, 0.0);
        double wsum = 0.0;
        for (std::size_t k = 0; k < 3; ++k)
        {
            for (std::size_t i = 0; i < f.n; ++i)
            {
                w[k] += mask[i] * d[k][i] * mask[i] * d[k][i] / f.n;
            }
            wsum += w[k];
        }
        for (double& x : w)
        {
            x /= wsum;
        }
        for (std::size_t i = 0; i < f.n; ++i)
        {
            double vote = 0.0;
            for (std::size_t k = 0; k < 3; ++k)
            {
                vote += mask[i] * d[k][i];
            }
            double mixed = 0.0, div = 0.0;
            for (std::size_t k = 0; k < 3; ++k)
            {
                const double e = mask[i] * d[k][i];
                if ((vote >= 0 && e > 0) || (vote < 0 && e < 0))
                {
                    mixed += w[k] * e;
                    div += w[k];
                }
            }
            const double expected = f.base[i] + (div == 0.0 ? mixed : mixed / div);
            REQUIRE(got[i] == Approx(expected).margin(2e-6));
        }
    }

    std::vector<float> swapped;
    expression_list<input_node> one;
    one.push_back(f.leaves()[0]);
    evaluate(nearswap(f.base_leaf(), one[0], 0.05), swapped);
    for (std::size_t i = 0; i < f.n; ++i)
    {
        const double dist = std::fabs(f.base[i] - f.models[0][i]);
        const double w = dist > 0.05 ? 0.05 / dist : 1.0;
        REQUIRE(swapped[i] == Approx(w * f.models[0][i] + (1 - w) * f.base[i]).margin(1e-6));
    }

    std::vector<float> mm;
    evaluate(magmax(f.leaves(), f.base_leaf(), 0.5), mm);
    for (std::size_t i = 0; i < f.n; ++i)
    {
        float best = d[0][i];
        for (std::size_t k = 1; k < 3; ++k)
        {
            if (std::fabs(d[k][i]) > std::fabs(best))
            {
                best = d[k][i];
            }
        }
        REQUIRE(mm[i] == Approx(f.base[i] + 0.5 * best).margin(1e-6));
    }
}

TEST_CASE("sparse methods reject parameters they cannot use", "[sparse][errors]")
{
    const family f(100, 2, 18);
    CHECK_THROWS_WITH(ties(f.leaves(), f.base_leaf(), {1, 1}, {0.001}), Catch::Contains("density") && Catch::Contains("keeps no element"));
    CHECK_THROWS_AS(ties(f.leaves(), f.base_leaf(), {1, 1}, {-0.5}), parameter_error);
    CHECK_THROWS_AS(ties(f.leaves(), f.base_leaf(), {1, 1}, {0.5, 0.5, 0.5}), parameter_error);
    CHECK_THROWS_AS(generalized_task_arithmetic(f.leaves(), f.base_leaf(), breadcrumbs_options({1, 1}, {0.5}, {1.0}, false)), parameter_error);
    CHECK_THROWS_AS(nearswap(f.base_leaf(), f.leaves()[0], 0.0), parameter_error);
    const method_registry& r = xmerge_test::builtin_registry();
    method_inputs in;
    in.tensor = "t";
    in.base = f.base_leaf();
    in.models = f.leaves();
    CHECK_THROWS_WITH(r.build("ties", in, {{"weight", 1.0}, {"rescale_norm", std::string("l3")}}), Catch::Contains("l3"));
    CHECK_THROWS_WITH(r.build("slerp", in, {{"t", 0.5}}), Catch::Contains("exactly one model"));
    CHECK_THROWS_WITH(r.build("nearswap", in, {{"t", 0.5}}), Catch::Contains("exactly one model"));
}

TEST_CASE("a shared pruned task vector is selected once", "[sparse][shared]")
{
    const family f(10000, 1, 19);
    const auto d = f.leaves()[0] - f.base_leaf();
    const auto pruned = shared(d * top_k_mask(d, 100.0));
    const auto e = pruned * (norm_l1(d) / norm_l1(pruned));
    detail::statistics_registry r;
    auto ev = detail::make_evaluator(e);
    ev.collect(r);
    std::size_t selections = 0, total = 0;
    for (std::size_t level = 1; level <= r.levels(); ++level)
    {
        for (auto* s : r.level(level))
        {
            ++total;
            selections += dynamic_cast<detail::evaluator<std::decay_t<decltype(top_k_mask(d, 100.0))>>*>(s) != nullptr;
        }
    }
    CHECK(selections == 1);
    CHECK(total == 3);  // the selection and the two L1 norms
}
