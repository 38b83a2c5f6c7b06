// Stochastic restore (CoTTA): restored elements are the source's exactly,
// the others untouched; the share restored matches p; draws depend on
// (seed, step, tensor, element) only.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "test_support.hpp"
#include "xmerge/online/stochastic_restore.hpp"

using namespace xmerge;
using xmerge_test::buffer;

namespace
{
    struct pair_of_models
    {
        std::vector<buffer> weights;
        std::vector<buffer> source;

        pair_of_models(dtype type, const std::vector<std::size_t>& sizes)
        {
            for (std::size_t i = 0; i < sizes.size(); ++i)
            {
                weights.emplace_back(type, xmerge_test::random_floats(sizes[i], static_cast<std::uint32_t>(10 + i)));
                source.emplace_back(type, xmerge_test::random_floats(sizes[i], static_cast<std::uint32_t>(50 + i), 2.0f, 3.0f));
            }
        }

        std::vector<tensor_ref> refs()
        {
            std::vector<tensor_ref> r;
            for (auto& b : weights)
            {
                r.push_back(b.ref());
            }
            return r;
        }

        std::vector<const_tensor_ref> crefs() const
        {
            std::vector<const_tensor_ref> r;
            for (const auto& b : source)
            {
                r.push_back(b.cref());
            }
            return r;
        }
    };

    // Per tensor, 1 where the element now holds the source's bytes, 0 where it kept its own; fails on anything else.
    std::vector<std::vector<int>> restored(const pair_of_models& before, const pair_of_models& after)
    {
        std::vector<std::vector<int>> out;
        for (std::size_t i = 0; i < after.weights.size(); ++i)
        {
            const auto w0 = before.weights[i].values();
            const auto w1 = after.weights[i].values();
            const auto s = after.source[i].values();
            std::vector<int> r(w1.size());
            for (std::size_t j = 0; j < w1.size(); ++j)
            {
                // The source lies in [2, 3) and the weights in [-1, 1): the two never coincide.
                REQUIRE((w1[j] == s[j] || w1[j] == w0[j]));
                r[j] = w1[j] == s[j] ? 1 : 0;
            }
            out.push_back(r);
        }
        return out;
    }
}

TEST_CASE("stochastic_restore: restored elements are the source's, the rest untouched, at rate p", "[online][restore]")
{
    const std::vector<std::size_t> sizes = {0, 1, simd::lanes - 1, simd::lanes + 1, 200003};
    for (dtype type : {dtype::float32, dtype::bfloat16, dtype::float16})
    {
        for (double p : {0.0, 0.01, 0.3, 1.0})
        {
            CAPTURE(name_of(type), p);
            const pair_of_models before(type, sizes);
            pair_of_models m = before;
            stochastic_restore r(m.refs(), m.crefs(), p, 7);
            r.apply();
            CHECK(r.steps() == 1);
            const auto mask = restored(before, m);
            const std::vector<int>& big = mask.back();
            double count = 0;
            for (int v : big)
            {
                count += v;
            }
            const double n = static_cast<double>(big.size());
            // Within 5 standard deviations of n p (exact at p = 0 and 1).
            CHECK(std::abs(count - n * p) <= 5.0 * std::sqrt(n * p * (1.0 - p)) + 1e-9);
            if (p == 1.0)
            {
                for (std::size_t i = 0; i < sizes.size(); ++i)
                {
                    CHECK(m.weights[i].bytes() == m.source[i].bytes());
                }
            }
            if (p == 0.0)
            {
                for (std::size_t i = 0; i < sizes.size(); ++i)
                {
                    CHECK(m.weights[i].bytes() == before.weights[i].bytes());
                }
            }
        }
    }
}

TEST_CASE("stochastic_restore: the draws depend on seed, step, tensor and element only", "[online][restore]")
{
    const std::vector<std::size_t> sizes = {5000, 5000, 37};
    const pair_of_models before(dtype::float32, sizes);
    const auto run = [&](std::uint64_t seed, std::uint64_t step, std::size_t threads, std::size_t chunk)
    {
        pair_of_models m = before;
        eval_options o;
        o.threads = threads;
        o.chunk_size = chunk;
        stochastic_restore(m.refs(), m.crefs(), 0.5, seed, o).apply(step);
        return restored(before, m);
    };
    const auto reference = run(1, 3, 1, XMERGE_DEFAULT_CHUNK_SIZE);
    CHECK(run(1, 3, 2, XMERGE_DEFAULT_CHUNK_SIZE) == reference);
    CHECK(run(1, 3, 3, 64) == reference);
    CHECK(run(1, 4, 1, XMERGE_DEFAULT_CHUNK_SIZE) != reference);
    CHECK(run(2, 3, 1, XMERGE_DEFAULT_CHUNK_SIZE) != reference);
    // Tensors of the same size draw different masks.
    CHECK(reference[0] != reference[1]);

    // apply() counts steps: its second call draws step 1's elements.
    pair_of_models m = before;
    stochastic_restore r(m.refs(), m.crefs(), 0.5, 1);
    r.apply();
    r.apply();
    pair_of_models expected = before;
    stochastic_restore e(expected.refs(), expected.crefs(), 0.5, 1);
    e.apply(0);
    e.apply(1);
    for (std::size_t i = 0; i < sizes.size(); ++i)
    {
        CHECK(m.weights[i].bytes() == expected.weights[i].bytes());
    }
}

TEST_CASE("stochastic_restore: bad arguments are refused and nothing is written", "[online][restore]")
{
    pair_of_models m(dtype::float32, {4, 6});
    const auto original = m.weights[0].bytes();
    CHECK_THROWS_AS(stochastic_restore(m.refs(), m.crefs(), 1.5), parameter_error);
    CHECK_THROWS_AS(stochastic_restore(m.refs(), m.crefs(), -0.1), parameter_error);
    CHECK_THROWS_AS(stochastic_restore(m.refs(), m.crefs(), std::nan("")), parameter_error);
    CHECK_THROWS_AS(stochastic_restore(m.refs(), {m.source[0].cref()}, 0.5), parameter_error);
    CHECK_THROWS_AS(stochastic_restore(m.refs(), {m.source[1].cref(), m.source[0].cref()}, 0.5), shape_error);
    CHECK(m.weights[0].bytes() == original);
}
