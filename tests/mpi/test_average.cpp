// mpi::average against the same mean computed on one process from every rank's inputs.

#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <vector>

#include <xmerge/core/error.hpp>
#include <xmerge/mpi/average.hpp>

#include "mpi_test_support.hpp"

using namespace xmerge_test;

namespace
{
    std::vector<double> weights_of(bool weighted)
    {
        std::vector<double> w;
        for (int r = 0; r < ranks(); ++r)
        {
            w.push_back(weighted ? 1.0 + r : 1.0);
        }
        return w;
    }

    // Every rank's inputs at `step`, as each rank made them.
    std::vector<param_set> every_rank(int step)
    {
        std::vector<param_set> all;
        for (int r = 0; r < ranks(); ++r)
        {
            all.push_back(make_params(r, step));
        }
        return all;
    }

    double sum_of(const std::vector<double>& w)
    {
        double total = 0.0;
        for (double x : w)
        {
            total += x;
        }
        return total;
    }
}

TEST_CASE("mpi::average over float32: the weighted mean of every rank's tensors, on every rank", "[mpi][average]")
{
    const std::size_t buckets[] = {7, 100, std::size_t(1) << 22};
    for (std::size_t bucket : buckets)
    {
        for (bool weighted : {false, true})
        {
            CAPTURE(bucket, weighted);
            const std::vector<double> w = weights_of(weighted);
            param_set mine = make_params(rank(), 0);
            xmerge::mpi::average_options o;
            o.bucket_elements = bucket;
            o.weight = w[static_cast<std::size_t>(rank())];
            const auto summary = xmerge::mpi::average(mine.refs(), MPI_COMM_WORLD, o);

            const std::vector<param_set> all = every_rank(0);
            const double total = sum_of(w);
            std::size_t elements = 0, bad = 0;
            for (std::size_t k = 0; k < mine.types.size(); ++k)
            {
                for (std::size_t i = 0; i < mine.size(k); ++i, ++elements)
                {
                    double expected = 0.0, magnitude = 0.0;
                    for (int r = 0; r < ranks(); ++r)
                    {
                        const double term = w[static_cast<std::size_t>(r)] / total * all[static_cast<std::size_t>(r)].at(k, i);
                        expected += term;
                        magnitude += std::fabs(term);
                    }
                    // One rounding per scaled term and per addition in float32, then the rounding to the tensor's dtype.
                    const double tolerance = (ranks() + 1) * std::ldexp(magnitude, -24) + half_ulp(mine.types[k], expected);
                    bad += !(std::fabs(mine.at(k, i) - expected) <= tolerance);
                }
            }
            CHECK(bad == 0);
            CHECK(summary.elements == elements);
            CHECK(summary.collectives == (elements + bucket - 1) / bucket);
            CHECK(same_on_all_ranks(mine));
            // A reduce-scatter and an allgather each send (N - 1) / N of the buffer from every rank.
            unsigned long long sent = summary.bytes_sent;
            MPI_Allreduce(MPI_IN_PLACE, &sent, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
            CHECK(sent == 8ull * static_cast<unsigned long long>(ranks() - 1) * elements);
        }
    }
}

TEST_CASE("mpi::average over bfloat16: float32 sums in rank order of bfloat16 values", "[mpi][average]")
{
    const std::size_t buckets[] = {5, 333, std::size_t(1) << 22};
    for (std::size_t bucket : buckets)
    {
        for (bool weighted : {false, true})
        {
            CAPTURE(bucket, weighted);
            const std::vector<double> w = weights_of(weighted);
            param_set mine = make_params(rank(), 1);
            xmerge::mpi::average_options o;
            o.bucket_elements = bucket;
            o.weight = w[static_cast<std::size_t>(rank())];
            o.wire = xmerge::mpi::wire_format::bfloat16;
            const auto summary = xmerge::mpi::average(mine.refs(), MPI_COMM_WORLD, o);

            const std::vector<param_set> all = every_rank(1);
            const double total = sum_of(w);
            std::size_t bad = 0, elements = 0;
            for (std::size_t k = 0; k < mine.types.size(); ++k)
            {
                for (std::size_t i = 0; i < mine.size(k); ++i, ++elements)
                {
                    float sum = 0.0f;
                    for (int r = 0; r < ranks(); ++r)
                    {
                        const float x = xmerge::bf16_bits_to_float(xmerge::float_to_bf16_bits(all[static_cast<std::size_t>(r)].at(k, i)));
                        sum += static_cast<float>(w[static_cast<std::size_t>(r)] / total) * x;
                    }
                    const double expected = xmerge::bf16_bits_to_float(xmerge::float_to_bf16_bits(sum));
                    // The same operations; a compiler may fuse a multiply-add, which can move the bfloat16 result by one step.
                    const double tolerance = std::ldexp(std::max(std::fabs(expected), 1e-30), -7) + half_ulp(mine.types[k], expected);
                    bad += !(std::fabs(mine.at(k, i) - expected) <= tolerance);
                    // The stored value is a bfloat16 value (exactly so in float32 tensors).
                    if (mine.types[k] == xmerge::dtype::float32)
                    {
                        const float v = mine.at(k, i);
                        bad += xmerge::bf16_bits_to_float(xmerge::float_to_bf16_bits(v)) != v;
                    }
                }
            }
            CHECK(bad == 0);
            CHECK(summary.collectives == 2 * ((elements + bucket - 1) / bucket));
            CHECK(same_on_all_ranks(mine));
            unsigned long long sent = summary.bytes_sent;
            MPI_Allreduce(MPI_IN_PLACE, &sent, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
            CHECK(sent == 4ull * static_cast<unsigned long long>(ranks() - 1) * elements);
        }
    }
}

TEST_CASE("mpi::average refuses, on every rank, sets or weights the ranks disagree on", "[mpi][average]")
{
    param_set mine = make_params(rank(), 2);
    SECTION("a rank with one tensor fewer")
    {
        auto refs = mine.refs();
        if (ranks() > 1 && rank() == ranks() - 1)
        {
            refs.pop_back();
        }
        if (ranks() > 1)
        {
            REQUIRE_THROWS_AS(xmerge::mpi::average(refs, MPI_COMM_WORLD), xmerge::parameter_error);
        }
    }
    SECTION("a negative weight on one rank")
    {
        xmerge::mpi::average_options o;
        o.weight = rank() == 0 ? -1.0 : 1.0;
        REQUIRE_THROWS_AS(xmerge::mpi::average(mine.refs(), MPI_COMM_WORLD, o), xmerge::parameter_error);
    }
    SECTION("all weights zero")
    {
        xmerge::mpi::average_options o;
        o.weight = 0.0;
        REQUIRE_THROWS_AS(xmerge::mpi::average(mine.refs(), MPI_COMM_WORLD, o), xmerge::parameter_error);
    }
    SECTION("ranks on different wire formats")
    {
        xmerge::mpi::average_options o;
        o.wire = rank() == 0 ? xmerge::mpi::wire_format::float32 : xmerge::mpi::wire_format::bfloat16;
        if (ranks() > 1)
        {
            REQUIRE_THROWS_AS(xmerge::mpi::average(mine.refs(), MPI_COMM_WORLD, o), xmerge::parameter_error);
        }
    }
    // Nothing was averaged: every refusal comes before the first collective on tensor data.
    param_set fresh = make_params(rank(), 2);
    CHECK(fresh.bytes == mine.bytes);
}

TEST_CASE("mpi::average of an empty set and of one rank's weight only", "[mpi][average]")
{
    CHECK(xmerge::mpi::average({}, MPI_COMM_WORLD).collectives == 0);
    // Only rank 0 counts: everybody ends with rank 0's values (in float32 exactly).
    param_set mine = make_params(rank(), 3, true);
    xmerge::mpi::average_options o;
    o.weight = rank() == 0 ? 2.5 : 0.0;
    xmerge::mpi::average(mine.refs(), MPI_COMM_WORLD, o);
    CHECK(mine.bytes == make_params(0, 3, true).bytes);
}
