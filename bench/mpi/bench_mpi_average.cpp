// Timings of xmerge::mpi's averaging under mpiexec: mpi::average (float32
// and bfloat16 wire) and the sharded EMA, on parameter sets of one large
// tensor and of many small ones, next to a plain MPI_Allreduce of the same
// bytes and a memcpy of them measured in the same run.
//
//   mpirun -np N xmerge_bench_mpi [--repetitions 7] [--elements 16777216]
//
// Repetitions are interleaved (every case once per round); each time is the
// slowest rank's, and the table shows medians.

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <mpi.h>

#include <xmerge/mpi/average.hpp>
#include <xmerge/mpi/sharded_ema.hpp>

namespace
{
    struct param_set
    {
        std::vector<std::vector<float>> tensors;
        std::vector<xmerge::tensor_ref> refs;
        std::vector<xmerge::const_tensor_ref> crefs;

        param_set(std::size_t count, std::size_t each, int rank)
        {
            tensors.assign(count, std::vector<float>(each));
            for (std::size_t k = 0; k < count; ++k)
            {
                for (std::size_t i = 0; i < each; ++i)
                {
                    tensors[k][i] = static_cast<float>((k * 31 + i * 7 + static_cast<std::size_t>(rank)) % 1000) * 1e-3f;
                }
                refs.emplace_back(tensors[k].data(), xmerge::dtype::float32, xmerge::shape_type{each});
                crefs.emplace_back(refs.back());
            }
        }
        std::size_t elements() const { return tensors.size() * (tensors.empty() ? 0 : tensors[0].size()); }
    };

    struct timed_case
    {
        timed_case(std::string n, std::size_t t, std::size_t b, std::function<std::uint64_t()> f)
            : name(std::move(n)), tensors(t), bytes(b), run(std::move(f))
        {
        }
        std::string name;
        std::size_t tensors;
        std::size_t bytes;  // float32 bytes of the parameter set
        std::function<std::uint64_t()> run;  // returns the bytes this rank sends to others
        std::vector<double> seconds;
        std::uint64_t wire_bytes = 0;
    };

    double slowest(double t)
    {
        MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        return t;
    }
}

int main(int argc, char** argv)
{
    MPI_Init(&argc, &argv);
    int rank = 0, ranks = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    int repetitions = 7;
    std::size_t elements = std::size_t(1) << 24;
    for (int i = 1; i + 1 < argc; ++i)
    {
        if (std::strcmp(argv[i], "--repetitions") == 0)
        {
            repetitions = std::max(1, std::atoi(argv[++i]));
        }
        else if (std::strcmp(argv[i], "--elements") == 0)
        {
            elements = static_cast<std::size_t>(std::atoll(argv[++i]));
        }
    }

    param_set large(1, elements, rank), small(4096, elements / 4096, rank), tiny(4096, 16, rank);
    std::vector<float> raw(elements, 1.0f), copy(elements);
    xmerge::mpi::sharded_ema ema(large.crefs, 0.99, MPI_COMM_WORLD);
    std::vector<float> gathered(elements);

    const auto average = [](param_set& p, xmerge::mpi::wire_format wire)
    {
        xmerge::mpi::average_options o;
        o.wire = wire;
        return [&p, o] { return xmerge::mpi::average(p.refs, MPI_COMM_WORLD, o).bytes_sent; };
    };
    using xmerge::mpi::wire_format;
    std::vector<timed_case> cases = {
        {"memcpy (baseline)", 1, elements * 4, [&] { std::memcpy(copy.data(), raw.data(), elements * 4); return std::uint64_t(0); }},
        {"MPI_Allreduce float32 (baseline)", 1, elements * 4,
         [&]
         {
             MPI_Allreduce(MPI_IN_PLACE, raw.data(), static_cast<int>(elements), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
             return std::uint64_t(8 * elements * static_cast<std::size_t>(ranks - 1) / static_cast<std::size_t>(ranks));
         }},
        {"average, 1 tensor, float32 wire", 1, elements * 4, average(large, wire_format::float32)},
        {"average, 1 tensor, bfloat16 wire", 1, elements * 4, average(large, wire_format::bfloat16)},
        {"average, 4096 tensors, float32 wire", 4096, small.elements() * 4, average(small, wire_format::float32)},
        {"average, 4096 tensors, bfloat16 wire", 4096, small.elements() * 4, average(small, wire_format::bfloat16)},
        {"average, 4096 x 16 floats, float32", 4096, tiny.elements() * 4, average(tiny, wire_format::float32)},
        {"sharded EMA update (replicated)", 1, elements * 4, [&] { ema.update(large.crefs); return std::uint64_t(0); }},
        {"sharded EMA gather", 1, elements * 4,
         [&]
         {
             ema.gather({xmerge::tensor_ref(gathered.data(), xmerge::dtype::float32, {elements})});
             return std::uint64_t(ema.state().shard().size() * 4 * static_cast<std::size_t>(ranks - 1));
         }},
    };
    for (int r = -1; r < repetitions; ++r)  // round -1 warms up
    {
        for (auto& c : cases)
        {
            MPI_Barrier(MPI_COMM_WORLD);
            const double t0 = MPI_Wtime();
            c.wire_bytes = c.run();
            const double t = slowest(MPI_Wtime() - t0);
            if (r >= 0)
            {
                c.seconds.push_back(t);
            }
        }
    }
    if (rank == 0)
    {
        std::printf("%d rank(s), %zu float32 elements per set, median of %d interleaved repetitions\n", ranks, elements, repetitions);
        std::printf("%-38s %10s %12s %14s %16s\n", "case", "ms", "GB/s (set)", "us per tensor", "MB sent/rank");
        for (auto& c : cases)
        {
            std::sort(c.seconds.begin(), c.seconds.end());
            const double median = c.seconds[c.seconds.size() / 2];
            std::printf("%-38s %10.3f %12.2f %14.3f %16.2f\n", c.name.c_str(), median * 1e3, static_cast<double>(c.bytes) / median / 1e9,
                        median * 1e6 / static_cast<double>(c.tensors), static_cast<double>(c.wire_bytes) / 1e6);
        }
    }
    MPI_Finalize();
    return 0;
}
