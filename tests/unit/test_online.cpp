// EMA, SWA and checkpoint averaging over many tensors, in place.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "test_support.hpp"

using namespace xmerge;

namespace
{
    // Several parameter tensors of different sizes, like a small model.
    struct model
    {
        std::vector<std::vector<float>> tensors;

        explicit model(std::uint32_t seed)
        {
            for (std::size_t size : {1u, 17u, 4096u, 50001u})
            {
                tensors.push_back(xmerge_test::random_floats(size, seed++));
            }
        }

        std::vector<const_tensor_ref> crefs() const
        {
            std::vector<const_tensor_ref> r;
            for (const auto& t : tensors)
            {
                r.push_back(as_tensor(t));
            }
            return r;
        }

        std::vector<tensor_ref> refs()
        {
            std::vector<tensor_ref> r;
            for (auto& t : tensors)
            {
                r.push_back(as_tensor(t));
            }
            return r;
        }
    };
}

TEST_CASE("EMA follows avg <- beta avg + (1 - beta) x", "[online][ema]")
{
    for (std::size_t threads : {1u, 2u})
    {
        model avg(1);
        std::vector<std::vector<double>> oracle;
        for (const auto& t : avg.tensors)
        {
            oracle.emplace_back(t.begin(), t.end());
        }
        ema e(avg.refs(), 0.9, {threads});
        for (std::uint32_t step = 0; step < 5; ++step)
        {
            const model params(100 + 10 * step);
            e.update(params.crefs());
            for (std::size_t t = 0; t < oracle.size(); ++t)
            {
                for (std::size_t i = 0; i < oracle[t].size(); ++i)
                {
                    oracle[t][i] = 0.9 * oracle[t][i] + 0.1 * params.tensors[t][i];
                }
            }
        }
        CHECK(e.steps() == 5);
        for (std::size_t t = 0; t < oracle.size(); ++t)
        {
            for (std::size_t i = 0; i < oracle[t].size(); ++i)
            {
                REQUIRE(avg.tensors[t][i] == Approx(oracle[t][i]).margin(1e-6));
            }
        }
    }
}

TEST_CASE("EMA checks its inputs", "[online][ema][errors]")
{
    model avg(1);
    CHECK_THROWS_AS(ema(avg.refs(), 1.5), parameter_error);
    CHECK_THROWS_AS(ema(avg.refs(), std::nan("")), parameter_error);
    ema e(avg.refs(), 0.99);
    const model params(2);
    auto fewer = params.crefs();
    fewer.pop_back();
    CHECK_THROWS_WITH(e.update(fewer), Catch::Contains("expected 4"));
    auto swapped = params.crefs();
    std::swap(swapped[0], swapped[1]);
    CHECK_THROWS_WITH(e.update(swapped), Catch::Contains("average.0") && Catch::Contains("[17]"));
    CHECK_THROWS_AS(e.update(params.crefs(), -0.1), parameter_error);
}

TEST_CASE("EMA keeps bfloat16 averages from float32 parameters", "[online][ema][dtype]")
{
    std::vector<bfloat16> avg(1000, bfloat16(1.0f));
    const std::vector<float> x(1000, 3.0f);
    ema e({as_tensor(avg)}, 0.5);
    e.update({as_tensor(x)});
    CHECK(static_cast<float>(avg[999]) == 2.0f);
}

TEST_CASE("SWA holds the running mean; its first update copies", "[online][swa]")
{
    model avg(1);
    for (auto& t : avg.tensors)
    {
        std::fill(t.begin(), t.end(), std::numeric_limits<float>::quiet_NaN());  // uninitialised
    }
    swa s(avg.refs(), {2});
    std::vector<model> seen;
    for (std::uint32_t k = 0; k < 6; ++k)
    {
        seen.emplace_back(200 + 10 * k);
        s.update(seen.back().crefs());
    }
    CHECK(s.count() == 6);
    for (std::size_t t = 0; t < avg.tensors.size(); ++t)
    {
        for (std::size_t i = 0; i < avg.tensors[t].size(); ++i)
        {
            double mean = 0.0;
            for (const auto& m : seen)
            {
                mean += m.tensors[t][i];
            }
            REQUIRE(avg.tensors[t][i] == Approx(mean / 6.0).margin(1e-6));
        }
    }
}

TEST_CASE("checkpoint averages weight a stream of checkpoints", "[online][checkpoint_average]")
{
    CHECK(metric_weight(2.0, 0.0, metric_kind::loss) == 1.0);
    CHECK(metric_weight(2.0, 1.0, metric_kind::loss) == 0.5);
    CHECK(metric_weight(100.0, 2.0, metric_kind::step) == Approx(1e4));
    CHECK_THROWS_AS(metric_weight(0.0, 1.0, metric_kind::loss), parameter_error);
    CHECK_THROWS_AS(metric_weight(1.0, -1.0, metric_kind::loss), parameter_error);

    model avg(1);
    checkpoint_average acc(avg.refs());
    const std::vector<double> losses{2.0, 1.0, 0.5};
    std::vector<model> seen;
    double total = 0.0;
    for (std::size_t k = 0; k < losses.size(); ++k)
    {
        seen.emplace_back(300 + 10 * static_cast<std::uint32_t>(k));
        acc.add(seen.back().crefs(), losses[k], 1.5, metric_kind::loss);
        total += std::pow(losses[k], -1.5);
    }
    CHECK(acc.count() == 3);
    CHECK(acc.total_weight() == Approx(total));
    for (std::size_t t = 0; t < avg.tensors.size(); ++t)
    {
        for (std::size_t i = 0; i < avg.tensors[t].size(); ++i)
        {
            double s = 0.0;
            for (std::size_t k = 0; k < seen.size(); ++k)
            {
                s += std::pow(losses[k], -1.5) * seen[k].tensors[t][i];
            }
            REQUIRE(avg.tensors[t][i] == Approx(s / total).margin(1e-6));
        }
    }
    CHECK_THROWS_AS(acc.add(seen[0].crefs(), 0.0), parameter_error);
    CHECK_THROWS_AS(acc.add(seen[0].crefs(), -1.0), parameter_error);
}
