/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_CORE_HALF_HPP
#define XMERGE_CORE_HALF_HPP

#include <cstdint>
#include <cstring>

namespace xmerge
{
    /// IEEE-754 binary32 bits <-> value without undefined behaviour.
    inline std::uint32_t float_bits(float x) noexcept;
    inline float float_from_bits(std::uint32_t u) noexcept;

    /// Round-to-nearest-even float32 -> bfloat16 bits; NaNs stay NaN (quiet).
    inline std::uint16_t float_to_bf16_bits(float x) noexcept;
    /// Exact bfloat16 bits -> float32.
    inline float bf16_bits_to_float(std::uint16_t h) noexcept;
    /// Round-to-nearest-even float32 -> IEEE binary16 bits (overflow to
    /// infinity, subnormals kept, NaN quieted with its top payload bits).
    inline std::uint16_t float_to_f16_bits(float x) noexcept;
    /// Exact IEEE binary16 bits -> float32.
    inline float f16_bits_to_float(std::uint16_t h) noexcept;

    /**
     * Storage type of a bfloat16 element (8-bit exponent, 7-bit mantissa).
     *
     * Only a container for the bits: arithmetic converts to float32 first.
     * Conversion from float rounds to nearest even.
     */
    struct bfloat16
    {
        std::uint16_t bits = 0;

        bfloat16() = default;
        explicit bfloat16(float x) noexcept : bits(float_to_bf16_bits(x)) {}
        explicit operator float() const noexcept { return bf16_bits_to_float(bits); }
        static bfloat16 from_bits(std::uint16_t b) noexcept { bfloat16 r; r.bits = b; return r; }
    };

    /// Storage type of an IEEE binary16 element; see bfloat16.
    struct float16
    {
        std::uint16_t bits = 0;

        float16() = default;
        explicit float16(float x) noexcept : bits(float_to_f16_bits(x)) {}
        explicit operator float() const noexcept { return f16_bits_to_float(bits); }
        static float16 from_bits(std::uint16_t b) noexcept { float16 r; r.bits = b; return r; }
    };

    inline bool operator==(bfloat16 a, bfloat16 b) noexcept { return a.bits == b.bits; }
    inline bool operator!=(bfloat16 a, bfloat16 b) noexcept { return a.bits != b.bits; }
    inline bool operator==(float16 a, float16 b) noexcept { return a.bits == b.bits; }
    inline bool operator!=(float16 a, float16 b) noexcept { return a.bits != b.bits; }

    /********************
     * Implementation   *
     ********************/

    inline std::uint32_t float_bits(float x) noexcept
    {
        std::uint32_t u;
        std::memcpy(&u, &x, sizeof u);
        return u;
    }

    inline float float_from_bits(std::uint32_t u) noexcept
    {
        float x;
        std::memcpy(&x, &u, sizeof x);
        return x;
    }

    inline std::uint16_t float_to_bf16_bits(float x) noexcept
    {
        const std::uint32_t u = float_bits(x);
        if ((u & 0x7FFFFFFFu) > 0x7F800000u)
        {
            return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
        }
        return static_cast<std::uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
    }

    inline float bf16_bits_to_float(std::uint16_t h) noexcept
    {
        return float_from_bits(static_cast<std::uint32_t>(h) << 16);
    }

    inline std::uint16_t float_to_f16_bits(float x) noexcept
    {
        const std::uint32_t u = float_bits(x);
        const std::uint32_t sign = (u >> 16) & 0x8000u;
        const std::uint32_t a = u & 0x7FFFFFFFu;
        if (a > 0x7F800000u)  // NaN: keep the top payload bits, force quiet
        {
            return static_cast<std::uint16_t>(sign | 0x7E00u | ((a >> 13) & 0x03FFu));
        }
        if (a >= 0x47800000u)  // >= 65536 (after rounding all of these overflow), or inf
        {
            return static_cast<std::uint16_t>(sign | 0x7C00u);
        }
        if (a >= 0x38800000u)  // normal half range: rebias exponent, round 13 bits away
        {
            const std::uint32_t r = a - 0x38000000u;  // exponent 127 -> 15
            const std::uint32_t rounded = (r + 0x0FFFu + ((r >> 13) & 1u)) >> 13;
            return static_cast<std::uint16_t>(sign | rounded);  // a carry into inf is correct
        }
        if (a < 0x33000000u)  // below half of the smallest subnormal: rounds to zero
        {
            return static_cast<std::uint16_t>(sign);
        }
        // subnormal half: shift the full significand into place, round to nearest even
        const std::uint32_t exp = a >> 23;
        const std::uint32_t mant = (a & 0x007FFFFFu) | 0x00800000u;
        const std::uint32_t shift = 126u - exp;  // 14..24 for exponents 102..112
        const std::uint32_t half_ulp = 1u << (shift - 1);
        const std::uint32_t rest = mant & ((1u << shift) - 1u);
        std::uint32_t q = mant >> shift;
        if (rest > half_ulp || (rest == half_ulp && (q & 1u)))
        {
            ++q;
        }
        return static_cast<std::uint16_t>(sign | q);
    }

    inline float f16_bits_to_float(std::uint16_t h) noexcept
    {
        const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
        const std::uint32_t exp = (h >> 10) & 0x1Fu;
        const std::uint32_t mant = h & 0x03FFu;
        if (exp == 0x1Fu)  // inf, or NaN made quiet as the F16C instructions do
        {
            return float_from_bits(sign | 0x7F800000u | (mant ? 0x00400000u : 0u) | (mant << 13));
        }
        if (exp != 0)
        {
            return float_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
        }
        // zero or subnormal: mant * 2^-24 is exact in float32
        const float mag = static_cast<float>(mant) * 5.9604644775390625e-8f;
        return sign ? -mag : mag;
    }
}

#endif
