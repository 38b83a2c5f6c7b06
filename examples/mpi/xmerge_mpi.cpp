// xmerge-mpi: `xmerge run` across the ranks of an MPI job.
//
//   mpirun -np N xmerge-mpi RECIPE.yml OUT_DIR [options]
//
// Every rank reads the recipe and plans the merge itself (the plans are
// checked to agree); each writes whole output shards into one staging
// directory next to OUT_DIR, which must be on a filesystem all ranks share;
// rank 0 publishes OUT_DIR when every rank has finished. The output has the
// bytes `xmerge run` writes with the same options. See docs/distributed.md.
//
// A separate program rather than a mode of `xmerge`: the command line stays
// free of an MPI dependency and runs where no MPI library is installed.

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>
#include <mpi.h>

#include <xmerge/methods/builtin.hpp>
#include <xmerge/mpi/failure_barrier.hpp>
#include <xmerge/mpi/merge.hpp>
#include <xmerge/recipe/recipe_job.hpp>

#include "../cli/dtype_option.hpp"
#include "../cli/format.hpp"

namespace
{
    // The launcher forwards SIGTERM (and turns Ctrl-C into it): the ranks stop at their next tensor and clean up.
    volatile std::sig_atomic_t stop_requested = 0;

    extern "C" void request_stop(int sig)
    {
        stop_requested = 1;
        std::signal(sig, SIG_DFL);
    }

    // Threads per rank by default: this node's hardware threads shared by the ranks placed on it.
    std::size_t default_threads()
    {
        MPI_Comm node;
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
        int here = 1;
        MPI_Comm_size(node, &here);
        MPI_Comm_free(&node);
        const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
        return std::max<std::size_t>(1, hw / static_cast<unsigned>(here));
    }

    struct arguments
    {
        std::string recipe, out_dir, shard_size = "5GB", out_dtype;
        xmerge::tensor_rule on_missing = xmerge::tensor_rule::error, on_mismatch = xmerge::tensor_rule::error;
        std::size_t threads = 0;
        std::uint64_t seed = 0;
        bool strict = false, overwrite = false, sync = false, no_copy_files = false, quiet = false;
    };

    int run(const arguments& a, int rank)
    {
        const xmerge::method_registry registry = xmerge::builtin_methods();
        xmerge::recipe_job_options o;
        o.merge.threads = a.threads != 0 ? a.threads : default_threads();
        o.merge.seed = a.seed;
        o.merge.strict = a.strict;
        o.merge.on_missing = a.on_missing;
        o.merge.on_mismatch = a.on_mismatch;
        o.merge.output.max_shard_bytes = xmerge_cli::parse_size(a.shard_size);
        o.merge.output.overwrite = a.overwrite;
        o.merge.output.sync = a.sync;
        o.out_dtype = xmerge_cli::optional_dtype_option(a.out_dtype, "--out-dtype");
        o.copy_files = !a.no_copy_files;

        // Planning may fail on one rank only (a file it cannot read): all learn it before anything is written.
        std::unique_ptr<xmerge::recipe_job> job;
        {
            xmerge::mpi::failure_barrier planning(MPI_COMM_WORLD);
            try
            {
                job = std::make_unique<xmerge::recipe_job>(a.recipe, a.out_dir, registry, o);
            }
            catch (const std::exception& e)
            {
                planning.fail(e.what());
            }
            planning.settle();
        }
        if (rank == 0)
        {
            for (const auto& warning : job->warnings())
            {
                std::fprintf(stderr, "xmerge-mpi: warning: %s\n", warning.c_str());
            }
            for (const auto& note : job->notes())
            {
                std::fprintf(stderr, "xmerge-mpi: note: %s\n", note.c_str());
            }
        }

        // A failure injected on one rank, after its first tensor (for testing the clean-up of all ranks).
        const char* fail_rank = std::getenv("XMERGE_MPI_FAIL_RANK");
        const bool fail_here = fail_rank != nullptr && *fail_rank != '\0' && std::atoi(fail_rank) == rank;
        xmerge::merge_options merge = job->options();
        merge.progress = [fail_here](const xmerge::merge_progress&)
        {
            if (stop_requested)
            {
                throw std::runtime_error("interrupted; nothing was written");
            }
            if (fail_here)
            {
                throw std::runtime_error("failure injected by XMERGE_MPI_FAIL_RANK");
            }
        };
        std::signal(SIGINT, request_stop);
        std::signal(SIGTERM, request_stop);
        const xmerge::mpi::distributed_merge_summary s = xmerge::mpi::run_merge(job->plan(), registry, a.out_dir, merge, MPI_COMM_WORLD);

        double waited = s.coordination_seconds;
        MPI_Allreduce(MPI_IN_PLACE, &waited, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (rank == 0 && !a.quiet)
        {
            const auto& t = s.total;
            const double moved = static_cast<double>(t.bytes_read + t.bytes_written);
            std::printf("xmerge-mpi: %s merge written to %s by %d rank%s\n", job->parsed().merge_method.c_str(), a.out_dir.c_str(), s.ranks, s.ranks == 1 ? "" : "s");
            std::printf("  tensors   %zu (%zu merged, %zu copied) in %zu shard%s\n", t.tensors, t.merged, t.copied, t.shards, t.shards == 1 ? "" : "s");
            std::printf("  read      %s\n", xmerge_cli::bytes(static_cast<double>(t.bytes_read)).c_str());
            std::printf("  written   %s\n", xmerge_cli::bytes(static_cast<double>(t.bytes_written)).c_str());
            std::printf("  time      %.3f s (slowest rank; at most %.3f s of it waiting at agreement points)\n", t.seconds, waited);
            std::printf("  speed     %s (read + written)\n", xmerge_cli::rate(t.seconds > 0 ? moved / t.seconds : 0.0).c_str());
        }
        return 0;
    }
}

int main(int argc, char** argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);

    CLI::App app{"xmerge-mpi: merge the models of a mergekit recipe into OUT_DIR across the ranks of an MPI job"};
    arguments a;
    app.add_option("recipe", a.recipe, "mergekit YAML recipe (the same file on every rank)")->required();
    app.add_option("out_dir", a.out_dir, "output checkpoint directory on a filesystem every rank sees")->required();
    app.add_option("-j,--threads", a.threads, "threads per rank (default: this node's hardware threads / its ranks)");
    app.add_option("--shard-size", a.shard_size, "largest output shard, e.g. 5GB; shards are the unit of work of a rank")->capture_default_str();
    app.add_option("--out-dtype", a.out_dtype, "dtype of merged tensors: float32, bfloat16, float16");
    app.add_option("--seed", a.seed, "seed of random methods")->capture_default_str();
    const std::map<std::string, xmerge::tensor_rule> rules{{"error", xmerge::tensor_rule::error}, {"copy-base", xmerge::tensor_rule::copy_base},
                                                           {"copy_base", xmerge::tensor_rule::copy_base}};
    app.add_option("--on-missing", a.on_missing, "a tensor some model lacks: error or copy-base")->transform(CLI::CheckedTransformer(rules));
    app.add_option("--on-mismatch", a.on_mismatch, "a tensor of another shape or dtype kind: error or copy-base")->transform(CLI::CheckedTransformer(rules));
    app.add_flag("--strict", a.strict, "refuse parameters the method does not use");
    app.add_flag("--overwrite", a.overwrite, "replace a non-empty OUT_DIR once the merge is complete");
    app.add_flag("--fsync", a.sync, "flush the output to the device before finishing");
    app.add_flag("--no-copy-files", a.no_copy_files, "write only the tensors and the recipe");
    app.add_flag("--quiet", a.quiet, "no summary");

    int status = 0;
    try
    {
        app.parse(argc, argv);
        status = run(a, rank);
    }
    catch (const CLI::ParseError& e)
    {
        status = rank == 0 ? app.exit(e) : (e.get_exit_code() != 0 ? 1 : 0);
    }
    catch (const std::exception& e)
    {
        // Failures that concern every rank come out of a collective on all of them: rank 0 reports.
        if (rank == 0 || dynamic_cast<const xmerge::mpi::error*>(&e) == nullptr)
        {
            std::fprintf(stderr, "xmerge-mpi: error: %s\n", e.what());
        }
        status = 1;
    }
    MPI_Finalize();
    return status;
}
