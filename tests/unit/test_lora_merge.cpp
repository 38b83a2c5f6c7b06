// Merges that respect low rank: products are merged, never factors (and the
// factor average is shown to be wrong), merged updates are refactored within
// the Eckart-Young bound, and KnOTS matches a direct implementation.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include <xmerge/lora/fold.hpp>
#include <xmerge/lora/merge.hpp>
#include <xmerge/methods/task_arithmetic.hpp>
#include <xmerge/methods/ties.hpp>

#include "linalg_support.hpp"

using namespace xmerge;

namespace
{
    /// LoRA factors of one [out, in] weight, in memory.
    struct factors
    {
        std::size_t out, in, rank;
        double scale;
        std::vector<float> a, b;

        factors(std::size_t o, std::size_t i, std::size_t r, double s, std::uint32_t seed)
            : out(o), in(i), rank(r), scale(s), a(xmerge_test::normal_matrix(r, i, seed)), b(xmerge_test::normal_matrix(o, r, seed + 1))
        {
        }

        lora::layer layer() const
        {
            lora::layer l;
            l.target = "w.weight";
            l.a = as_tensor(a.data(), {rank, in}, "w.lora_A");
            l.b = as_tensor(b.data(), {out, rank}, "w.lora_B");
            l.scale = scale;
            return l;
        }

        /// s B A in double.
        std::vector<double> update() const
        {
            auto p = xmerge_test::matmul(b, a, out, rank, in);
            for (double& x : p)
            {
                x *= scale;
            }
            return p;
        }
    };

    std::vector<double> product_of(const lora::extracted_factors& f)
    {
        const std::vector<float> b(f.left.begin(), f.left.end()), a(f.right.begin(), f.right.end());
        return xmerge_test::matmul(b, a, f.left.shape()[0], f.left.shape()[1], f.right.shape()[1]);
    }

    template <class A, class B>
    double distance(const std::vector<A>& x, const std::vector<B>& y)
    {
        double s = 0.0;
        for (std::size_t i = 0; i < x.size(); ++i)
        {
            const double d = static_cast<double>(x[i]) - static_cast<double>(y[i]);
            s += d * d;
        }
        return std::sqrt(s);
    }

    /// The root of the energy of the singular values after the first r.
    double tail_norm(const std::vector<double>& s, std::size_t r)
    {
        double t = 0.0;
        for (std::size_t j = r; j < s.size(); ++j)
        {
            t += s[j] * s[j];
        }
        return std::sqrt(t);
    }

    std::size_t numerical_rank(const std::vector<double>& s)
    {
        return static_cast<std::size_t>(std::count_if(s.begin(), s.end(), [&](double x) { return x > 1e-6 * s[0]; }));
    }

    /// TIES as the paper states it, in double: trim, elect, mean of the agreeing.
    std::vector<double> direct_ties(const std::vector<std::vector<double>>& x, const std::vector<double>& w, double density)
    {
        const std::size_t n = x[0].size();
        std::vector<std::vector<double>> t(x.size(), std::vector<double>(n, 0.0));
        for (std::size_t i = 0; i < x.size(); ++i)
        {
            std::vector<double> mags(n);
            for (std::size_t e = 0; e < n; ++e)
            {
                mags[e] = std::fabs(x[i][e]);
            }
            const auto k = static_cast<std::size_t>(std::floor(density * static_cast<double>(n)));
            std::vector<double> sorted = mags;
            std::sort(sorted.begin(), sorted.end(), std::greater<double>());
            const double threshold = sorted[k - 1];
            for (std::size_t e = 0; e < n; ++e)
            {
                t[i][e] = mags[e] >= threshold ? x[i][e] : 0.0;
            }
        }
        std::vector<double> merged(n, 0.0);
        for (std::size_t e = 0; e < n; ++e)
        {
            double sum = 0.0;
            for (std::size_t i = 0; i < x.size(); ++i)
            {
                sum += w[i] * t[i][e];
            }
            const double sign = (sum > 0.0) - (sum < 0.0);
            double num = 0.0, den = 0.0;
            for (std::size_t i = 0; i < x.size(); ++i)
            {
                if (t[i][e] != 0.0 && ((t[i][e] > 0.0) - (t[i][e] < 0.0)) == sign)
                {
                    num += w[i] * t[i][e];
                    den += w[i];
                }
            }
            merged[e] = den != 0.0 ? num / den : 0.0;
        }
        return merged;
    }
}

TEST_CASE("adapters merge through their products; averaging the factors is wrong", "[lora][merge]")
{
    const std::size_t out = 30, in = 20;
    const factors x(out, in, 4, 0.5, 1), y(out, in, 4, 0.5, 3);
    std::vector<float> zero(out * in, 0.0f);
    const auto w = as_tensor(zero.data(), {out, in}, "w.weight");

    // The mean update, merged lazily over the products.
    std::vector<float> merged;
    evaluate(task_arithmetic(lora::updates(w, {x.layer(), y.layer()}), lora::zeros({out, in}), {0.5, 0.5}), merged);
    std::vector<double> mean(out * in);
    const auto ux = x.update(), uy = y.update();
    for (std::size_t e = 0; e < mean.size(); ++e)
    {
        mean[e] = 0.5 * (ux[e] + uy[e]);
    }
    CHECK(distance(merged, mean) <= 1e-5 * xmerge_test::frobenius(mean));

    // The factors averaged, then multiplied: cross terms B_x A_y and B_y A_x appear, and rank 8 collapses to 4.
    factors avg = x;
    for (std::size_t i = 0; i < avg.a.size(); ++i)
    {
        avg.a[i] = 0.5f * (x.a[i] + y.a[i]);
    }
    for (std::size_t i = 0; i < avg.b.size(); ++i)
    {
        avg.b[i] = 0.5f * (x.b[i] + y.b[i]);
    }
    std::vector<float> from_factors;
    evaluate(lora::update(w, avg.layer()), from_factors);
    const double wrong = distance(from_factors, mean) / xmerge_test::frobenius(mean);
    CHECK(wrong > 0.5);
    CHECK(numerical_rank(xmerge_test::singular_values(mean, out, in)) == 8);
    CHECK(numerical_rank(xmerge_test::singular_values(from_factors, out, in)) == 4);

    // Identical adapters are the one case where the two agree.
    std::vector<float> same;
    evaluate(task_arithmetic(lora::updates(w, {x.layer(), x.layer()}), lora::zeros({out, in}), {0.5, 0.5}), same);
    CHECK(distance(same, ux) <= 1e-5 * xmerge_test::frobenius(ux));
}

TEST_CASE("any method runs over the products, folded or as updates", "[lora][merge]")
{
    const std::size_t out = 25, in = 33;
    const factors x(out, in, 3, 1.0, 5), y(out, in, 5, 0.25, 7), z(out, in, 2, 2.0, 9);
    const auto base = xmerge_test::normal_matrix(out, in, 11);
    const auto w = as_tensor(base.data(), {out, in}, "w.weight");
    const std::vector<lora::layer> layers{x.layer(), y.layer(), z.layer()};
    std::vector<float> folded, updated;
    evaluate(ties(lora::folds(w, layers), input(w), {1.0, 0.5, 1.0}, {0.4}), folded);
    evaluate(ties(lora::updates(w, layers), lora::zeros({out, in}), {1.0, 0.5, 1.0}, {0.4}), updated);
    for (std::size_t e = 0; e < folded.size(); ++e)
    {
        // (W + d) - W in float32 loses the low bits of d below W's ulp.
        REQUIRE(folded[e] - base[e] == Approx(updated[e]).margin(2e-6 * (1.0 + std::fabs(base[e]))));
    }
}

TEST_CASE("refactorization keeps a merged update within the discarded singular values", "[lora][merge][refactor]")
{
    const std::size_t out = 40, in = 28;
    const factors x(out, in, 4, 1.0, 21), y(out, in, 4, 0.5, 23), z(out, in, 4, 0.7, 25);
    std::vector<float> zero(out * in, 0.0f);
    const auto w = as_tensor(zero.data(), {out, in}, "w.weight");
    const std::vector<lora::layer> layers{x.layer(), y.layer(), z.layer()};

    SECTION("a TIES merge, full rank, factored at rank 6 by the full and the randomized SVD")
    {
        const auto merged_expr = ties(lora::updates(w, layers), lora::zeros({out, in}), {1.0, 1.0, 1.0}, {0.3});
        std::vector<float> merged;
        evaluate(merged_expr, merged);
        const auto s = xmerge_test::singular_values(merged, out, in);
        REQUIRE(numerical_rank(s) > 12);  // trimming destroyed the low rank
        lora::factor_options o;
        o.rule = truncation::rank(6);
        const auto f = lora::refactorize(merged_expr, o);
        REQUIRE(f.rank() == 6);
        const double bound = tail_norm(s, 6);
        const double err = distance(product_of(f), merged);
        CHECK(err <= bound * (1.0 + 1e-4) + 1e-6);
        CHECK(err >= bound * (1.0 - 1e-4));
        CHECK(std::sqrt(f.total_energy - f.kept_energy) == Approx(bound).epsilon(1e-3));

        o.method = lora::svd_method::randomized;
        o.randomized.power_iterations = 3;
        const auto r = lora::refactorize(merged_expr, o);
        const double rerr = distance(product_of(r), merged);
        CHECK(rerr >= bound * (1.0 - 1e-4));
        CHECK(rerr <= 1.05 * bound);
    }
    SECTION("a weighted sum, factored exactly from the stacked factors")
    {
        const std::vector<double> weights{1.0, -0.5, 2.0};
        std::vector<double> sum(out * in, 0.0);
        const auto ux = x.update(), uy = y.update(), uz = z.update();
        for (std::size_t e = 0; e < sum.size(); ++e)
        {
            sum[e] = weights[0] * ux[e] + weights[1] * uy[e] + weights[2] * uz[e];
        }
        const auto exact = lora::refactorize_sum(layers, weights, truncation::rank(12));
        CHECK(exact.rank() == 12);
        CHECK(distance(product_of(exact), sum) <= 1e-5 * xmerge_test::frobenius(sum));
        const auto s = xmerge_test::singular_values(sum, out, in);
        const auto cut = lora::refactorize_sum(layers, weights, truncation::rank(5), linalg_precision::float64);
        CHECK(distance(product_of(cut), sum) == Approx(tail_norm(s, 5)).epsilon(1e-4));
        const auto by_energy = lora::refactorize_sum(layers, weights, truncation::energy(0.9));
        CHECK(by_energy.kept_fraction() >= 0.9);
    }
    SECTION("DoRA layers are not products")
    {
        auto d = x.layer();
        std::vector<float> m(out, 1.0f);
        d.magnitude = as_tensor(m, "m");
        CHECK_THROWS_AS(lora::refactorize_sum({d}, {1.0}, truncation::rank(2)), parameter_error);
    }
}

TEST_CASE("KnOTS matches a direct implementation of its formula", "[lora][merge][knots]")
{
    const std::size_t out = 24, in = 18;
    const std::vector<factors> adapters{factors(out, in, 3, 1.0, 31), factors(out, in, 4, 0.5, 33), factors(out, in, 2, 1.5, 35)};
    std::vector<lora::layer> layers;
    for (const auto& a : adapters)
    {
        layers.push_back(a.layer());
    }
    const std::vector<double> weights{1.0, 0.8, 1.2};
    const double lambda = 0.7, density = 0.5;

    // [dW_1 dW_2 dW_3] = U S V^T, formed and decomposed in double, keeping its rank's worth of triplets.
    const std::size_t tasks = adapters.size(), cols = tasks * in, q = 9;
    std::vector<double> concat(out * cols);
    for (std::size_t t = 0; t < tasks; ++t)
    {
        const auto u = adapters[t].update();
        for (std::size_t i = 0; i < out; ++i)
        {
            for (std::size_t j = 0; j < in; ++j)
            {
                concat[i * cols + t * in + j] = u[i * in + j];
            }
        }
    }
    const auto f = svd<double>(xmerge_test::to_matrix<double>(concat, out, cols));
    std::vector<std::vector<double>> blocks(tasks, std::vector<double>(q * in));
    for (std::size_t t = 0; t < tasks; ++t)
    {
        for (std::size_t r = 0; r < q; ++r)
        {
            for (std::size_t j = 0; j < in; ++j)
            {
                blocks[t][r * in + j] = f.vt(r, t * in + j);
            }
        }
    }
    const auto recombine = [&](const std::vector<double>& v)
    {
        std::vector<double> m(out * in, 0.0);
        for (std::size_t i = 0; i < out; ++i)
        {
            for (std::size_t r = 0; r < q; ++r)
            {
                for (std::size_t j = 0; j < in; ++j)
                {
                    m[i * in + j] += lambda * f.u(i, r) * f.s(r) * v[r * in + j];
                }
            }
        }
        return m;
    };

    SECTION("TIES over the aligned right factors")
    {
        const auto expected = recombine(direct_ties(blocks, weights, density));
        lora::knots_options o;
        o.method = lora::knots_merge::ties;
        o.weights = weights;
        o.densities = {density};
        o.lambda = lambda;
        o.precision = linalg_precision::float64;
        const auto k = lora::knots(layers, o);
        REQUIRE(k.rank() == q);
        for (std::size_t r = 0; r < q; ++r)
        {
            CHECK(k.singular_values[r] == Approx(f.s(r)).epsilon(1e-9));
        }
        CHECK(distance(product_of(k), expected) <= 1e-5 * xmerge_test::frobenius(expected));
        // TIES changed something: the result is not the plain weighted sum.
        std::vector<double> plain(out * in, 0.0);
        for (std::size_t t = 0; t < tasks; ++t)
        {
            const auto u = adapters[t].update();
            for (std::size_t e = 0; e < plain.size(); ++e)
            {
                plain[e] += lambda * weights[t] * u[e];
            }
        }
        CHECK(distance(product_of(k), plain) > 0.05 * xmerge_test::frobenius(plain));
    }
    SECTION("task arithmetic over the right factors is task arithmetic over the updates")
    {
        lora::knots_options o;
        o.method = lora::knots_merge::task_arithmetic;
        o.weights = weights;
        o.lambda = lambda;
        const auto k = lora::knots(layers, o);
        std::vector<double> v(q * in, 0.0);
        for (std::size_t t = 0; t < tasks; ++t)
        {
            for (std::size_t e = 0; e < v.size(); ++e)
            {
                v[e] += weights[t] * blocks[t][e];
            }
        }
        const auto expected = recombine(v);
        CHECK(distance(product_of(k), expected) <= 1e-5 * xmerge_test::frobenius(expected));
    }
}
