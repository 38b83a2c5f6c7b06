// SVD, rank rules and the orthogonal projection operator: idempotence,
// orthogonality to what is removed, and the relations between the kinds.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "linalg_support.hpp"

using namespace xmerge;

namespace
{
    // Largest |entry| of L^T D R (or of L^T D, D R when one side is empty).
    template <class T>
    double coupling(const dense_matrix<T>& l, const dense_matrix<T>& d, const dense_matrix<T>& r)
    {
        const std::size_t m = d.shape()[0], n = d.shape()[1];
        std::vector<double> dv(d.begin(), d.end());
        std::vector<double> lt(l.size()), rv(r.begin(), r.end());
        const std::size_t p = l.shape()[1], q = r.shape()[1];
        for (std::size_t i = 0; i < m; ++i)
        {
            for (std::size_t j = 0; j < p; ++j)
            {
                lt[j * m + i] = l(i, j);
            }
        }
        std::vector<double> x = p ? xmerge_test::matmul(lt, dv, p, m, n) : dv;
        const std::size_t rows = p ? p : m;
        if (q)
        {
            x = xmerge_test::matmul(x, rv, rows, n, q);
        }
        double worst = 0.0;
        for (double v : x)
        {
            worst = std::max(worst, std::fabs(v));
        }
        return worst;
    }

    template <class T>
    double max_difference(const dense_matrix<T>& a, const dense_matrix<T>& b)
    {
        double worst = 0.0;
        for (std::size_t i = 0; i < a.size(); ++i)
        {
            worst = std::max(worst, std::fabs(static_cast<double>(a.data()[i]) - static_cast<double>(b.data()[i])));
        }
        return worst;
    }
}

TEST_CASE("thin SVD reconstructs row-major matrices of either orientation", "[linalg][svd]")
{
    for (auto shape : {std::pair<std::size_t, std::size_t>{30, 12}, {12, 30}, {17, 17}})
    {
        const auto [m, n] = shape;
        const auto a = xmerge_test::normal_matrix(m, n, 5);
        const auto f = svd<double>(xmerge_test::to_matrix<double>(a, m, n));
        const std::size_t k = std::min(m, n);
        REQUIRE(f.u.shape()[0] == m);
        REQUIRE(f.u.shape()[1] == k);
        REQUIRE(f.vt.shape()[0] == k);
        REQUIRE(f.vt.shape()[1] == n);
        for (std::size_t j = 1; j < k; ++j)
        {
            CHECK(f.s(j - 1) >= f.s(j));
        }
        for (std::size_t i = 0; i < m; ++i)
        {
            for (std::size_t j = 0; j < n; ++j)
            {
                double v = 0.0;
                for (std::size_t l = 0; l < k; ++l)
                {
                    v += f.u(i, l) * f.s(l) * f.vt(l, j);
                }
                REQUIRE(v == Approx(a[i * n + j]).margin(1e-12));
            }
        }
        // the polar factor has orthonormal rows or columns
        const auto p = polar_factor<double>(xmerge_test::to_matrix<double>(a, m, n));
        const std::vector<double> pv(p.begin(), p.end());
        const auto gram = m >= n ? xmerge_test::matmul(xmerge_test::transpose(pv, m, n), pv, n, m, n) : xmerge_test::matmul(pv, xmerge_test::transpose(pv, m, n), m, n, m);
        for (std::size_t i = 0; i < k; ++i)
        {
            for (std::size_t j = 0; j < k; ++j)
            {
                REQUIRE(gram[i * k + j] == Approx(i == j ? 1.0 : 0.0).margin(1e-12));
            }
        }
    }
}

TEST_CASE("to_matrix copies 2-D tensors of any dtype", "[linalg][svd]")
{
    const auto a = xmerge_test::normal_matrix(6, 4, 3);
    xmerge_test::buffer b(dtype::bfloat16, a);
    const auto m = to_matrix<double>(b.cref().reshaped({6, 4}));
    const auto rounded = b.values();
    REQUIRE(m.shape()[0] == 6);
    REQUIRE(m.shape()[1] == 4);
    CHECK(m(2, 3) == static_cast<double>(rounded[2 * 4 + 3]));
    const auto f = svd(to_matrix(as_tensor(a, shape_type{6, 4}, "a")));  // float by default
    CHECK(f.rank() == 4);
    CHECK_THROWS_WITH(to_matrix(as_tensor(a, "flat")), Catch::Contains("2-D") && Catch::Contains("flat"));
}

TEST_CASE("rank rules pick the leading singular values by share or count", "[linalg][svd][rank]")
{
    const std::vector<double> s{4.0, 3.0, 2.0, 1.0};  // sum 10, shares 0.4 0.7 0.9 1.0
    CHECK(rank_rule::sum_fraction(0.0).select(s.data(), 4) == 0);
    CHECK(rank_rule::sum_fraction(0.39).select(s.data(), 4) == 0);
    CHECK(rank_rule::sum_fraction(0.4).select(s.data(), 4) == 1);
    CHECK(rank_rule::sum_fraction(0.5).select(s.data(), 4) == 1);
    CHECK(rank_rule::sum_fraction(0.7).select(s.data(), 4) == 2);
    CHECK(rank_rule::sum_fraction(0.95).select(s.data(), 4) == 3);
    CHECK(rank_rule::sum_fraction(1.0).select(s.data(), 4) == 4);
    // squares: 16 9 4 1 of 30 -> 0.533 0.833 0.967 1
    CHECK(rank_rule::energy_fraction(0.5).select(s.data(), 4) == 0);
    CHECK(rank_rule::energy_fraction(0.6).select(s.data(), 4) == 1);
    CHECK(rank_rule::energy_fraction(0.9).select(s.data(), 4) == 2);
    CHECK(rank_rule::fixed(3).select(s.data(), 4) == 3);
    CHECK(rank_rule::fixed(9).select(s.data(), 4) == 4);
    const std::vector<double> zero(4, 0.0);
    CHECK(rank_rule::sum_fraction(0.5).select(zero.data(), 4) == 0);
    CHECK_THROWS_AS(rank_rule::sum_fraction(1.5), parameter_error);
    CHECK_THROWS_AS(rank_rule::energy_fraction(-0.1), parameter_error);
    CHECK_THROWS_AS(rank_rule::sum_fraction(std::nan("")), parameter_error);
}

TEMPLATE_TEST_CASE("projections are idempotent and leave nothing in the removed block", "[linalg][projection][invariant]", float, double)
{
    using T = TestType;
    const double tol = std::is_same<T, float>::value ? 2e-5 : 1e-12;
    const std::size_t m = 24, n = 18;
    // bases from the SVD of one matrix, applied to another
    const auto f = svd<T>(xmerge_test::to_matrix<T>(xmerge_test::normal_matrix(m, n, 11), m, n));
    const auto d = xmerge_test::to_matrix<T>(xmerge_test::normal_matrix(m, n, 12), m, n);
    const auto rule = rank_rule::fixed(5);

    for (auto kind : {projection_kind::left_complement, projection_kind::right_complement, projection_kind::two_sided_complement,
                      projection_kind::block_removal, projection_kind::in_subspace})
    {
        const auto p = basic_projection<T>::from_svd(f, rule, kind);
        const auto once = p(d);
        const auto twice = p(once);
        INFO("kind " << static_cast<int>(kind));
        CHECK(max_difference(once, twice) <= tol * 10);

        const dense_matrix<T> none;
        switch (kind)
        {
            case projection_kind::left_complement:
                CHECK(coupling(p.left(), once, none) <= tol * 10);
                break;
            case projection_kind::right_complement:
                CHECK(coupling(none, once, p.right()) <= tol * 10);
                break;
            case projection_kind::two_sided_complement:
                CHECK(coupling(p.left(), once, none) <= tol * 10);
                CHECK(coupling(none, once, p.right()) <= tol * 10);
                break;
            case projection_kind::block_removal:
                CHECK(coupling(p.left(), once, p.right()) <= tol * 10);
                // but not the rest: the one-sided parts survive
                CHECK(coupling(p.left(), once, none) > 0.1);
                break;
            case projection_kind::in_subspace:
            {
                // in_subspace + block_removal = identity
                const auto rest = basic_projection<T>::from_svd(f, rule, projection_kind::block_removal)(d);
                dense_matrix<T> sum = once;
                for (std::size_t i = 0; i < sum.size(); ++i)
                {
                    sum.data()[i] += rest.data()[i];
                }
                CHECK(max_difference(sum, d) <= tol * 10);
                break;
            }
        }
    }

    // in place gives the same values
    const auto p = basic_projection<T>::from_svd(f, rule, projection_kind::two_sided_complement);
    dense_matrix<T> inplace = d;
    p.apply(inplace.data(), inplace.data(), m, n);
    CHECK(max_difference(inplace, p(d)) <= tol);
}

TEST_CASE("a projection of the matrix's own subspace removes its leading part exactly", "[linalg][projection]")
{
    const std::size_t m = 20, n = 30;
    const auto a = xmerge_test::normal_matrix(m, n, 21);
    const auto f = svd<double>(xmerge_test::to_matrix<double>(a, m, n));
    const auto p = basic_projection<double>::from_svd(f, rank_rule::fixed(4), projection_kind::block_removal);
    const auto rest = p(xmerge_test::to_matrix<double>(a, m, n));
    // what is left has the trailing singular values only
    const auto s = xmerge_test::singular_values(std::vector<double>(rest.begin(), rest.end()), m, n);
    for (std::size_t j = 0; j + 4 < f.rank(); ++j)
    {
        CHECK(s[j] == Approx(f.s(j + 4)).epsilon(1e-10));
    }
}

TEST_CASE("projections apply lazily to task vectors of any dtype", "[linalg][projection][expression]")
{
    const std::size_t m = 16, n = 12;
    const auto base = xmerge_test::normal_matrix(m, n, 31);
    const auto model = xmerge_test::normal_matrix(m, n, 32);
    xmerge_test::buffer model_bf16(dtype::bfloat16, model);
    const auto rounded = model_bf16.values();
    const auto f = svd<float>(xmerge_test::to_matrix<float>(xmerge_test::normal_matrix(m, n, 33), m, n));
    const projection p = projection::from_svd(f, rank_rule::energy_fraction(0.5), projection_kind::left_complement);

    const auto b = input(as_tensor(base, {m, n}, "base"));
    const auto x = input(model_bf16.cref().reshaped({m, n}));
    std::vector<float> lazy;
    evaluate(b + p(task_vector(x, b)), lazy);

    std::vector<float> d(m * n);
    for (std::size_t i = 0; i < d.size(); ++i)
    {
        d[i] = rounded[i] - base[i];
    }
    const auto direct = p(xmerge_test::to_matrix<float>(d, m, n));
    for (std::size_t i = 0; i < d.size(); ++i)
    {
        REQUIRE(lazy[i] == Approx(base[i] + direct.data()[i]).margin(1e-6));
    }
    const std::vector<float> other(4 * 3);
    CHECK_THROWS_AS(p(input(as_tensor(other, {4, 3}, "small"))), shape_error);
    const std::vector<float> flat(m * n);
    CHECK_THROWS_WITH(p(input(as_tensor(flat, {m * n}, "flat"))), Catch::Contains("2-D") && Catch::Contains("flat"));
}

TEST_CASE("projections check their bases", "[linalg][projection][errors]")
{
    const auto f = svd<float>(xmerge_test::to_matrix<float>(xmerge_test::normal_matrix(10, 8, 41), 10, 8));
    const auto left = detail::leading_columns(f.u, 3);
    const auto right = detail::leading_rows_transposed(f.vt, 3);
    CHECK_NOTHROW(projection(left, dense_matrix<float>(), projection_kind::left_complement));
    CHECK_THROWS_WITH(projection(left, dense_matrix<float>(), projection_kind::block_removal), Catch::Contains("right"));
    CHECK_THROWS_WITH(projection(dense_matrix<float>(), right, projection_kind::two_sided_complement), Catch::Contains("left"));
    auto skewed = left;
    skewed(0, 0) += 0.1f;
    CHECK_THROWS_WITH(projection(skewed, right, projection_kind::block_removal), Catch::Contains("orthonormal"));
    const projection p(left, right, projection_kind::block_removal);
    const auto d = xmerge_test::to_matrix<float>(xmerge_test::normal_matrix(8, 10, 42), 8, 10);
    CHECK_THROWS_AS(p(d), shape_error);
}
