// Windowed averages: LAWA's ring of snapshots and SWAD's loss-valley rule.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "test_support.hpp"
#include "xmerge/core/half.hpp"
#include "xmerge/online/lawa.hpp"
#include "xmerge/online/swad.hpp"

using namespace xmerge;

namespace
{
    const std::vector<std::size_t> sizes = {0, 1, 3, 17, 4099};

    // The iterate of a step, made once and kept.
    const std::vector<std::vector<float>>& iterate(std::size_t step)
    {
        static std::vector<std::vector<std::vector<float>>> made;
        while (made.size() <= step)
        {
            std::vector<std::vector<float>> x;
            for (std::size_t k = 0; k < sizes.size(); ++k)
            {
                x.push_back(xmerge_test::random_floats(sizes[k], static_cast<std::uint32_t>(1000 * made.size() + k)));
            }
            made.push_back(std::move(x));
        }
        return made[step];
    }

    std::vector<const_tensor_ref> crefs(const std::vector<std::vector<float>>& b)
    {
        std::vector<const_tensor_ref> r;
        for (const auto& t : b)
        {
            r.push_back(as_tensor(t));
        }
        return r;
    }

    std::vector<tensor_ref> refs(std::vector<std::vector<float>>& b)
    {
        std::vector<tensor_ref> r;
        for (auto& t : b)
        {
            r.push_back(as_tensor(t));
        }
        return r;
    }

    std::vector<std::vector<float>> zeros()
    {
        std::vector<std::vector<float>> z;
        for (std::size_t n : sizes)
        {
            z.emplace_back(n, std::numeric_limits<float>::quiet_NaN());
        }
        return z;
    }

    float stored(float v, dtype storage)
    {
        switch (storage)
        {
        case dtype::bfloat16:
            return static_cast<float>(bfloat16(v));
        case dtype::float16:
            return static_cast<float>(float16(v));
        default:
            return v;
        }
    }
}

TEST_CASE("LAWA averages the last k snapshots taken every nu steps", "[online][lawa]")
{
    for (dtype storage : {dtype::float32, dtype::bfloat16, dtype::float16})
    {
        for (std::size_t threads : {1u, 2u})
        {
            const std::size_t k = 3, every = 4;
            const auto shapes = iterate(0);
            lawa window(crefs(shapes), k, every, storage, {threads});
            std::vector<std::size_t> taken;
            for (std::size_t step = 1; step <= 23; ++step)
            {
                const bool snap = window.update(crefs(iterate(step)));
                CHECK(snap == (step % every == 0));
                if (snap)
                {
                    taken.push_back(step);
                }
                if (taken.empty())
                {
                    auto out = zeros();
                    CHECK_THROWS_AS(window.average(refs(out)), parameter_error);
                    continue;
                }
                const std::size_t m = std::min(k, taken.size());
                CHECK(window.size() == m);
                auto out = zeros();
                window.average(refs(out));
                for (std::size_t t = 0; t < sizes.size(); ++t)
                {
                    for (std::size_t i = 0; i < sizes[t]; ++i)
                    {
                        double expect = 0.0;
                        for (std::size_t j = taken.size() - m; j < taken.size(); ++j)
                        {
                            const float v = iterate(taken[j])[t][i];
                            expect += stored(v, storage);
                        }
                        REQUIRE(out[t][i] == Approx(expect / double(m)).margin(1e-6));
                    }
                }
            }
            CHECK(window.steps() == 23);
            CHECK(window.capacity() == k);
            // The newest snapshot is step 20.
            if (storage == dtype::float32)
            {
                CHECK(window.held(0)[4].typed_data<float>()[5] == iterate(20)[4][5]);
                CHECK(window.held(2)[4].typed_data<float>()[5] == iterate(12)[4][5]);
            }
            CHECK_THROWS_AS(window.held(k), parameter_error);
        }
    }
    const auto shapes = iterate(0);
    CHECK_THROWS_AS(lawa(crefs(shapes), 0), parameter_error);
    CHECK_THROWS_AS(lawa(crefs(shapes), 2, 0), parameter_error);
    lawa window(crefs(shapes), 2);
    std::vector<std::vector<float>> wrong = {{1.0f}};
    CHECK_THROWS_AS(window.update(crefs(wrong)), parameter_error);
}

namespace
{
    // The rule of swad.hpp written out over a finished run of losses: the kept segment indices.
    std::vector<std::size_t> valley(const std::vector<double>& loss, std::size_t ns, std::size_t ne, double r)
    {
        std::size_t s = loss.size();
        for (std::size_t i = 0; i + ns <= loss.size(); ++i)
        {
            bool lowest = true;
            for (std::size_t j = i + 1; j < i + ns; ++j)
            {
                lowest = lowest && loss[i] <= loss[j];
            }
            if (lowest)
            {
                s = i;
                break;
            }
        }
        std::vector<std::size_t> kept;
        if (s == loss.size())
        {
            return kept;
        }
        double mean = 0.0;
        for (std::size_t j = s; j < s + ns; ++j)
        {
            mean += loss[j] / double(ns);
        }
        const double tau = (1.0 + r) * mean;
        for (std::size_t i = s; i < loss.size(); ++i)
        {
            double low = loss[i];
            for (std::size_t j = i; j < std::min(loss.size(), i + ne); ++j)
            {
                low = std::min(low, loss[j]);
            }
            if (low > tau)
            {
                break;
            }
            kept.push_back(i);
        }
        return kept;
    }
}

TEST_CASE("SWAD keeps the iterates of the loss valley", "[online][swad]")
{
    std::mt19937 gen(5);
    std::vector<std::vector<double>> runs = {
        // Falls, flattens, then rises past the tolerance for good.
        {5, 4, 3, 2.5, 2.4, 2.45, 2.42, 2.5, 2.6, 3.5, 3.6, 3.7, 3.8, 3.9, 4.0, 4.1, 4.2},
        // Never stops improving: no start.
        {9, 8, 7, 6, 5, 4},
        // A spike inside the valley that the tolerance window rides over.
        {3, 2, 1, 1.1, 1.05, 9, 1.1, 1.2, 1.0, 1.1, 1.2},
    };
    for (int r = 0; r < 4; ++r)
    {
        std::uniform_real_distribution<double> d(0.5, 1.5);
        std::vector<double> run;
        for (int i = 0; i < 30; ++i)
        {
            run.push_back(d(gen) + (i > 20 ? 0.1 * (i - 20) : 0.0));
        }
        runs.push_back(run);
    }
    for (const auto& loss : runs)
    {
        for (std::size_t threads : {1u, 2u})
        {
            const std::size_t per_segment = 3;
            const auto shapes = iterate(0);
            swad avg(crefs(shapes), {}, {threads});
            std::size_t step = 0;
            for (double l : loss)
            {
                for (std::size_t i = 0; i < per_segment; ++i)
                {
                    avg.update(crefs(iterate(++step)));
                }
                avg.evaluate(l);
            }
            avg.finish();
            const auto kept = valley(loss, 3, 6, 0.3);
            CAPTURE(loss);
            CHECK(avg.kept() == kept);
            auto out = zeros();
            if (kept.empty())
            {
                CHECK_THROWS_AS(avg.average(refs(out)), parameter_error);
                continue;
            }
            CHECK(avg.start() == kept.front());
            CHECK(avg.iterates() == kept.size() * per_segment);
            avg.average(refs(out));
            for (std::size_t t = 0; t < sizes.size(); ++t)
            {
                for (std::size_t i = 0; i < sizes[t]; ++i)
                {
                    double expect = 0.0;
                    for (std::size_t s : kept)
                    {
                        for (std::size_t j = 1; j <= per_segment; ++j)
                        {
                            expect += iterate(s * per_segment + j)[t][i];
                        }
                    }
                    REQUIRE(out[t][i] == Approx(expect / double(kept.size() * per_segment)).margin(1e-5));
                }
            }
        }
    }
}

TEST_CASE("SWAD refuses bad losses and options", "[online][swad]")
{
    const auto shapes = iterate(0);
    swad_options bad;
    bad.n_converge = 0;
    CHECK_THROWS_AS(swad(crefs(shapes), bad), parameter_error);
    bad = {};
    bad.tolerance_ratio = -1.0;
    CHECK_THROWS_AS(swad(crefs(shapes), bad), parameter_error);
    swad avg(crefs(shapes));
    CHECK_THROWS_AS(avg.evaluate(1.0), parameter_error);
    avg.update(crefs(iterate(1)));
    CHECK_THROWS_AS(avg.evaluate(std::numeric_limits<double>::quiet_NaN()), parameter_error);
}
