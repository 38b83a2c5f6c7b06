// The factorizations behind LoRA extraction and refactorization: truncated
// SVDs at a rank or an energy fraction, the SVD of a product of thin factors,
// the randomized range finder measured against the full SVD, and thin QR.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include <xmerge/linalg/low_rank.hpp>
#include <xmerge/linalg/randomized_svd.hpp>

#include "linalg_support.hpp"

using namespace xmerge;

namespace
{
    /// rows x cols = U diag(s) V^T with random orthonormal U, V and the given spectrum.
    std::vector<double> with_spectrum(std::size_t rows, std::size_t cols, const std::vector<double>& s, std::uint32_t seed)
    {
        const std::size_t k = s.size();
        const auto u = xmerge::detail::orthonormal_columns(xmerge_test::to_matrix<double>(xmerge_test::normal_matrix(rows, k, seed), rows, k), "u");
        const auto v = xmerge::detail::orthonormal_columns(xmerge_test::to_matrix<double>(xmerge_test::normal_matrix(cols, k, seed + 1), cols, k), "v");
        std::vector<double> m(rows * cols, 0.0);
        for (std::size_t i = 0; i < rows; ++i)
        {
            for (std::size_t j = 0; j < cols; ++j)
            {
                for (std::size_t l = 0; l < k; ++l)
                {
                    m[i * cols + j] += u(i, l) * s[l] * v(j, l);
                }
            }
        }
        return m;
    }

    template <class T>
    std::vector<double> product(const low_rank_factors<T>& f)
    {
        const std::size_t m = f.left.shape()[0], r = f.rank(), n = f.right.shape()[1];
        std::vector<double> left(f.left.begin(), f.left.end()), right(f.right.begin(), f.right.end());
        return xmerge_test::matmul(left, right, m, r, n);
    }

    double distance(const std::vector<double>& a, const std::vector<double>& b)
    {
        double s = 0.0;
        for (std::size_t i = 0; i < a.size(); ++i)
        {
            s += (a[i] - b[i]) * (a[i] - b[i]);
        }
        return std::sqrt(s);
    }

    std::vector<double> geometric(std::size_t k, double ratio)
    {
        std::vector<double> s(k);
        for (std::size_t i = 0; i < k; ++i)
        {
            s[i] = std::pow(ratio, static_cast<double>(i));
        }
        return s;
    }
}

TEST_CASE("an energy truncation keeps the smallest rank that reaches the fraction", "[linalg][lora][truncation]")
{
    const double s[] = {3.0, 2.0, 1.0, 0.0};  // energies 9, 4, 1: total 14
    CHECK(truncation::rank(2).select(s, 4, 14.0) == 2);
    CHECK(truncation::rank(9).select(s, 4, 14.0) == 4);
    CHECK(truncation::energy(0.0).select(s, 4, 14.0) == 0);
    CHECK(truncation::energy(9.0 / 14.0).select(s, 4, 14.0) == 1);
    CHECK(truncation::energy(0.65).select(s, 4, 14.0) == 2);
    CHECK(truncation::energy(13.0 / 14.0).select(s, 4, 14.0) == 2);
    CHECK(truncation::energy(0.95).select(s, 4, 14.0) == 3);
    CHECK(truncation::energy(0.95, 2).select(s, 4, 14.0) == 2);
    // Only leading values known: the total says how much is left.
    CHECK(truncation::energy(0.9).select(s, 2, 20.0) == 2);
    CHECK(truncation::energy(0.5).select(s, 4, 0.0) == 0);
    CHECK_THROWS_AS(truncation::energy(1.5), parameter_error);
}

TEMPLATE_TEST_CASE("a truncated SVD recovers an exactly low-rank matrix and obeys Eckart-Young", "[linalg][lora][svd]", float, double)
{
    const std::size_t m = 60, n = 41;
    const auto exact = with_spectrum(m, n, {5.0, 3.0, 2.0, 1.0, 0.5}, 3);
    const auto f = truncated_svd(xmerge_test::to_matrix<TestType>(exact, m, n), truncation::rank(5));
    REQUIRE(f.rank() == 5);
    CHECK(distance(product(f), exact) <= 1e-5 * xmerge_test::frobenius(exact));
    CHECK(f.kept_fraction() == Approx(1.0).margin(1e-6));
    CHECK(f.singular_values[0] == Approx(5.0).epsilon(1e-5));

    // Keeping three: the error is the root of the two discarded energies.
    const auto g = truncated_svd(xmerge_test::to_matrix<TestType>(exact, m, n), truncation::rank(3));
    CHECK(g.residual_norm() == Approx(std::sqrt(1.0 + 0.25)).epsilon(1e-4));
    CHECK(distance(product(g), exact) == Approx(g.residual_norm()).epsilon(1e-4));
    CHECK(g.kept_fraction() == Approx(38.0 / 39.25).epsilon(1e-5));

    const auto e = truncated_svd(xmerge_test::to_matrix<TestType>(exact, m, n), truncation::energy(0.96));
    CHECK(e.rank() == 3);
    CHECK(e.kept_fraction() >= 0.96);
}

TEMPLATE_TEST_CASE("the SVD of a product of thin factors equals that of the formed product", "[linalg][lora][svd]", float, double)
{
    for (auto [m, k, n] : {std::array<std::size_t, 3>{50, 6, 37}, std::array<std::size_t, 3>{4, 9, 30}, std::array<std::size_t, 3>{30, 9, 4},
                           std::array<std::size_t, 3>{8, 0, 5}})
    {
        CAPTURE(m, k, n);
        const auto left = xmerge_test::normal_matrix(m, k, 7), right = xmerge_test::normal_matrix(k, n, 8);
        const auto formed = xmerge_test::matmul(left, right, m, k, n);
        const auto f = product_svd(xmerge_test::to_matrix<TestType>(left, m, k), xmerge_test::to_matrix<TestType>(right, k, n));
        REQUIRE(f.s.size() == std::min({m, n, k}));
        const auto expected = xmerge_test::singular_values(formed, m, n);
        for (std::size_t j = 0; j < f.s.size(); ++j)
        {
            CHECK(f.s(j) == Approx(expected[j]).epsilon(1e-4).margin(1e-5));
        }
        double total = 0.0;
        for (double x : formed)
        {
            total += x * x;
        }
        CHECK(distance(product(truncate(f, truncation::rank(k), total)), formed) <= 1e-4 * (1.0 + xmerge_test::frobenius(formed)));
    }
}

TEMPLATE_TEST_CASE("thin QR gives orthonormal columns that reproduce the matrix", "[linalg][lora][qr]", float, double)
{
    for (auto [m, n] : {std::array<std::size_t, 2>{20, 7}, std::array<std::size_t, 2>{5, 9}, std::array<std::size_t, 2>{1, 1}})
    {
        const auto a = xmerge_test::normal_matrix(m, n, 9);
        dense_matrix<TestType> q, r;
        xmerge::detail::thin_qr(xmerge_test::to_matrix<TestType>(a, m, n), q, &r, "a");
        const std::size_t p = std::min(m, n);
        const std::vector<double> qv(q.begin(), q.end()), rv(r.begin(), r.end());
        const auto qtq = xmerge_test::matmul(xmerge_test::transpose(qv, m, p), qv, p, m, p);
        for (std::size_t i = 0; i < p; ++i)
        {
            for (std::size_t j = 0; j < p; ++j)
            {
                CHECK(qtq[i * p + j] == Approx(i == j ? 1.0 : 0.0).margin(1e-5));
            }
        }
        const std::vector<double> av(a.begin(), a.end());
        CHECK(distance(xmerge_test::matmul(qv, rv, m, p, n), av) <= 1e-5 * xmerge_test::frobenius(a));
    }
}

TEMPLATE_TEST_CASE("the randomized range finder against the full SVD", "[linalg][lora][randomized]", float, double)
{
    const std::size_t m = 120, n = 90;
    SECTION("an exactly low-rank matrix is recovered at its rank")
    {
        const auto exact = with_spectrum(m, n, {4.0, 2.0, 1.0, 0.5}, 11);
        const auto f = randomized_truncated_svd(xmerge_test::to_matrix<TestType>(exact, m, n), truncation::rank(4), {0, 0, 1});
        REQUIRE(f.rank() == 4);
        CHECK(distance(product(f), exact) <= 1e-5 * xmerge_test::frobenius(exact));
    }
    SECTION("a decaying spectrum: near the optimal error with subspace iterations")
    {
        const auto a = with_spectrum(m, n, geometric(90, 0.85), 12);
        const auto full = truncated_svd(xmerge_test::to_matrix<TestType>(a, m, n), truncation::rank(10));
        randomized_svd_options sharp;
        sharp.power_iterations = 2;
        const auto r2 = randomized_truncated_svd(xmerge_test::to_matrix<TestType>(a, m, n), truncation::rank(10), sharp);
        randomized_svd_options rough;
        rough.power_iterations = 0;
        rough.oversample = 2;
        const auto r0 = randomized_truncated_svd(xmerge_test::to_matrix<TestType>(a, m, n), truncation::rank(10), rough);
        const double optimal = distance(product(full), a);
        CHECK(optimal == Approx(full.residual_norm()).epsilon(1e-3));
        const double e2 = distance(product(r2), a), e0 = distance(product(r0), a);
        CHECK(e2 <= 1.01 * optimal);
        CHECK(e0 >= e2);
        CHECK(e0 <= 3.0 * optimal);  // Halko et al.'s bound without iterations is far looser; measured well below this
        for (std::size_t j = 0; j < 10; ++j)
        {
            CHECK(r2.singular_values[j] == Approx(full.singular_values[j]).epsilon(2e-3));
        }
        // The kept energy is measured against the whole matrix, not the sample.
        CHECK(r2.total_energy == Approx(full.total_energy).epsilon(1e-5));
        CHECK(r2.kept_fraction() <= full.kept_fraction() + 1e-6);
    }
    SECTION("deterministic for a seed")
    {
        const auto a = xmerge_test::normal_matrix(m, n, 13);
        const auto x = randomized_svd(xmerge_test::to_matrix<TestType>(a, m, n), 5);
        const auto y = randomized_svd(xmerge_test::to_matrix<TestType>(a, m, n), 5);
        CHECK(std::equal(x.s.begin(), x.s.end(), y.s.begin()));
        CHECK(x.s.size() == 15);
    }
    SECTION("an energy rule needs a rank bound")
    {
        const auto a = xmerge_test::normal_matrix(m, n, 14);
        CHECK_THROWS_AS(randomized_truncated_svd(xmerge_test::to_matrix<TestType>(a, m, n), truncation::energy(0.9)), parameter_error);
        const auto f = randomized_truncated_svd(xmerge_test::to_matrix<TestType>(a, m, n), truncation::energy(0.5, 30));
        CHECK(f.rank() <= 30);
    }
}
