// Inputs every rank can compute for every other rank, and agreement checks.
#ifndef XMERGE_TESTS_MPI_TEST_SUPPORT_HPP
#define XMERGE_TESTS_MPI_TEST_SUPPORT_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <mpi.h>

#include <xmerge/core/fnv1a.hpp>
#include <xmerge/core/half.hpp>
#include <xmerge/core/tensor_ref.hpp>

namespace xmerge_test
{
    inline int rank() { int r = 0; MPI_Comm_rank(MPI_COMM_WORLD, &r); return r; }
    inline int ranks() { int n = 0; MPI_Comm_size(MPI_COMM_WORLD, &n); return n; }

    /// A parameter set of mixed dtypes and awkward sizes, stored as raw bytes.
    struct param_set
    {
        std::vector<xmerge::dtype> types;
        std::vector<std::vector<std::uint8_t>> bytes;
        std::vector<xmerge::shape_type> shapes;

        std::vector<xmerge::tensor_ref> refs()
        {
            std::vector<xmerge::tensor_ref> out;
            for (std::size_t k = 0; k < types.size(); ++k)
            {
                out.emplace_back(bytes[k].data(), types[k], shapes[k], "t" + std::to_string(k));
            }
            return out;
        }
        std::vector<xmerge::const_tensor_ref> crefs()
        {
            const auto r = refs();
            return {r.begin(), r.end()};
        }
        /// Element i of tensor k as float.
        float at(std::size_t k, std::size_t i) const
        {
            const std::uint8_t* p = bytes[k].data();
            switch (types[k])
            {
                case xmerge::dtype::float32: { float f; std::memcpy(&f, p + 4 * i, 4); return f; }
                case xmerge::dtype::bfloat16: { std::uint16_t h; std::memcpy(&h, p + 2 * i, 2); return xmerge::bf16_bits_to_float(h); }
                case xmerge::dtype::float16: { std::uint16_t h; std::memcpy(&h, p + 2 * i, 2); return xmerge::f16_bits_to_float(h); }
            }
            return 0.0f;
        }
        void set(std::size_t k, std::size_t i, float v)
        {
            std::uint8_t* p = bytes[k].data();
            switch (types[k])
            {
                case xmerge::dtype::float32: std::memcpy(p + 4 * i, &v, 4); break;
                case xmerge::dtype::bfloat16: { const std::uint16_t h = xmerge::float_to_bf16_bits(v); std::memcpy(p + 2 * i, &h, 2); break; }
                case xmerge::dtype::float16: { const std::uint16_t h = xmerge::float_to_f16_bits(v); std::memcpy(p + 2 * i, &h, 2); break; }
            }
        }
        std::size_t size(std::size_t k) const { return bytes[k].size() / xmerge::size_of(types[k]); }
    };

    /// The set of sizes {0, 1, 15, 17, 1000, 4099} over the three dtypes (or float32 only), values drawn from (who, step).
    inline param_set make_params(int who, int step, bool float32_only = false)
    {
        static const std::size_t sizes[] = {0, 1, 15, 17, 1000, 4099};
        static const xmerge::dtype types[] = {xmerge::dtype::float32, xmerge::dtype::bfloat16, xmerge::dtype::float16};
        param_set s;
        std::mt19937 gen(static_cast<unsigned>(1000 * who + step + 1));
        std::normal_distribution<float> normal(0.5f * static_cast<float>(who), 1.0f);
        for (std::size_t k = 0; k < 6; ++k)
        {
            const xmerge::dtype t = float32_only ? xmerge::dtype::float32 : types[k % 3];
            s.types.push_back(t);
            s.shapes.push_back(k == 4 ? xmerge::shape_type{25, 40} : xmerge::shape_type{sizes[k]});
            s.bytes.emplace_back(sizes[k] * xmerge::size_of(t));
            for (std::size_t i = 0; i < sizes[k]; ++i)
            {
                s.set(k, i, normal(gen));
            }
        }
        return s;
    }

    /// True when every rank holds the same bytes.
    inline bool same_on_all_ranks(const param_set& s)
    {
        xmerge::detail::fnv1a h;
        for (const auto& b : s.bytes)
        {
            h.bytes(b.data(), b.size());
        }
        std::uint64_t lo = h.value(), hi = h.value();
        MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
        MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
        return lo == hi;
    }

    /// Half the spacing of the dtype's values around v (the rounding error of storing v).
    inline double half_ulp(xmerge::dtype t, double v)
    {
        const int bits = t == xmerge::dtype::float32 ? 24 : t == xmerge::dtype::bfloat16 ? 8 : 11;
        return std::ldexp(std::max(std::fabs(v), 6.2e-5), -bits);
    }
}

#endif
