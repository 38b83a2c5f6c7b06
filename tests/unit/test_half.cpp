// Scalar dtype conversions (golden values) and the SIMD conversion paths against them.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "test_support.hpp"

using namespace xmerge;

TEST_CASE("bfloat16 rounds to nearest even and keeps specials", "[half]")
{
    CHECK(float_to_bf16_bits(1.0f) == 0x3F80);
    CHECK(float_to_bf16_bits(-2.0f) == 0xC000);
    // exactly halfway: ties go to the even neighbour
    CHECK(float_to_bf16_bits(float_from_bits(0x3F808000u)) == 0x3F80);
    CHECK(float_to_bf16_bits(float_from_bits(0x3F818000u)) == 0x3F82);
    // just above halfway rounds up
    CHECK(float_to_bf16_bits(float_from_bits(0x3F808001u)) == 0x3F81);
    CHECK(float_to_bf16_bits(-0.0f) == 0x8000);
    CHECK(float_to_bf16_bits(std::numeric_limits<float>::infinity()) == 0x7F80);
    CHECK(float_to_bf16_bits(-std::numeric_limits<float>::infinity()) == 0xFF80);
    // the largest float rounds up to infinity
    CHECK(float_to_bf16_bits(std::numeric_limits<float>::max()) == 0x7F80);
    // NaNs stay NaN, quiet, with their sign
    const std::uint16_t qnan = float_to_bf16_bits(std::numeric_limits<float>::quiet_NaN());
    CHECK((qnan & 0x7F80) == 0x7F80);
    CHECK((qnan & 0x007F) != 0);
    CHECK(float_to_bf16_bits(float_from_bits(0x7F800001u)) == 0x7FC0);  // signalling NaN with a low payload
    CHECK(float_to_bf16_bits(float_from_bits(0xFF800001u)) == 0xFFC0);
    // subnormals round like any other value
    CHECK(float_to_bf16_bits(float_from_bits(0x00008000u)) == 0x0000);
    CHECK(float_to_bf16_bits(float_from_bits(0x00018000u)) == 0x0002);
    CHECK(bf16_bits_to_float(0x3F80) == 1.0f);
    CHECK(std::signbit(bf16_bits_to_float(0x8000)));
}

TEST_CASE("float16 rounds to nearest even, overflows to infinity, keeps subnormals", "[half]")
{
    CHECK(float_to_f16_bits(1.0f) == 0x3C00);
    CHECK(float_to_f16_bits(-2.0f) == 0xC000);
    CHECK(float_to_f16_bits(65504.0f) == 0x7BFF);
    CHECK(float_to_f16_bits(65519.0f) == 0x7BFF);
    CHECK(float_to_f16_bits(65520.0f) == 0x7C00);  // halfway to 65536: ties to even, which is infinity
    CHECK(float_to_f16_bits(1e10f) == 0x7C00);
    CHECK(float_to_f16_bits(-1e10f) == 0xFC00);
    CHECK(float_to_f16_bits(std::ldexp(1.0f, -14)) == 0x0400);  // smallest normal
    CHECK(float_to_f16_bits(std::ldexp(1.0f, -24)) == 0x0001);  // smallest subnormal
    CHECK(float_to_f16_bits(std::ldexp(1.0f, -25)) == 0x0000);  // halfway to it: even is zero
    CHECK(float_to_f16_bits(std::ldexp(3.0f, -26)) == 0x0001);  // 0.75 ulp rounds up
    CHECK(float_to_f16_bits(std::ldexp(3.0f, -25)) == 0x0002);  // 1.5 ulp: tie to even 2
    CHECK(float_to_f16_bits(std::ldexp(5.0f, -25)) == 0x0002);  // 2.5 ulp: tie to even 2
    CHECK(float_to_f16_bits(std::ldexp(1023.5f, -24)) == 0x0400);  // rounds up into the normal range
    CHECK(float_to_f16_bits(1.0f + std::ldexp(1.0f, -11)) == 0x3C00);  // tie: stays even
    CHECK(float_to_f16_bits(1.0f + std::ldexp(3.0f, -11)) == 0x3C02);  // tie: up to even
    CHECK(float_to_f16_bits(-0.0f) == 0x8000);
    CHECK(float_to_f16_bits(std::numeric_limits<float>::infinity()) == 0x7C00);
    CHECK(float_to_f16_bits(std::numeric_limits<float>::quiet_NaN()) == 0x7E00);
    CHECK(f16_bits_to_float(0x0001) == std::ldexp(1.0f, -24));
    CHECK(f16_bits_to_float(0x7BFF) == 65504.0f);
    CHECK(std::isinf(f16_bits_to_float(0xFC00)));
    CHECK(std::isnan(f16_bits_to_float(0x7C01)));
}

TEST_CASE("every 16-bit pattern survives widen then narrow", "[half]")
{
    for (std::uint32_t h = 0; h < 65536; ++h)
    {
        const auto b = static_cast<std::uint16_t>(h);
        const float fb = bf16_bits_to_float(b);
        const float fh = f16_bits_to_float(b);
        if (std::isnan(fb))
        {
            REQUIRE(std::isnan(bf16_bits_to_float(float_to_bf16_bits(fb))));
        }
        else
        {
            REQUIRE(float_to_bf16_bits(fb) == b);
        }
        if (std::isnan(fh))
        {
            REQUIRE(std::isnan(f16_bits_to_float(float_to_f16_bits(fh))));
        }
        else
        {
            REQUIRE(float_to_f16_bits(fh) == b);
        }
    }
}

TEST_CASE("float16 narrowing agrees with exact rounding of the double value", "[half]")
{
    // Oracle: nearest representable half by search over the finite halves.
    std::vector<double> halves;
    for (std::uint32_t h = 0; h < 0x7C00; ++h)
    {
        halves.push_back(f16_bits_to_float(static_cast<std::uint16_t>(h)));
    }
    const auto values = xmerge_test::random_floats(20000, 7, 0.0f, 70000.0f);
    const auto tiny = xmerge_test::random_floats(20000, 8, 0.0f, 1e-4f);
    for (const auto* set : {&values, &tiny})
    {
        for (float x : *set)
        {
            const auto it = std::lower_bound(halves.begin(), halves.end(), static_cast<double>(x));
            std::uint16_t expected;
            if (it == halves.end())
            {
                const double top = halves.back();
                expected = static_cast<double>(x) - top < 65536.0 - static_cast<double>(x) ? 0x7BFF : 0x7C00;
            }
            else if (*it == x || it == halves.begin())
            {
                expected = static_cast<std::uint16_t>(it - halves.begin());
            }
            else
            {
                const double hi = *it, lo = *(it - 1);
                const auto ihi = static_cast<std::uint16_t>(it - halves.begin());
                const double dlo = x - lo, dhi = hi - x;
                expected = dlo < dhi ? static_cast<std::uint16_t>(ihi - 1) : (dhi < dlo ? ihi : ((ihi & 1) ? static_cast<std::uint16_t>(ihi - 1) : ihi));
            }
            REQUIRE(float_to_f16_bits(x) == expected);
        }
    }
}

TEST_CASE("SIMD conversions give the scalar twin's bits", "[half][simd]")
{
    // every 16-bit pattern
    std::vector<bfloat16> hb(65536);
    std::vector<float16> hh(65536);
    for (std::uint32_t i = 0; i < 65536; ++i)
    {
        hb[i].bits = static_cast<std::uint16_t>(i);
        hh[i].bits = static_cast<std::uint16_t>(i);
    }
    for (std::size_t n : xmerge_test::odd_sizes())
    {
        const std::size_t m = std::min<std::size_t>(n, 65536);
        std::vector<float> a(m), b(m);
        simd::widen(hb.data(), a.data(), m);
        simd::scalar::widen(hb.data(), b.data(), m);
        REQUIRE(xmerge_test::same_bits(a, b));
        simd::widen(hh.data(), a.data(), m);
        simd::scalar::widen(hh.data(), b.data(), m);
        REQUIRE(xmerge_test::same_bits(a, b));
    }
    std::vector<float> a(65536), b(65536);
    simd::widen(hh.data(), a.data(), 65536);
    simd::scalar::widen(hh.data(), b.data(), 65536);
    REQUIRE(xmerge_test::same_bits(a, b));

    // a sweep of float bit patterns covering every exponent, plus specials
    std::vector<float> f;
    for (std::uint64_t u = 0; u < (1ull << 32); u += 4099)
    {
        f.push_back(float_from_bits(static_cast<std::uint32_t>(u)));
    }
    for (std::uint32_t u : {0x7F800001u, 0xFFC00000u, 0x7F7FFFFFu, 0x477FF000u, 0x477FEFFFu, 0x33000000u, 0x33000001u, 0x387FE000u, 0x80000000u})
    {
        f.push_back(float_from_bits(u));
    }
    std::vector<bfloat16> b1(f.size()), b2(f.size());
    std::vector<float16> h1(f.size()), h2(f.size());
    for (std::size_t n : xmerge_test::odd_sizes())
    {
        simd::narrow(f.data(), b1.data(), n);
        simd::scalar::narrow(f.data(), b2.data(), n);
        simd::narrow(f.data(), h1.data(), n);
        simd::scalar::narrow(f.data(), h2.data(), n);
        for (std::size_t i = 0; i < n; ++i)
        {
            REQUIRE(b1[i] == b2[i]);
            REQUIRE(h1[i] == h2[i]);
        }
    }
    simd::narrow(f.data(), b1.data(), f.size());
    simd::scalar::narrow(f.data(), b2.data(), f.size());
    simd::narrow(f.data(), h1.data(), f.size());
    simd::scalar::narrow(f.data(), h2.data(), f.size());
    for (std::size_t i = 0; i < f.size(); ++i)
    {
        REQUIRE(b1[i] == b2[i]);
        REQUIRE(h1[i] == h2[i]);
    }
}

TEST_CASE("conversions one register at a time give the scalar twin's bits", "[half][simd]")
{
    constexpr std::size_t w = simd::lanes;
    std::vector<bfloat16> hb(65536);
    std::vector<float16> hh(65536);
    for (std::uint32_t i = 0; i < 65536; ++i)
    {
        hb[i].bits = static_cast<std::uint16_t>(i);
        hh[i].bits = static_cast<std::uint16_t>(i);
    }
    alignas(64) float got[w];
    for (std::size_t i = 0; i + w <= 65536; i += w)
    {
        simd::batch_traits<simd::batch>::store(got, simd::load_widened<simd::batch>(hb.data() + i));
        for (std::size_t l = 0; l < w; ++l)
        {
            REQUIRE(float_bits(got[l]) == float_bits(bf16_bits_to_float(hb[i + l].bits)));
        }
        simd::batch_traits<simd::batch>::store(got, simd::load_widened<simd::batch>(hh.data() + i));
        for (std::size_t l = 0; l < w; ++l)
        {
            REQUIRE(float_bits(got[l]) == float_bits(f16_bits_to_float(hh[i + l].bits)));
        }
    }
    std::vector<float> f;
    for (std::uint64_t u = 0; u < (1ull << 32); u += 65537)
    {
        f.push_back(float_from_bits(static_cast<std::uint32_t>(u)));
    }
    f.resize(f.size() / w * w);
    std::vector<bfloat16> b(w);
    std::vector<float16> h(w);
    for (std::size_t i = 0; i < f.size(); i += w)
    {
        const auto v = simd::batch_traits<simd::batch>::load(f.data() + i);
        simd::store_narrowed(b.data(), v);
        simd::store_narrowed(h.data(), v);
        for (std::size_t l = 0; l < w; ++l)
        {
            REQUIRE(b[l].bits == float_to_bf16_bits(f[i + l]));
            REQUIRE(h[l].bits == float_to_f16_bits(f[i + l]));
        }
    }
}
