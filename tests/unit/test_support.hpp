#ifndef XMERGE_TEST_SUPPORT_HPP
#define XMERGE_TEST_SUPPORT_HPP

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <xmerge/xmerge.hpp>

namespace xmerge_test
{
    using xmerge::dtype;

    /// Sizes around the batch width and the chunk size, plus a multi-task size.
    inline std::vector<std::size_t> odd_sizes()
    {
        const std::size_t w = xmerge::simd::lanes;
        return {0, 1, w - 1 == 0 ? 2 : w - 1, w, w + 1, 3 * w + 2, 2047, 2049, 70001};
    }

    inline std::vector<float> random_floats(std::size_t n, std::uint32_t seed, float lo = -1.0f, float hi = 1.0f)
    {
        std::mt19937 gen(seed);
        std::uniform_real_distribution<float> dist(lo, hi);
        std::vector<float> v(n);
        for (auto& x : v)
        {
            x = dist(gen);
        }
        return v;
    }

    /// Memory of one dtype holding float values rounded to it.
    class buffer
    {
    public:
        buffer(dtype type, const std::vector<float>& values, std::string name = {})
            : m_type(type), m_bytes(values.size() * xmerge::size_of(type)), m_size(values.size()), m_name(std::move(name))
        {
            switch (type)
            {
                case dtype::float32:
                    if (!values.empty())
                    {
                        std::memcpy(m_bytes.data(), values.data(), m_bytes.size());
                    }
                    break;
                case dtype::bfloat16:
                    xmerge::simd::scalar::narrow(values.data(), reinterpret_cast<xmerge::bfloat16*>(m_bytes.data()), m_size);
                    break;
                case dtype::float16:
                    xmerge::simd::scalar::narrow(values.data(), reinterpret_cast<xmerge::float16*>(m_bytes.data()), m_size);
                    break;
            }
        }

        buffer(dtype type, std::size_t n, std::string name = {}) : buffer(type, std::vector<float>(n, 0.0f), std::move(name)) {}

        xmerge::tensor_ref ref() { return xmerge::tensor_ref(m_bytes.data(), m_type, {m_size}, m_name); }
        xmerge::const_tensor_ref cref() const { return xmerge::const_tensor_ref(m_bytes.data(), m_type, {m_size}, m_name); }
        auto leaf() const { return xmerge::input(cref()); }

        /// Values widened back to float.
        std::vector<float> values() const
        {
            std::vector<float> out(m_size);
            xmerge::simd::load_as_float(m_type, m_bytes.data(), 0, m_size, out.data());
            return out;
        }

        const std::vector<std::uint8_t>& bytes() const { return m_bytes; }
        dtype type() const { return m_type; }
        std::size_t size() const { return m_size; }

    private:
        dtype m_type;
        std::vector<std::uint8_t> m_bytes;
        std::size_t m_size;
        std::string m_name;
    };

    /// x rounded to float, then to `type`, and back.
    inline float round_to(dtype type, double x)
    {
        const float f = static_cast<float>(x);
        switch (type)
        {
            case dtype::float32:
                return f;
            case dtype::bfloat16:
                return xmerge::bf16_bits_to_float(xmerge::float_to_bf16_bits(f));
            case dtype::float16:
                return xmerge::f16_bits_to_float(xmerge::float_to_f16_bits(f));
        }
        return f;
    }

    /// Spacing of representable values of `type` near x.
    inline double ulp_of(dtype type, double x)
    {
        const int mantissa = type == dtype::float32 ? 23 : (type == dtype::bfloat16 ? 7 : 10);
        const int min_exp = type == dtype::float16 ? -14 : -126;
        int e = 0;
        std::frexp(x, &e);
        return std::ldexp(1.0, std::max(e - 1, min_exp) - mantissa);
    }

    inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b)
    {
        return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    }

    /// True when got is within `ulps` spacings of `type` (at the expected value) of expected.
    inline bool close_in(dtype type, float got, double expected, double ulps)
    {
        if (std::isnan(expected))
        {
            return std::isnan(got);
        }
        if (std::isinf(expected))
        {
            return got == expected;
        }
        return std::fabs(got - expected) <= ulps * ulp_of(type, expected) + 1e-30;
    }
}

#endif
