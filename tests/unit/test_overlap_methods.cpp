// RAM, RAM+ (tensor-local), Arcee Fusion and PCB merging against scalar
// oracles written from their definitions, their kernels against scalar
// twins, and the registry entries.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "test_support.hpp"
#include "registry_support.hpp"

using namespace xmerge;
using xmerge_test::buffer;

namespace
{
    /// K models that change a random subset of the base's entries by +-10^u, u in [lo, hi] (some below epsilon).
    struct sparse_changes
    {
        std::vector<float> base;
        std::vector<std::vector<float>> models;

        sparse_changes(std::size_t n, std::size_t k, std::uint32_t seed, double share = 0.4, double lo = -6.5, double hi = -1.5)
        {
            std::mt19937 gen(seed);
            std::uniform_real_distribution<double> u(0.0, 1.0);
            base = xmerge_test::random_floats(n, seed + 1);
            for (std::size_t m = 0; m < k; ++m)
            {
                std::vector<float> x = base;
                for (auto& v : x)
                {
                    if (u(gen) < share)
                    {
                        const double size = std::pow(10.0, lo + (hi - lo) * u(gen));
                        v = static_cast<float>(v + (u(gen) < 0.5 ? -size : size));
                    }
                }
                models.push_back(std::move(x));
            }
        }
    };

    /// mergekit's RAM / RAM+ in float32: term_i = d_i lambda_i alone, d_i / c shared, summed in model order.
    std::vector<float> ram_oracle(const std::vector<float>& base, const std::vector<std::vector<float>>& models, double epsilon, bool plus, double r = 0.1,
                                  double alpha = 0.2)
    {
        const std::size_t n = base.size(), k = models.size();
        const auto eps = static_cast<float>(epsilon);
        std::vector<int> count(n, 0);
        for (std::size_t i = 0; i < n; ++i)
        {
            for (std::size_t m = 0; m < k; ++m)
            {
                count[i] += std::fabs(models[m][i] - base[i]) > eps;
            }
        }
        std::vector<float> lambda(k, 1.0f);
        if (plus)
        {
            for (std::size_t m = 0; m < k; ++m)
            {
                std::uint64_t s = 0, u = 0;
                for (std::size_t i = 0; i < n; ++i)
                {
                    const bool active = std::fabs(models[m][i] - base[i]) > eps;
                    s += active && count[i] > 1;
                    u += active && count[i] == 1;
                }
                const volatile float rho = static_cast<float>(s) / std::max(static_cast<float>(u), eps);
                const volatile float scaled = static_cast<float>(r) * std::min(std::max(static_cast<float>(rho), 0.0f), static_cast<float>(alpha));
                lambda[m] = 1.0f + scaled;
            }
        }
        std::vector<float> out(n);
        for (std::size_t i = 0; i < n; ++i)
        {
            float acc = 0.0f;
            for (std::size_t m = 0; m < k; ++m)
            {
                const float d = models[m][i] - base[i];
                if (std::fabs(d) > eps)
                {
                    const volatile float term = count[i] == 1 ? d * lambda[m] : d / static_cast<float>(count[i]);
                    acc += term;
                }
            }
            out[i] = base[i] + acc;
        }
        return out;
    }

    std::vector<float> widened(dtype type, const std::vector<float>& v) { return buffer(type, v).values(); }

    /// Quantile without interpolation: sorted[floor(q (n - 1))].
    double sorted_at(std::vector<double> v, double q)
    {
        std::sort(v.begin(), v.end());
        return v[static_cast<std::size_t>(std::floor(q * static_cast<double>(v.size() - 1)))];
    }

    /// Arcee Fusion from its definition: rows along the last dimension, sort-based quantiles.
    std::vector<float> arcee_oracle(const std::vector<float>& x, const std::vector<float>& b, std::size_t length)
    {
        const std::size_t n = x.size();
        std::vector<double> importance(n);
        for (std::size_t r = 0; r < n / length; ++r)
        {
            double mx = -INFINITY, mb = -INFINITY, zx = 0, zb = 0, kl = 0;
            for (std::size_t j = r * length; j < (r + 1) * length; ++j)
            {
                mx = std::max(mx, double(x[j]));
                mb = std::max(mb, double(b[j]));
            }
            for (std::size_t j = r * length; j < (r + 1) * length; ++j)
            {
                zx += std::exp(x[j] - mx);
                zb += std::exp(b[j] - mb);
            }
            for (std::size_t j = r * length; j < (r + 1) * length; ++j)
            {
                const double p = std::exp(x[j] - mx) / zx + 1e-8, q = std::exp(b[j] - mb) / zb + 1e-8;
                kl += p * std::log(p / q);
            }
            for (std::size_t j = r * length; j < (r + 1) * length; ++j)
            {
                importance[j] = std::fabs(double(x[j]) - double(b[j])) * kl;
            }
        }
        const double threshold = sorted_at(importance, 0.5) + 1.5 * (sorted_at(importance, 0.75) - sorted_at(importance, 0.25));
        std::vector<float> out(n);
        for (std::size_t i = 0; i < n; ++i)
        {
            out[i] = importance[i] >= threshold ? b[i] + (x[i] - b[i]) : b[i];
        }
        return out;
    }

    /// PCB merging transcribed from the paper's steps, in double, with sorts.
    std::vector<double> pcb_oracle(const std::vector<float>& base, const std::vector<std::vector<float>>& models, const pcb_options& o)
    {
        const std::size_t n = base.size(), k = models.size();
        const auto at = [&](double x) { return static_cast<std::size_t>(std::min<double>(std::max(0.0, std::trunc(x)), double(n - 1))); };
        std::vector<std::vector<double>> tau(k, std::vector<double>(n));
        std::vector<double> sum(n, 0.0);
        for (std::size_t m = 0; m < k; ++m)
        {
            for (std::size_t i = 0; i < n; ++i)
            {
                tau[m][i] = static_cast<float>(models[m][i] - base[i]);
                sum[i] += tau[m][i];
            }
        }
        const auto norm = [](std::vector<double> v)
        {
            const double lo = *std::min_element(v.begin(), v.end()), hi = *std::max_element(v.begin(), v.end());
            for (auto& x : v)
            {
                x = hi > lo ? (x - lo) / (hi - lo) : 0.0;
            }
            return v;
        };
        std::vector<double> num(n, 0.0), den(n, 0.0);
        for (std::size_t m = 0; m < k; ++m)
        {
            std::vector<double> a(n), sorted(n);
            for (std::size_t i = 0; i < n; ++i)
            {
                sorted[i] = std::fabs(tau[m][i]);
            }
            std::sort(sorted.begin(), sorted.end());
            const double lo = sorted[at(n * o.min_ratio)], hi = sorted[at(n * (1.0 - o.max_ratio) - 1.0)];
            for (std::size_t i = 0; i < n; ++i)
            {
                a[i] = std::min(std::max(std::fabs(tau[m][i]), lo), hi);
            }
            const std::vector<double> s = norm(a);
            std::vector<double> score(n);
            for (std::size_t i = 0; i < n; ++i)
            {
                score[i] = std::exp(double(k) * s[i] * s[i]) * std::tanh(tau[m][i] * sum[i]);
            }
            sorted = score;
            std::sort(sorted.begin(), sorted.end());
            const double floor_score = sorted[at(n * (1.0 - o.pcb_ratio))];
            for (auto& v : score)
            {
                v = std::max(v, floor_score);
            }
            const std::vector<double> w = norm(score);
            for (std::size_t i = 0; i < n; ++i)
            {
                const double sign = tau[m][i] > 0 ? 1.0 : (tau[m][i] < 0 ? -1.0 : 0.0);
                num[i] += w[i] * sign * a[i];
                den[i] += w[i];
            }
        }
        std::vector<double> out(n);
        for (std::size_t i = 0; i < n; ++i)
        {
            out[i] = base[i] + o.scaling_factor * num[i] / std::max(den[i], 1e-12);
        }
        return out;
    }

    eval_options threads(std::size_t t)
    {
        eval_options o;
        o.threads = t;
        o.chunk_size = 256;
        o.chunks_per_task = 1;
        return o;
    }
}

TEST_CASE("active_counts matches its scalar twin and a direct count", "[overlap][kernels]")
{
    for (std::size_t n : xmerge_test::odd_sizes())
    {
        const sparse_changes data(n, 3, 11 + static_cast<std::uint32_t>(n));
        std::vector<std::vector<float>> deltas(3, std::vector<float>(n + simd::lanes, 0.0f));
        for (std::size_t m = 0; m < 3; ++m)
        {
            for (std::size_t i = 0; i < n; ++i)
            {
                deltas[m][i] = data.models[m][i] - data.base[i];
            }
            std::fill(deltas[m].begin() + static_cast<std::ptrdiff_t>(n), deltas[m].end(), 1.0f);  // padding past n must not count
        }
        const float* terms[3] = {deltas[0].data(), deltas[1].data(), deltas[2].data()};
        std::uint64_t shared[3] = {}, unique[3] = {}, shared_twin[3] = {}, unique_twin[3] = {}, shared_direct[3] = {}, unique_direct[3] = {};
        kernels::active_counts(terms, 3, n, 1e-5f, shared, unique);
        kernels::scalar::active_counts(terms, 3, n, 1e-5f, shared_twin, unique_twin);
        for (std::size_t i = 0; i < n; ++i)
        {
            int c = 0;
            for (std::size_t m = 0; m < 3; ++m)
            {
                c += std::fabs(deltas[m][i]) > 1e-5f;
            }
            for (std::size_t m = 0; m < 3; ++m)
            {
                const bool active = std::fabs(deltas[m][i]) > 1e-5f;
                shared_direct[m] += active && c > 1;
                unique_direct[m] += active && c == 1;
            }
        }
        for (std::size_t m = 0; m < 3; ++m)
        {
            CHECK(shared[m] == shared_direct[m]);
            CHECK(unique[m] == unique_direct[m]);
            CHECK(shared_twin[m] == shared_direct[m]);
            CHECK(unique_twin[m] == unique_direct[m]);
        }
    }
}

TEST_CASE("select_positions finds sorted positions, NaN last", "[overlap][kernels]")
{
    for (std::size_t n : {std::size_t{1}, std::size_t{2}, std::size_t{17}, std::size_t{1000}, std::size_t{4099}})
    {
        std::vector<float> v = xmerge_test::random_floats(n, 5 + static_cast<std::uint32_t>(n));
        for (std::size_t i = 0; i < n; i += 7)
        {
            v[i] = v[(i * 3) % n];  // ties
        }
        if (n > 10)
        {
            v[3] = NAN;
        }
        std::vector<std::size_t> positions{0, quantile_position(0.25, n), quantile_position(0.5, n), quantile_position(0.75, n), n - 1};
        std::vector<float> a = v, b = v, got(positions.size()), twin(positions.size());
        kernels::select_positions(a.data(), n, positions.data(), positions.size(), got.data());
        kernels::scalar::select_positions(b.data(), n, positions.data(), positions.size(), twin.data());
        CHECK(xmerge_test::same_bits(got, twin));
        std::vector<float> sorted = v;
        std::sort(sorted.begin(), sorted.end(), kernels::ascending_nan_last<float>);
        for (std::size_t j = 0; j < positions.size(); ++j)
        {
            CHECK((std::isnan(got[j]) ? std::isnan(sorted[positions[j]]) : got[j] == sorted[positions[j]]));
        }
        if (n > 10)
        {
            CHECK(std::isnan(got.back()));
        }
    }
}

TEST_CASE("ram gives mergekit's float32 bits: unique changes whole, shared ones averaged", "[overlap][ram]")
{
    for (std::size_t n : xmerge_test::odd_sizes())
    {
        for (std::size_t k : {std::size_t{1}, std::size_t{2}, std::size_t{3}})
        {
            const sparse_changes data(n, k, 100 + static_cast<std::uint32_t>(n + k));
            const auto expected = ram_oracle(data.base, data.models, 1e-5, false);
            for (std::size_t t : {1, 2})
            {
                std::vector<float> got;
                evaluate(ram(inputs(data.models), input(data.base), 1e-5), got, threads(t));
                REQUIRE(xmerge_test::same_bits(got, expected));
            }
        }
    }
}

TEST_CASE("ram with no active model, or no model, is the base", "[overlap][ram]")
{
    const std::size_t n = 1001;
    const sparse_changes small(n, 3, 7, 0.5, -7.0, -5.5);  // every change below epsilon 1e-5
    std::vector<float> got;
    evaluate(ram(inputs(small.models), input(small.base), 1e-5), got);
    CHECK(xmerge_test::same_bits(got, small.base));
    evaluate(ramplus_tl(inputs(small.models), input(small.base), 0.5, 1.0, 1e-5), got);
    CHECK(xmerge_test::same_bits(got, small.base));
    evaluate(ram(expression_list<input_node>{}, input(small.base)), got);
    CHECK(xmerge_test::same_bits(got, small.base));
    // a change exactly epsilon in size is not active (strict >)
    std::vector<float> base(5, 0.0f), x(5, 0.0f);
    x[2] = 0.25f;
    const std::vector<std::vector<float>> single{x};
    evaluate(ram(inputs(single), input(base), 0.25), got);
    CHECK(got[2] == 0.0f);
    CHECK_THROWS_AS(ram(inputs(small.models), input(small.base), -1.0), parameter_error);
    CHECK_THROWS_WITH(ram(inputs(small.models), input(small.base), NAN), Catch::Contains("epsilon"));
}

TEST_CASE("ram and ramplus_tl on bfloat16 inputs", "[overlap][ram]")
{
    const std::size_t n = 2049;
    const sparse_changes data(n, 3, 21, 0.4, -3.0, -1.0);
    const buffer b(dtype::bfloat16, data.base);
    std::vector<buffer> xs;
    std::vector<std::vector<float>> wide;
    expression_list<input_node> models;
    for (const auto& m : data.models)
    {
        xs.emplace_back(dtype::bfloat16, m);
        wide.push_back(xs.back().values());
    }
    for (const auto& x : xs)
    {
        models.push_back(x.leaf());
    }
    std::vector<float> got;
    evaluate(ram(models, b.leaf(), 1e-3), got);
    CHECK(xmerge_test::same_bits(got, ram_oracle(b.values(), wide, 1e-3, false)));
    evaluate(ramplus_tl(models, b.leaf(), 0.5, 1.5, 1e-3), got);
    CHECK(xmerge_test::same_bits(got, ram_oracle(b.values(), wide, 1e-3, true, 0.5, 1.5)));
}

TEST_CASE("ramplus_tl boosts unique changes by each model's overlap ratio", "[overlap][ramplus]")
{
    for (std::size_t n : xmerge_test::odd_sizes())
    {
        const sparse_changes data(n, 3, 300 + static_cast<std::uint32_t>(n));
        for (const auto& [r, alpha] : {std::pair<double, double>{0.1, 0.2}, {0.5, 1.5}, {1.0, 100.0}})
        {
            const auto expected = ram_oracle(data.base, data.models, 1e-5, true, r, alpha);
            for (std::size_t t : {1, 2})
            {
                std::vector<float> got;
                evaluate(ramplus_tl(inputs(data.models), input(data.base), r, alpha, 1e-5), got, threads(t));
                REQUIRE(xmerge_test::same_bits(got, expected));
            }
        }
    }
    // one model never alone: rho = S / epsilon, clamped to alpha
    std::vector<float> base(64, 0.0f), a(64, 0.0f), b(64, 0.0f);
    for (std::size_t i = 0; i < 64; ++i)
    {
        a[i] = i < 32 ? 0.5f : 0.0f;
        b[i] = 0.25f;
    }
    std::vector<float> got;
    const std::vector<std::vector<float>> pair{a, b};
    evaluate(ramplus_tl(inputs(pair), input(base), 1.0, 0.5, 1e-4), got);
    CHECK(got[0] == 0.375f);            // shared: mean of 0.5 and 0.25
    CHECK(got[40] == 0.25f * 1.5f);     // b alone: rho_b = 32 / 32 = 1, clamped to 0.5
    CHECK(overlap_weight(32, 0, 1.0, 0.5, 1e-4) == 1.5f);
    const volatile float boost = 0.1f * 0.1f;  // r * rho, rounded before the addition as in torch
    CHECK(overlap_weight(1, 10, 0.1, 0.2, 1e-5) == 1.0f + boost);
}

TEST_CASE("arcee_fusion keeps the changes whose importance is an outlier", "[overlap][arcee]")
{
    for (const shape_type& shape : {shape_type{257}, shape_type{31, 17}, shape_type{3, 7, 11}, shape_type{1}, shape_type{2, 3}, shape_type{64, 129}})
    {
        const std::size_t n = xmerge::numel(shape);
        const auto b = xmerge_test::random_floats(n, 41);
        auto x = b;
        std::mt19937 gen(43);
        std::uniform_real_distribution<float> u(-1.0f, 1.0f);
        for (auto& v : x)
        {
            v += 0.05f * u(gen) * u(gen) * u(gen);
        }
        const auto expected = arcee_oracle(x, b, shape.back());
        for (std::size_t t : {1, 2})
        {
            std::vector<float> got;
            evaluate(arcee_fusion(input(const_tensor_ref(x.data(), dtype::float32, shape, "x")), input(const_tensor_ref(b.data(), dtype::float32, shape, "b"))), got,
                     threads(t));
            REQUIRE(xmerge_test::same_bits(got, expected));
        }
    }
}

TEST_CASE("arcee_fusion on a 1-D tensor masks by |x - base| alone", "[overlap][arcee]")
{
    const std::size_t n = 1000;
    const auto b = xmerge_test::random_floats(n, 51);
    std::vector<float> x = b;
    for (std::size_t i = 0; i < n; ++i)
    {
        x[i] += 1e-3f * static_cast<float>(i % 97) * (i % 2 ? 1.0f : -1.0f);
        // Changes spread evenly have no outliers (median + 1.5 IQR lies above the largest): add some.
        if (i % 50 == 7)
        {
            x[i] += 0.5f * (i % 2 ? 1.0f : -1.0f);
        }
    }
    std::vector<float> got;
    evaluate(arcee_fusion(input(x), input(b)), got);
    std::vector<double> change(n);
    for (std::size_t i = 0; i < n; ++i)
    {
        change[i] = std::fabs(double(x[i]) - double(b[i]));
    }
    // kept iff the change is at least the threshold of the changes themselves (kl is one positive number)
    double lowest_kept = INFINITY, highest_dropped = -INFINITY;
    for (std::size_t i = 0; i < n; ++i)
    {
        if (got[i] != b[i])
        {
            REQUIRE(got[i] == b[i] + (x[i] - b[i]));
            lowest_kept = std::min(lowest_kept, change[i]);
        }
        else
        {
            highest_dropped = std::max(highest_dropped, change[i]);
        }
    }
    CHECK(lowest_kept > highest_dropped);
    CHECK(lowest_kept < INFINITY);
}

TEST_CASE("arcee_fusion on bfloat16 inputs and its errors", "[overlap][arcee]")
{
    const shape_type shape{24, 40};
    const auto bv = xmerge_test::random_floats(960, 61);
    auto xv = xmerge_test::random_floats(960, 62, -0.2f, 0.2f);
    for (std::size_t i = 0; i < xv.size(); ++i)
    {
        xv[i] = bv[i] + xv[i] * xv[i] * xv[i];
    }
    const buffer b(dtype::bfloat16, bv), x(dtype::bfloat16, xv);
    std::vector<float> got;
    evaluate(arcee_fusion(input(const_tensor_ref(x.bytes().data(), dtype::bfloat16, shape, "x")), input(const_tensor_ref(b.bytes().data(), dtype::bfloat16, shape, "b"))),
             got);
    CHECK(xmerge_test::same_bits(got, arcee_oracle(x.values(), b.values(), 40)));
    const std::vector<float> five(5), six(6);
    CHECK_THROWS_AS(arcee_fusion(input(five), input(six)), shape_error);
    const auto& registry = xmerge_test::builtin_registry();
    method_inputs in;
    in.tensor = "w";
    in.base = input(bv);
    const std::vector<std::vector<float>> two{xv, xv};
    in.models = inputs(two);
    CHECK_THROWS_WITH(registry.build("arcee_fusion", in, {}), Catch::Contains("exactly one model"));
}

TEST_CASE("pcb matches a transcription of the paper's formulas", "[overlap][pcb]")
{
    for (std::size_t n : {std::size_t{1}, std::size_t{2}, simd::lanes + 1, std::size_t{1000}, std::size_t{4099}, std::size_t{70001}})
    {
        for (std::size_t k : {std::size_t{2}, std::size_t{3}})
        {
            std::vector<std::vector<float>> models;
            const auto base = xmerge_test::random_floats(n, 71);
            for (std::size_t m = 0; m < k; ++m)
            {
                auto d = xmerge_test::random_floats(n, 80 + static_cast<std::uint32_t>(m), -0.5f, 0.5f);
                for (std::size_t i = 0; i < n; ++i)
                {
                    d[i] = base[i] + d[i] * d[i] * d[i];
                }
                models.push_back(d);
            }
            for (const pcb_options& o : {pcb_options{}, pcb_options{0.3, 0.01, 0.02, 0.7}, pcb_options{1.0, 0.0, 0.0, 1.0}})
            {
                const auto expected = pcb_oracle(base, models, o);
                for (std::size_t t : {1, 2})
                {
                    std::vector<float> got;
                    evaluate(pcb(inputs(models), input(base), o), got, threads(t));
                    REQUIRE(got.size() == n);
                    for (std::size_t i = 0; i < n; ++i)
                    {
                        REQUIRE(got[i] == Approx(expected[i]).margin(2e-6).epsilon(1e-5));
                    }
                }
            }
        }
    }
}

TEST_CASE("pcb keeps about pcb_ratio of each task vector, on bfloat16 too", "[overlap][pcb]")
{
    const std::size_t n = 5000;
    const auto base = xmerge_test::random_floats(n, 91);
    std::vector<std::vector<float>> models;
    for (std::uint32_t m = 0; m < 3; ++m)
    {
        auto d = xmerge_test::random_floats(n, 92 + m, -0.1f, 0.1f);
        for (std::size_t i = 0; i < n; ++i)
        {
            d[i] += base[i];
        }
        models.push_back(widened(dtype::bfloat16, d));
    }
    const buffer b(dtype::bfloat16, base);
    std::vector<buffer> xs;
    expression_list<input_node> leaves;
    for (const auto& m : models)
    {
        xs.emplace_back(dtype::bfloat16, m);
    }
    for (const auto& x : xs)
    {
        leaves.push_back(x.leaf());
    }
    pcb_options o;
    o.pcb_ratio = 0.2;
    std::vector<float> got;
    evaluate(pcb(leaves, b.leaf(), o), got);
    const auto expected = pcb_oracle(b.values(), models, o);
    std::size_t changed = 0;
    for (std::size_t i = 0; i < n; ++i)
    {
        REQUIRE(got[i] == Approx(expected[i]).margin(2e-6).epsilon(1e-5));
        changed += got[i] != b.values()[i];
    }
    // each model weighs about 20% of the entries; three of them cover at most 60%
    CHECK(changed <= 3 * n / 5 + 3);
    CHECK(changed >= n / 5);
    CHECK_THROWS_WITH(pcb(leaves, b.leaf(), pcb_options{0.0}), Catch::Contains("pcb_ratio"));
    CHECK_THROWS_WITH(pcb(leaves, b.leaf(), pcb_options{0.1, 1.5}), Catch::Contains("min_ratio"));
}

TEST_CASE("the overlap methods are registered with mergekit's names and defaults", "[overlap][registry]")
{
    const auto& registry = xmerge_test::builtin_registry();
    const sparse_changes data(300, 2, 5);
    method_inputs in;
    in.tensor = "w";
    in.base = input(data.base);
    in.models = inputs(data.models);
    std::vector<float> got;
    evaluate(registry.build("ram", in, {}), got);
    CHECK(xmerge_test::same_bits(got, ram_oracle(data.base, data.models, 1e-5, false)));
    evaluate(registry.build("ramplus_tl", in, {}), got);
    CHECK(xmerge_test::same_bits(got, ram_oracle(data.base, data.models, 1e-5, true, 0.1, 0.2)));
    evaluate(registry.build("ramplus_tl", in, {{"r", 0.5}, {"alpha", 2.0}, {"epsilon", 1e-3}}), got);
    CHECK(xmerge_test::same_bits(got, ram_oracle(data.base, data.models, 1e-3, true, 0.5, 2.0)));
    evaluate(registry.build("pcb", in, {{"lambda", 0.5}}), got);
    pcb_options o;
    o.scaling_factor = 0.5;
    const auto expected = pcb_oracle(data.base, data.models, o);
    CHECK(got[17] == Approx(expected[17]).margin(2e-6));
    for (const char* name : {"ram", "ramplus_tl", "arcee_fusion", "pcb"})
    {
        CHECK(registry.contains(name));
    }
}
