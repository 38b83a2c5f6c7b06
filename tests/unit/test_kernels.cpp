// The raw-pointer kernels against their scalar twins: the band pass of the
// magnitude selection, Gram accumulation, and the one accumulation order of
// dot products that every node shares.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <xmerge/kernels/gram.hpp>
#include <xmerge/kernels/rank_band.hpp>
#include <xmerge/kernels/rank_select.hpp>

#include "test_support.hpp"

using namespace xmerge;

namespace
{
    /// Values with ties, zeros of both signs, NaN and infinities, readable in whole batches.
    std::vector<float> awkward_keys(std::size_t n, std::uint32_t seed)
    {
        auto v = xmerge_test::random_floats(n + simd::lanes, seed, -4.0f, 4.0f);
        for (std::size_t i = 0; i < n; ++i)
        {
            switch (i % 23)
            {
                case 3:
                    v[i] = v[i / 2];  // a tie with an earlier element
                    break;
                case 7:
                    v[i] = -0.0f;
                    break;
                case 11:
                    v[i] = 0.0f;
                    break;
                case 13:
                    v[i] = i % 2 ? std::numeric_limits<float>::infinity() : -std::numeric_limits<float>::infinity();
                    break;
                case 17:
                    v[i] = std::numeric_limits<float>::quiet_NaN();
                    break;
                default:
                    break;
            }
        }
        return v;
    }

    struct tally
    {
        std::size_t above = 0;
        kernels::band_candidates candidates;
    };

    /// The band pass over [0, n) in chunks, by the batch kernel or its twin.
    template <class Pass>
    std::vector<tally> run_bands(const std::vector<float>& keys, std::size_t n, const std::vector<kernels::rank_band>& bands, std::size_t chunk, Pass&& pass)
    {
        std::vector<tally> out(bands.size());
        for (std::size_t begin = 0; begin < n; begin += chunk)
        {
            const std::size_t count = std::min(chunk, n - begin);
            std::size_t above[2] = {0, 0};
            kernels::band_candidates* lists[2] = {&out[0].candidates, bands.size() > 1 ? &out[1].candidates : nullptr};
            pass(keys.data() + begin, count, begin, 0, bands.data(), bands.size(), above, lists);
            for (std::size_t b = 0; b < bands.size(); ++b)
            {
                out[b].above += above[b];
            }
        }
        return out;
    }

    std::uint64_t rank_of(const std::vector<float>& keys, std::size_t i)
    {
        return kernels::packed_rank(simd::bits_of(keys[i]) & 0x7FFFFFFF, i);
    }
}

TEST_CASE("the band pass counts and collects what its scalar twin does", "[kernels][select][simd]")
{
    for (std::size_t n : xmerge_test::odd_sizes())
    {
        if (n == 0)
        {
            continue;
        }
        const auto keys = awkward_keys(n, 5);
        // band edges taken from the data itself, so that ties sit on the edges
        std::vector<std::uint64_t> order(n);
        for (std::size_t i = 0; i < n; ++i)
        {
            order[i] = rank_of(keys, i);
        }
        std::sort(order.begin(), order.end(), std::greater<>());
        const kernels::rank_band narrow{kernels::unpack_rank(order[n / 5]), kernels::unpack_rank(order[std::min(n - 1, n / 5 + n / 7)])};
        const kernels::rank_band wide{kernels::unpack_rank(order[0]), kernels::unpack_rank(order[n - 1])};
        const kernels::rank_band open{{std::numeric_limits<std::int32_t>::max(), 0}, {-1, std::numeric_limits<std::uint64_t>::max()}};
        for (const auto& bands : {std::vector<kernels::rank_band>{narrow}, std::vector<kernels::rank_band>{wide, narrow}, std::vector<kernels::rank_band>{open}})
        {
            for (std::size_t chunk : {std::size_t{64}, std::size_t{2048}})
            {
                const auto got = run_bands(keys, n, bands, chunk, [](auto&&... a) { kernels::band_pass(a...); });
                const auto want = run_bands(keys, n, bands, chunk, [](auto&&... a) { kernels::scalar::band_pass(a...); });
                INFO("n = " << n << ", chunk = " << chunk);
                for (std::size_t b = 0; b < bands.size(); ++b)
                {
                    REQUIRE(got[b].above == want[b].above);
                    REQUIRE(got[b].candidates.size == want[b].candidates.size);
                    for (std::size_t c = 0; c < got[b].candidates.size; ++c)
                    {
                        REQUIRE(got[b].candidates.bits[c] == want[b].candidates.bits[c]);
                        REQUIRE(got[b].candidates.offsets[c] == want[b].candidates.offsets[c]);
                    }
                    // the oracle: ranks strictly before hi, and ranks from hi to lo
                    std::size_t above = 0, inside = 0;
                    for (std::size_t i = 0; i < n; ++i)
                    {
                        const kernels::rank_key k{simd::bits_of(keys[i]) & 0x7FFFFFFF, i};
                        if (kernels::ranks_before(k, bands[b].hi))
                        {
                            ++above;
                        }
                        else if (!kernels::ranks_before(bands[b].lo, k))
                        {
                            ++inside;
                        }
                    }
                    REQUIRE(got[b].above == above);
                    REQUIRE(got[b].candidates.size == inside);
                }
            }
        }
    }
}

TEST_CASE("the selection inside a band finds what a full sort finds", "[kernels][select]")
{
    const auto keys = awkward_keys(70001, 7);
    const std::size_t task_size = 4096;
    const kernels::rank_band open{{std::numeric_limits<std::int32_t>::max(), 0}, {-1, std::numeric_limits<std::uint64_t>::max()}};
    std::vector<kernels::band_candidates> tasks((70001 + task_size - 1) / task_size);
    for (std::size_t t = 0; t < tasks.size(); ++t)
    {
        const std::size_t begin = t * task_size;
        std::size_t above = 0;
        kernels::band_candidates* out[1] = {&tasks[t]};
        kernels::band_pass(keys.data() + begin, std::min(task_size, 70001 - begin), begin, begin, &open, 1, &above, out);
        REQUIRE(above == 0);
    }
    std::vector<const kernels::band_candidates*> lists;
    for (const auto& t : tasks)
    {
        lists.push_back(&t);
    }
    for (std::size_t position : {std::size_t{0}, std::size_t{1}, std::size_t{17}, std::size_t{35000}, std::size_t{70000}})
    {
        const auto got = kernels::select_ranked(lists.data(), lists.size(), task_size, position);
        const auto want = kernels::scalar::select_ranked(lists.data(), lists.size(), task_size, position);
        INFO("position " << position);
        CHECK(got.bits == want.bits);
        CHECK(got.index == want.index);
        // exactly `position` elements rank before it
        std::size_t before = 0;
        for (std::size_t i = 0; i < 70001; ++i)
        {
            before += kernels::ranks_before({simd::bits_of(keys[i]) & 0x7FFFFFFF, i}, got);
        }
        CHECK(before == position);
    }
}

TEST_CASE("a sample records every element's rank", "[kernels][select]")
{
    const auto keys = awkward_keys(100, 6);
    std::vector<std::uint64_t> sample;
    kernels::sample_ranks(keys.data(), 100, 1000, sample);
    REQUIRE(sample.size() == 100);
    for (std::size_t i = 0; i < 100; ++i)
    {
        const auto k = kernels::unpack_rank(sample[i]);
        CHECK(k.index == 1000 + i);
        CHECK(k.bits == (simd::bits_of(keys[i]) & 0x7FFFFFFF));
    }
    // packed ranks order as ranks_before does
    for (std::size_t i = 1; i < 100; ++i)
    {
        const auto a = kernels::unpack_rank(sample[i - 1]);
        const auto b = kernels::unpack_rank(sample[i]);
        CHECK((sample[i - 1] > sample[i]) == kernels::ranks_before(a, b));
    }
}

TEST_CASE("Gram entries have the bits of the dot products of the same vectors", "[kernels][gram][simd]")
{
    for (std::size_t n : xmerge_test::odd_sizes())
    {
        std::vector<std::vector<float>> v;
        for (std::uint32_t k = 0; k < 5; ++k)
        {
            auto x = xmerge_test::random_floats(n + simd::lanes, 40 + k);
            std::fill(x.begin() + static_cast<std::ptrdiff_t>(n), x.end(), 0.0f);
            v.push_back(std::move(x));
        }
        const float* terms[5] = {v[0].data(), v[1].data(), v[2].data(), v[3].data(), v[4].data()};
        std::vector<double> got(15, 0.0), twin(15, 0.0);
        kernels::gram_upper(terms, 5, n, got.data());
        kernels::scalar::gram_upper(terms, 5, n, twin.data());
        std::size_t p = 0;
        INFO("n = " << n);
        for (std::size_t i = 0; i < 5; ++i)
        {
            for (std::size_t j = i; j < 5; ++j, ++p)
            {
                double oracle = 0.0;
                for (std::size_t e = 0; e < n; ++e)
                {
                    oracle += static_cast<double>(v[i][e]) * v[j][e];
                }
                REQUIRE(got[p] == simd::dot(n, v[i].data(), v[j].data()));
                REQUIRE(got[p] == Approx(oracle).margin(1e-5 * std::sqrt(static_cast<double>(n) + 1)));
                REQUIRE(twin[p] == Approx(oracle).margin(1e-5 * std::sqrt(static_cast<double>(n) + 1)));
            }
        }
    }
}

TEST_CASE("a dot product gives the same bits from dot, norm and a Gram matrix", "[kernels][gram]")
{
    const std::size_t n = 70001;
    const auto a = xmerge_test::random_floats(n, 51);
    const auto b = xmerge_test::random_floats(n, 52);
    const auto base = xmerge_test::random_floats(n, 53);
    const auto da = input(a) - input(base);
    const auto db = input(b) - input(base);
    double g01 = 0.0, g00 = 0.0;
    expression_list<std::decay_t<decltype(da)>> pair;
    pair.push_back(da);
    pair.push_back(db);
    std::vector<float> out;
    evaluate(gram_combination(pair,
                              [&](const gram_matrix& g)
                              {
                                  g01 = g(0, 1);
                                  g00 = g(0, 0);
                                  return std::vector<double>{1.0, 0.0};
                              }),
             out);
    CHECK(g01 == value_of(xmerge::dot(da, db)));
    CHECK(g00 == value_of(xmerge::sum_squares(da)));
    CHECK(std::sqrt(g00) == value_of(xmerge::norm(da)));
}

TEST_CASE("dot, sum and maximum agree with their scalar twins", "[kernels][simd]")
{
    for (std::size_t n : xmerge_test::odd_sizes())
    {
        const auto a = xmerge_test::random_floats(n, 61);
        const auto b = xmerge_test::random_floats(n, 62);
        double oracle = 0.0;
        for (std::size_t i = 0; i < n; ++i)
        {
            oracle += static_cast<double>(a[i]) * b[i];
        }
        const double margin = 1e-5 * std::sqrt(static_cast<double>(n) + 1);
        INFO("n = " << n);
        CHECK(simd::dot(n, a.data(), b.data()) == Approx(oracle).margin(margin));
        CHECK(simd::dot<float>(n, a.data(), b.data()) == Approx(oracle).margin(margin));
        CHECK(simd::dot(n, a.data(), b.data()) == Approx(simd::sum(n, [](auto x, auto y) { return x * y; }, a.data(), b.data())).margin(margin));
        CHECK(simd::maximum(n, 0.0f, [](auto x) { return simd::abs(x); }, a.data()) == simd::maximum<float>(n, 0.0f, [](auto x) { return simd::abs(x); }, a.data()));
    }
}

TEST_CASE("counter-based uniforms match their scalar twin, also across a 2^32 index boundary", "[kernels][random][simd]")
{
    const auto key = simd::make_random_key(11, 22, 33);
    constexpr std::size_t w = simd::lanes;
    for (std::uint64_t start : {std::uint64_t{0}, std::uint64_t{12345}, (std::uint64_t{1} << 32) - 7, (std::uint64_t{1} << 32) - 1, std::uint64_t{5} << 32})
    {
        alignas(64) float lanes_of[w];
        simd::batch_traits<simd::batch>::store(lanes_of, simd::uniform<simd::batch>(key, start));
        for (std::size_t l = 0; l < w; ++l)
        {
            INFO("index " << start + l);
            REQUIRE(lanes_of[l] == simd::uniform<float>(key, start + l));
            REQUIRE(lanes_of[l] >= 0.0f);
            REQUIRE(lanes_of[l] < 1.0f);
        }
    }
}

TEST_CASE("the band pass over differences of inputs equals the one over the stored differences", "[kernels][select][dtype]")
{
    const std::size_t n = 2049;
    for (dtype type : {dtype::float32, dtype::bfloat16, dtype::float16})
    {
        const xmerge_test::buffer x(type, awkward_keys(n + simd::lanes, 8));
        const xmerge_test::buffer base(type, awkward_keys(n + simd::lanes, 9));
        const auto xv = x.values();
        const auto bv = base.values();
        std::vector<float> keys(n + simd::lanes, 0.0f);
        for (std::size_t i = 0; i < n; ++i)
        {
            keys[i] = xv[i] - bv[i];
        }
        std::vector<std::uint64_t> order;
        for (std::size_t i = 0; i < n; ++i)
        {
            order.push_back(rank_of(keys, i));
        }
        std::sort(order.begin(), order.end(), std::greater<>());
        const kernels::rank_band band{kernels::unpack_rank(order[300]), kernels::unpack_rank(order[900])};
        kernels::band_candidates stored, fused, twin;
        std::size_t above[3] = {0, 0, 0};
        kernels::band_candidates* out[1] = {&stored};
        kernels::band_pass(keys.data(), n, 0, 0, &band, 1, &above[0], out);
        xmerge::detail::with_element_type(type,
                                          [&](auto tag)
                                          {
                                              using T = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
                                              const T* xs = reinterpret_cast<const T*>(x.bytes().data());
                                              const T* bs = reinterpret_cast<const T*>(base.bytes().data());
                                              kernels::band_candidates* f[1] = {&fused};
                                              kernels::band_pass_difference(xs, bs, n, 0, 0, &band, 1, &above[1], f);
                                              kernels::band_candidates* s[1] = {&twin};
                                              kernels::scalar::band_pass_difference(xs, bs, n, 0, 0, &band, 1, &above[2], s);
                                          });
        INFO(name_of(type));
        REQUIRE(above[0] == above[1]);
        REQUIRE(above[0] == above[2]);
        REQUIRE(stored.size == fused.size);
        REQUIRE(stored.size == twin.size);
        for (std::size_t c = 0; c < stored.size; ++c)
        {
            REQUIRE(stored.offsets[c] == fused.offsets[c]);
            REQUIRE(stored.bits[c] == fused.bits[c]);
            REQUIRE(stored.bits[c] == twin.bits[c]);
        }
    }
}
