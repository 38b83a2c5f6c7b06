/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MPI_MERGE_HPP
#define XMERGE_MPI_MERGE_HPP

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <numeric>
#include <string>
#include <unordered_map>
#include <vector>

#include <mpi.h>

#include "../io/checkpoint_writer.hpp"
#include "../io/safetensors_writer.hpp"
#include "../io/shard_index.hpp"
#include "../methods/registry.hpp"
#include "../model/run.hpp"
#include "error.hpp"
#include "failure_barrier.hpp"
#include "plan_digest.hpp"

/**
 * @file
 * A whole-model merge split across the ranks of a communicator: each rank
 * computes and writes whole output shards into one staging directory on a
 * filesystem they share, and rank 0 publishes the checkpoint once all are
 * done. The output has the bytes of the one-process run_merge.
 */

namespace xmerge::mpi
{
    /// What a merge across ranks did.
    struct distributed_merge_summary
    {
        /// The whole merge: counts and bytes summed over the ranks, seconds of the slowest rank.
        merge_summary total;
        /// This rank's share (seconds: its own time in the call).
        merge_summary here;
        std::size_t shards_here = 0;
        int ranks = 1;
        std::uint64_t digest = 0;
        /// Seconds this rank spent in the agreement points and collectives, waiting for the others included.
        double coordination_seconds = 0.0;
    };

    /**
     * Which rank writes each shard: shards in decreasing cost (ties by
     * index), each to the rank with the least cost so far (ties to the lower
     * rank). Deterministic, so every rank computes the same assignment.
     */
    inline std::vector<int> assign_shards(const std::vector<std::uint64_t>& cost, int ranks);

    /**
     * run_merge across the ranks of `comm`. Collective: every rank passes
     * the plan it made itself from the same recipe, models and options;
     * plan_digest() checks they agree.
     *
     * The output's shards (laid out as the one-process run lays them out,
     * from options.output.max_shard_bytes) go to the ranks by their bytes
     * read plus written (assign_shards). Rank 0 holds the output the way
     * run_merge does (io::checkpoint_writer: lock, staging directory next to
     * `out_dir`, overwrite rules); the other ranks write their shards into
     * that staging directory, so it must be on a filesystem every rank sees
     * under the same path. Whole-model statistics are computed by the ranks
     * for their own tensors, gathered, and summed in plan order on every
     * rank, as the one-process run sums them: the output bytes do not depend
     * on the number of ranks.
     *
     * Rank 0 writes the index and the files beside the tensors and commits
     * after every rank reported success. When any rank fails (an exception
     * in its work, including one thrown by options.progress, which each rank
     * calls after each of its tensors), the others stop at their next
     * tensor, every rank removes its files, rank 0 removes the staging
     * directory, and every rank throws the same mpi::error naming the failed
     * ranks and their messages. A rank that dies without an exception is
     * handled by the MPI launcher (which ends the job); its staging
     * directory is then a leftover of a dead writer.
     */
    inline distributed_merge_summary run_merge(const merge_plan& plan, const method_registry& registry, const std::string& out_dir,
                                               const merge_options& options, MPI_Comm comm);

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        /// The shards one rank other than 0 writes into the staging directory.
        class shard_files
        {
        public:
            void open(const std::string& path, const std::vector<io::tensor_info>& tensors, const std::map<std::string, std::string>& metadata, bool sync)
            {
                io::writer_options o;
                o.temporary_name = false;  // rank 0 renames the whole directory
                o.sync = sync;
                m_files.push_back(std::make_unique<io::safetensors_writer>(path, tensors, metadata, o));
                for (const auto& t : tensors)
                {
                    m_file_of[t.name] = m_files.size() - 1;
                }
                m_bytes += m_files.back()->size();
            }
            tensor_ref tensor(const std::string& name) { return file(name).tensor(name); }
            void write(const std::string& name, const void* bytes, std::size_t n) { file(name).write(name, bytes, n); }
            void finish(const std::string& name) { file(name).finish(name); }
            void commit()
            {
                for (auto& f : m_files)
                {
                    f->commit();
                }
            }
            std::size_t total_bytes() const noexcept { return m_bytes; }

        private:
            io::safetensors_writer& file(const std::string& name) { return *m_files[m_file_of.at(name)]; }

            std::vector<std::unique_ptr<io::safetensors_writer>> m_files;
            std::unordered_map<std::string, std::size_t> m_file_of;
            std::size_t m_bytes = 0;
        };

        /// Runs f, turning an exception into this rank's failure.
        template <class F>
        void attempt(failure_barrier& barrier, F&& f) noexcept
        {
            try
            {
                f();
            }
            catch (const std::exception& e)
            {
                barrier.fail(e.what());
            }
            catch (...)
            {
                barrier.fail("unknown error");
            }
        }

        inline std::uint64_t output_bytes(const planned_tensor& t) { return numel(t.shape) * io::dtype_bits(t.dtype) / 8; }

        /// Every rank's statistic values of its merged tensors, gathered; parts[k] for plan tensor k.
        inline std::vector<std::vector<std::vector<double>>> gather_statistics(const std::vector<double>& packed, std::size_t tensors, MPI_Comm comm)
        {
            const std::size_t ranks = static_cast<std::size_t>(comm_size(comm));
            const int mine = detail::count(packed.size(), "statistics");
            std::vector<int> counts(ranks), displs(ranks);
            check(MPI_Allgather(&mine, 1, MPI_INT, counts.data(), 1, MPI_INT, comm), "MPI_Allgather");
            std::size_t total = 0;
            for (std::size_t p = 0; p < ranks; ++p)
            {
                displs[p] = detail::count(total, "statistics");
                total += static_cast<std::size_t>(counts[p]);
            }
            std::vector<double> all(total);
            check(MPI_Allgatherv(packed.data(), mine, MPI_DOUBLE, all.data(), counts.data(), displs.data(), MPI_DOUBLE, comm), "MPI_Allgatherv");
            // Packed as: tensor index, statistic count, then per statistic its length and values.
            std::vector<std::vector<std::vector<double>>> parts(tensors);
            for (std::size_t at = 0; at < all.size();)
            {
                auto& p = parts.at(static_cast<std::size_t>(all[at]));
                p.resize(static_cast<std::size_t>(all[at + 1]));
                at += 2;
                for (auto& values : p)
                {
                    const std::size_t n = static_cast<std::size_t>(all[at++]);
                    values.assign(all.begin() + static_cast<std::ptrdiff_t>(at), all.begin() + static_cast<std::ptrdiff_t>(at + n));
                    at += n;
                }
            }
            return parts;
        }
    }

    inline std::vector<int> assign_shards(const std::vector<std::uint64_t>& cost, int ranks)
    {
        std::vector<std::size_t> order(cost.size());
        std::iota(order.begin(), order.end(), std::size_t(0));
        std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return cost[a] > cost[b]; });
        std::vector<std::uint64_t> load(static_cast<std::size_t>(std::max(ranks, 1)), 0);
        std::vector<int> owner(cost.size(), 0);
        for (std::size_t s : order)
        {
            const auto least = std::min_element(load.begin(), load.end());
            owner[s] = static_cast<int>(least - load.begin());
            *least += cost[s];
        }
        return owner;
    }

    inline distributed_merge_summary run_merge(const merge_plan& plan, const method_registry& registry, const std::string& out_dir,
                                               const merge_options& options, MPI_Comm comm)
    {
        using clock = std::chrono::steady_clock;
        const auto start = clock::now();
        failure_barrier barrier(comm);
        const MPI_Comm c = barrier.communicator();
        const int me = barrier.rank();
        distributed_merge_summary result;
        result.ranks = barrier.ranks();
        double& waiting = result.coordination_seconds;
        const auto settle = [&]
        {
            const auto t0 = clock::now();
            barrier.settle();
            waiting += std::chrono::duration<double>(clock::now() - t0).count();
        };

        // The same plan on every rank.
        detail::attempt(barrier, [&] { result.digest = plan_digest(plan, options); });
        settle();
        {
            std::vector<std::uint64_t> digests(static_cast<std::size_t>(result.ranks));
            check(MPI_Allgather(&result.digest, 1, MPI_UINT64_T, digests.data(), 1, MPI_UINT64_T, c), "MPI_Allgather");
            std::string differing;
            for (std::size_t p = 1; p < digests.size(); ++p)
            {
                if (digests[p] != digests[0])
                {
                    differing += (differing.empty() ? "" : ", ") + std::to_string(p);
                }
            }
            if (!differing.empty())
            {
                throw error("the plan of rank " + differing + " differs from rank 0's: every rank must read the same recipe, models and options at the same paths");
            }
        }

        // Shards, their ranks, and (on rank 0) the output with its staging directory.
        const method_info* info = nullptr;
        io::shard_layout_result layout;
        std::vector<int> owner;
        std::vector<std::size_t> mine;  // plan indices this rank writes, in plan order
        std::unique_ptr<io::checkpoint_writer> root;
        std::unique_ptr<detail::shard_files> files;
        std::string staging;
        detail::attempt(barrier,
                        [&]
                        {
                            info = &registry.find(plan.method);
                            const std::vector<io::tensor_info> tensors = xmerge::detail::output_layout(plan);
                            layout = io::shard_layout(tensors, options.output.max_shard_bytes, out_dir);
                            std::unordered_map<std::string, std::size_t> index;
                            for (std::size_t k = 0; k < plan.tensors.size(); ++k)
                            {
                                index.emplace(plan.tensors[k].name, k);
                            }
                            std::vector<std::uint64_t> cost(layout.shards.size(), 0);
                            std::vector<std::size_t> shard_of(plan.tensors.size(), 0);
                            for (std::size_t s = 0; s < layout.shards.size(); ++s)
                            {
                                for (const auto& t : layout.shards[s])
                                {
                                    const std::size_t k = index.at(t.name);
                                    shard_of[k] = s;
                                    cost[s] += xmerge::detail::input_bytes(plan.tensors[k]) + detail::output_bytes(plan.tensors[k]);
                                }
                            }
                            owner = assign_shards(cost, result.ranks);
                            for (std::size_t k = 0; k < plan.tensors.size(); ++k)
                            {
                                if (owner[shard_of[k]] == me)
                                {
                                    mine.push_back(k);
                                }
                            }
                            if (me == 0)
                            {
                                xmerge::detail::check_output_is_not_input(plan, out_dir);
                                io::checkpoint_options o = options.output;
                                o.written_elsewhere = [owner](std::size_t s) { return owner[s] != 0; };
                                root = std::make_unique<io::checkpoint_writer>(out_dir, tensors, o);
                                staging = root->staging_directory();
                            }
                        });
        settle();

        // From here on the staging directory exists: on failure every rank removes its files before rank 0 removes the directory.
        try
        {
            unsigned long long length = staging.size();
            check(MPI_Bcast(&length, 1, MPI_UNSIGNED_LONG_LONG, 0, c), "MPI_Bcast");
            staging.resize(static_cast<std::size_t>(length));
            check(MPI_Bcast(&staging[0], detail::count(staging.size(), "staging path"), MPI_CHAR, 0, c), "MPI_Bcast");

            detail::attempt(barrier,
                            [&]
                            {
                                if (me == 0)
                                {
                                    return;
                                }
                                files = std::make_unique<detail::shard_files>();
                                for (std::size_t s = 0; s < layout.shards.size(); ++s)
                                {
                                    if (owner[s] == me)
                                    {
                                        const std::string name = io::shard_file_name(s + 1, layout.shards.size(), options.output.basename);
                                        files->open((std::filesystem::path(staging) / name).string(), layout.shards[s], options.output.metadata, options.output.sync);
                                        ++result.shards_here;
                                    }
                                }
                            });
            settle();
            if (me == 0)
            {
                result.shards_here = static_cast<std::size_t>(std::count(owner.begin(), owner.end(), 0));
            }

            merge_progress progress;
            std::map<std::string, std::vector<double>> statistics;
            if (!info->model_statistics.empty())
            {
                std::vector<double> packed;
                progress.phase = merge_progress::stage::statistics;
                progress.total = mine.size();
                detail::attempt(barrier,
                                [&]
                                {
                                    for (std::size_t k : mine)
                                    {
                                        const planned_tensor& t = plan.tensors[k];
                                        if (barrier.failed())
                                        {
                                            return;
                                        }
                                        if (t.what == planned_tensor::action::merge)
                                        {
                                            const auto parts = xmerge::detail::tensor_statistics(t, *info, options.seed);
                                            packed.push_back(static_cast<double>(k));
                                            packed.push_back(static_cast<double>(parts.size()));
                                            for (const auto& values : parts)
                                            {
                                                packed.push_back(static_cast<double>(values.size()));
                                                packed.insert(packed.end(), values.begin(), values.end());
                                            }
                                            progress.bytes_read += xmerge::detail::input_bytes(t);
                                            xmerge::detail::release_inputs(t);
                                        }
                                        ++progress.done;
                                        progress.tensor = t.name;
                                        if (options.progress)
                                        {
                                            options.progress(progress);
                                        }
                                    }
                                });
                settle();
                const auto t0 = clock::now();
                const auto parts = detail::gather_statistics(packed, plan.tensors.size(), c);
                waiting += std::chrono::duration<double>(clock::now() - t0).count();
                std::vector<std::vector<double>> sums;
                for (std::size_t k = 0; k < plan.tensors.size(); ++k)
                {
                    if (plan.tensors[k].what == planned_tensor::action::merge)
                    {
                        xmerge::detail::add_statistics(sums, parts[k]);
                    }
                }
                statistics = xmerge::detail::finish_statistics(*info, std::move(sums));
            }

            progress.phase = merge_progress::stage::tensors;
            progress.done = 0;
            progress.total = mine.size();
            merge_summary& here = result.here;
            detail::attempt(barrier,
                            [&]
                            {
                                const xmerge::detail::merge_evaluation eval(options);
                                for (std::size_t k : mine)
                                {
                                    if (barrier.failed())
                                    {
                                        return;
                                    }
                                    const planned_tensor& t = plan.tensors[k];
                                    const bool merged = me == 0 ? xmerge::detail::write_planned_tensor(t, plan, registry, statistics, *root, eval.get(), options.seed)
                                                                : xmerge::detail::write_planned_tensor(t, plan, registry, statistics, *files, eval.get(), options.seed);
                                    ++(merged ? here.merged : here.copied);
                                    progress.bytes_read += xmerge::detail::input_bytes(t);
                                    progress.bytes_written += detail::output_bytes(t);
                                    ++progress.done;
                                    progress.tensor = t.name;
                                    if (options.progress)
                                    {
                                        options.progress(progress);
                                    }
                                }
                                if (files)
                                {
                                    files->commit();
                                }
                            });
            settle();

            // Every rank finished its shards: rank 0 adds the other files and publishes.
            detail::attempt(barrier,
                            [&]
                            {
                                if (me != 0)
                                {
                                    return;
                                }
                                for (const auto& [source, name] : options.files)
                                {
                                    root->add_file(source, name);
                                }
                                for (const auto& [name, contents] : options.file_contents)
                                {
                                    root->add_file_contents(name, contents);
                                }
                                root->commit();
                            });
            settle();

            here.tensors = mine.size();
            here.bytes_read = progress.bytes_read;
            here.bytes_written = me == 0 ? root->total_bytes() : (files ? files->total_bytes() : 0);
            here.shards = result.shards_here;
            here.layers = plan.layers;
            here.seconds = std::chrono::duration<double>(clock::now() - start).count();
        }
        catch (...)
        {
            files.reset();
            MPI_Barrier(c);
            root.reset();
            throw;
        }

        const merge_summary& here = result.here;
        unsigned long long sums[5] = {here.tensors, here.merged, here.copied, here.bytes_read, here.bytes_written};
        check(MPI_Allreduce(MPI_IN_PLACE, sums, 5, MPI_UNSIGNED_LONG_LONG, MPI_SUM, c), "MPI_Allreduce");
        double slowest = here.seconds;
        check(MPI_Allreduce(MPI_IN_PLACE, &slowest, 1, MPI_DOUBLE, MPI_MAX, c), "MPI_Allreduce");
        merge_summary& total = result.total;
        total.tensors = sums[0];
        total.merged = sums[1];
        total.copied = sums[2];
        total.bytes_read = sums[3];
        total.bytes_written = sums[4];
        total.shards = layout.shards.size();
        total.layers = plan.layers;
        total.notes = plan.notes;
        total.seconds = slowest;
        return result;
    }
}

#endif
