// sharded_ema and sharded_swa against xmerge::ema and xmerge::swa on one process.

#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <vector>

#include <xmerge/mpi/sharded_ema.hpp>
#include <xmerge/mpi/sharded_swa.hpp>
#include <xmerge/online/ema.hpp>
#include <xmerge/online/swa.hpp>

#include "mpi_test_support.hpp"

using namespace xmerge_test;

namespace
{
    // float32 buffers of a set's shapes.
    param_set float32_like(const param_set& s)
    {
        param_set out;
        for (std::size_t k = 0; k < s.types.size(); ++k)
        {
            out.types.push_back(xmerge::dtype::float32);
            out.shapes.push_back(s.shapes[k]);
            out.bytes.emplace_back(s.size(k) * 4);
        }
        return out;
    }

    // The mean of every rank's set at `step`, summed in float32 in rank order after scaling by 1/N.
    param_set rank_mean(int step)
    {
        param_set mean = float32_like(make_params(0, step));
        const float c = 1.0f / static_cast<float>(ranks());
        for (int r = 0; r < ranks(); ++r)
        {
            const param_set x = make_params(r, step);
            for (std::size_t k = 0; k < x.types.size(); ++k)
            {
                for (std::size_t i = 0; i < x.size(k); ++i)
                {
                    mean.set(k, i, (r == 0 ? 0.0f : mean.at(k, i)) + x.at(k, i) * c);
                }
            }
        }
        return mean;
    }

    std::size_t count_far(const param_set& got, const param_set& expected, double relative)
    {
        std::size_t bad = 0;
        for (std::size_t k = 0; k < got.types.size(); ++k)
        {
            for (std::size_t i = 0; i < got.size(k); ++i)
            {
                const double e = expected.at(k, i);
                bad += !(std::fabs(got.at(k, i) - e) <= relative * std::max(1.0, std::fabs(e)));
            }
        }
        return bad;
    }
}

TEST_CASE("sharded_ema with replicated parameters: the bits of xmerge::ema, about 1/N of the state per rank", "[mpi][sharded]")
{
    for (std::size_t bucket : {std::size_t(3), std::size_t(64), std::size_t(1) << 22})
    {
        CAPTURE(bucket);
        xmerge::mpi::sharded_options o;
        o.bucket_elements = bucket;
        param_set first = make_params(0, 0);
        xmerge::mpi::sharded_ema sharded(first.crefs(), 0.9, MPI_COMM_WORLD, o);

        param_set reference = float32_like(first);
        xmerge::ema single(reference.refs(), 0.9);
        single.reset(first.crefs());
        for (int step = 1; step <= 5; ++step)
        {
            param_set x = make_params(0, step);  // the same on every rank
            sharded.update(x.crefs());
            single.update(x.crefs());
        }
        sharded.update(make_params(0, 6).crefs(), 0.5);
        single.update(make_params(0, 6).crefs(), 0.5);

        param_set gathered = float32_like(first);
        sharded.gather(gathered.refs());
        CHECK(gathered.bytes == reference.bytes);
        CHECK(sharded.steps() == 6);

        // Gathering into the parameters' own dtypes rounds the float32 average once.
        param_set narrow = make_params(0, 0);
        sharded.gather(narrow.refs());
        std::size_t bad = 0;
        for (std::size_t k = 0; k < narrow.types.size(); ++k)
        {
            for (std::size_t i = 0; i < narrow.size(k); ++i)
            {
                param_set one = narrow;
                one.set(k, i, reference.at(k, i));
                bad += one.at(k, i) != narrow.at(k, i);
            }
        }
        CHECK(bad == 0);

        // The shards partition the state.
        unsigned long long shard = sharded.state().shard().size(), total = 0, largest = 0;
        MPI_Allreduce(&shard, &total, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
        MPI_Allreduce(&shard, &largest, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
        CHECK(total == sharded.state().elements());
        const std::size_t buckets = (sharded.state().elements() + bucket - 1) / bucket;
        CHECK(largest <= sharded.state().elements() / static_cast<std::size_t>(ranks()) + buckets);
    }
}

TEST_CASE("sharded_ema following the ranks' mean: xmerge::ema of the mean", "[mpi][sharded]")
{
    xmerge::mpi::sharded_options o;
    o.bucket_elements = 50;
    o.source = xmerge::mpi::average_source::rank_mean;
    xmerge::mpi::sharded_ema sharded(make_params(rank(), 0).crefs(), 0.8, MPI_COMM_WORLD, o);

    param_set reference = float32_like(make_params(0, 0));
    xmerge::ema single(reference.refs(), 0.8);
    single.reset(rank_mean(0).crefs());
    for (int step = 1; step <= 4; ++step)
    {
        sharded.update(make_params(rank(), step).crefs());
        single.update(rank_mean(step).crefs());
    }
    param_set gathered = float32_like(reference);
    sharded.gather(gathered.refs());
    // The MPI library orders the sums of the mean as it likes: float32 rounding only.
    CHECK(count_far(gathered, reference, 4e-6) == 0);
    CHECK(same_on_all_ranks(gathered));
}

TEST_CASE("sharded_swa: the bits of xmerge::swa when replicated, its mean of means otherwise", "[mpi][sharded]")
{
    for (auto source : {xmerge::mpi::average_source::replicated, xmerge::mpi::average_source::rank_mean})
    {
        const bool mean = source == xmerge::mpi::average_source::rank_mean;
        CAPTURE(mean);
        xmerge::mpi::sharded_options o;
        o.bucket_elements = 129;
        o.source = source;
        param_set shapes = make_params(0, 0);
        xmerge::mpi::sharded_swa sharded(shapes.crefs(), MPI_COMM_WORLD, o);
        param_set reference = float32_like(shapes);
        xmerge::swa single(reference.refs());
        for (int step = 0; step < 5; ++step)
        {
            sharded.update(make_params(mean ? rank() : 0, step).crefs());
            single.update(mean ? rank_mean(step).crefs() : make_params(0, step).crefs());
        }
        CHECK(sharded.count() == 5);
        param_set gathered = float32_like(shapes);
        sharded.gather(gathered.refs());
        if (mean)
        {
            CHECK(count_far(gathered, reference, 4e-6) == 0);
        }
        else
        {
            CHECK(gathered.bytes == reference.bytes);
        }
    }
}

TEST_CASE("sharded averagers check shapes and agreement", "[mpi][sharded]")
{
    param_set x = make_params(0, 0);
    xmerge::mpi::sharded_swa swa(x.crefs(), MPI_COMM_WORLD);
    auto fewer = x.crefs();
    fewer.pop_back();
    CHECK_THROWS_AS(swa.update(fewer), xmerge::parameter_error);
    param_set other = make_params(0, 0, true);
    other.shapes[4] = {40, 25};
    CHECK_THROWS_AS(swa.update(other.crefs()), xmerge::shape_error);
    CHECK_THROWS_AS(xmerge::mpi::sharded_ema(x.crefs(), 1.5, MPI_COMM_WORLD), xmerge::parameter_error);
    if (ranks() > 1)
    {
        auto mine = x.crefs();
        if (rank() == 1)
        {
            mine.pop_back();
        }
        CHECK_THROWS_AS(xmerge::mpi::sharded_swa(mine, MPI_COMM_WORLD), xmerge::parameter_error);
    }
    // Collective calls refuse on every rank what one rank got wrong, instead of leaving the others waiting.
    xmerge::mpi::sharded_options mean;
    mean.source = xmerge::mpi::average_source::rank_mean;
    xmerge::mpi::sharded_ema ema(x.crefs(), 0.5, MPI_COMM_WORLD, mean);
    const bool last = rank() == ranks() - 1;
    CHECK_THROWS_AS(ema.update(last ? other.crefs() : x.crefs()), xmerge::merge_error);
    param_set out = make_params(0, 0);
    if (last)
    {
        out.shapes[4] = {40, 25};
    }
    CHECK_THROWS_AS(ema.gather(out.refs()), xmerge::merge_error);
    out = make_params(0, 0);
    ema.gather(out.refs());  // still usable
    CHECK(ema.steps() == 0);
}
