// The linear assignment solver against exhaustive search.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include <xmerge/search/linear_assignment.hpp>

using namespace xmerge;

namespace
{
    // The best total over every injective map from the smaller side to the larger.
    double brute_force(const std::vector<double>& cost, std::size_t rows, std::size_t cols, assignment_goal goal)
    {
        const bool wide = rows <= cols;
        const std::size_t n = wide ? rows : cols, m = wide ? cols : rows;
        std::vector<std::size_t> pick(m);
        std::iota(pick.begin(), pick.end(), std::size_t{0});
        double best = goal == assignment_goal::minimize ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
        do
        {
            double total = 0.0;
            for (std::size_t i = 0; i < n; ++i)
            {
                total += wide ? cost[i * cols + pick[i]] : cost[pick[i] * cols + i];
            }
            best = goal == assignment_goal::minimize ? std::min(best, total) : std::max(best, total);
        } while (std::next_permutation(pick.begin(), pick.end()));
        return best;
    }

    // Checks that the assignment is injective, complete on the smaller side, and sums to `total`.
    void check_valid(const std::vector<double>& cost, std::size_t rows, std::size_t cols, const std::vector<std::size_t>& a, double total)
    {
        std::vector<char> used(cols, 0);
        std::size_t assigned = 0;
        double sum = 0.0;
        for (std::size_t r = 0; r < rows; ++r)
        {
            if (a[r] == unassigned)
            {
                continue;
            }
            REQUIRE(a[r] < cols);
            REQUIRE_FALSE(used[a[r]]);
            used[a[r]] = 1;
            sum += cost[r * cols + a[r]];
            ++assigned;
        }
        REQUIRE(assigned == std::min(rows, cols));
        REQUIRE(sum == Approx(total).margin(1e-9));
    }
}

TEST_CASE("linear_assignment matches exhaustive search on small random matrices", "[search][assignment]")
{
    std::mt19937 gen(7);
    for (int trial = 0; trial < 300; ++trial)
    {
        const std::size_t rows = 1 + gen() % 6, cols = 1 + gen() % 6;
        // Small integer costs make ties common; real ones exercise the general case.
        const bool ties = trial % 2 == 0;
        std::vector<double> cost(rows * cols);
        for (auto& c : cost)
        {
            c = ties ? static_cast<double>(gen() % 3) : std::uniform_real_distribution<double>(-5.0, 5.0)(gen);
        }
        for (auto goal : {assignment_goal::minimize, assignment_goal::maximize})
        {
            std::vector<std::size_t> a(rows);
            const double total = linear_assignment(cost.data(), rows, cols, a.data(), goal);
            INFO("trial " << trial << ", " << rows << " x " << cols);
            check_valid(cost, rows, cols, a, total);
            REQUIRE(total == Approx(brute_force(cost, rows, cols, goal)).margin(1e-9));
        }
    }
}

TEST_CASE("linear_assignment in float finds a hidden permutation of a large matrix", "[search][assignment]")
{
    // Cost 0 on a hidden permutation, positive elsewhere: the optimum is that permutation.
    const std::size_t n = 200;
    std::mt19937 gen(3);
    std::vector<std::size_t> hidden(n);
    std::iota(hidden.begin(), hidden.end(), std::size_t{0});
    std::shuffle(hidden.begin(), hidden.end(), gen);
    std::vector<float> cost(n * n);
    for (std::size_t i = 0; i < n; ++i)
    {
        for (std::size_t j = 0; j < n; ++j)
        {
            cost[i * n + j] = j == hidden[i] ? 0.0f : 0.5f + std::uniform_real_distribution<float>(0.0f, 1.0f)(gen);
        }
    }
    std::vector<std::size_t> a(n);
    REQUIRE(linear_assignment(cost.data(), n, n, a.data()) == 0.0);
    REQUIRE(a == hidden);
}

TEST_CASE("linear_assignment handles empty problems and refuses bad costs", "[search][assignment]")
{
    std::vector<std::size_t> a(3, 0);
    REQUIRE(linear_assignment<double>(nullptr, 3, 0, a.data()) == 0.0);
    REQUIRE(std::all_of(a.begin(), a.end(), [](std::size_t x) { return x == unassigned; }));
    REQUIRE(linear_assignment<double>(nullptr, 0, 4, a.data()) == 0.0);

    std::vector<double> cost = {1.0, std::numeric_limits<double>::quiet_NaN(), 2.0, 3.0};
    REQUIRE_THROWS_WITH(linear_assignment(cost.data(), 2, 2, a.data()), Catch::Contains("(0, 1) is not finite"));
    cost[1] = std::numeric_limits<double>::infinity();
    REQUIRE_THROWS_AS(linear_assignment(cost.data(), 2, 2, a.data()), parameter_error);
    REQUIRE_THROWS_AS(linear_assignment<double>(nullptr, 2, 2, a.data()), parameter_error);
}

TEST_CASE("linear_assignment leaves the surplus rows of a tall matrix unassigned", "[search][assignment]")
{
    // Rows 1 and 3 are the cheap ones for columns 0 and 1.
    const std::vector<double> cost = {5, 5, 0, 9, 5, 5, 9, 0};
    std::vector<std::size_t> a(4);
    REQUIRE(linear_assignment(cost.data(), 4, 2, a.data()) == 0.0);
    REQUIRE(a == std::vector<std::size_t>{unassigned, 0, unassigned, 1});
}
