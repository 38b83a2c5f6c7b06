/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MODEL_RUN_HPP
#define XMERGE_MODEL_RUN_HPP

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../core/parallel.hpp"
#include "../io/checkpoint_writer.hpp"
#include "../methods/registry.hpp"
#include "../ops/input.hpp"
#include "merge_plan.hpp"
#include "merge_spec.hpp"
#include "vocabulary.hpp"

/**
 * @file
 * Running a plan: every output tensor is built with its registry method
 * from its inputs, evaluated straight into the output file, and released,
 * so resident memory stays a small working set whatever the model size.
 */

namespace xmerge
{
    /// What a merge did.
    struct merge_summary
    {
        std::size_t tensors = 0;
        std::size_t merged = 0;
        std::size_t copied = 0;
        std::size_t shards = 0;
        std::size_t layers = 0;
        std::uint64_t bytes_read = 0;
        std::uint64_t bytes_written = 0;
        double seconds = 0.0;
        std::vector<std::string> notes;
    };

    /**
     * Runs a plan into the checkpoint directory `out_dir`, atomically: the
     * directory appears complete or not at all. Whole-model statistics the
     * method declares are computed over all merged tensors first.
     */
    inline merge_summary run_merge(const merge_plan& plan, const method_registry& registry, const std::string& out_dir, const merge_options& options = {});

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        /**
         * The method inputs of one planned tensor. Token-indexed tensors of a
         * merge with a merged vocabulary are first laid out on it; the
         * layout lives as long as this object.
         */
        class tensor_inputs
        {
        public:
            tensor_inputs(const planned_tensor& t, std::uint64_t seed)
            {
                m_inputs.tensor = t.name;
                m_inputs.seed = seed;
                std::vector<const model_tensor*> base_and_models;
                if (t.base)
                {
                    base_and_models.push_back(t.base);
                }
                base_and_models.insert(base_and_models.end(), t.models.begin(), t.models.end());
                if (t.vocabulary)
                {
                    std::vector<std::pair<const model*, const model_tensor*>> list;
                    if (t.base)
                    {
                        list.emplace_back(t.base_model, t.base);
                    }
                    for (std::size_t k = 0; k < t.models.size(); ++k)
                    {
                        list.emplace_back(t.model_sources.at(k), t.models[k]);
                    }
                    m_aligned = std::make_unique<aligned_inputs>(*t.vocabulary, t.name, list);
                    for (std::size_t k = 0; k < list.size(); ++k)
                    {
                        base_and_models[k] = &(*m_aligned)[k];
                    }
                }
                std::size_t k = 0;
                if (t.base)
                {
                    m_inputs.base = input(base_and_models[k++]->ref());
                }
                for (; k < base_and_models.size(); ++k)
                {
                    m_inputs.models.push_back(input(base_and_models[k]->ref()));
                }
                for (const auto& [kind, list] : t.extra)
                {
                    auto& out = m_inputs.extra[kind];
                    for (const model_tensor* e : list)
                    {
                        out.push_back(input(e->ref()));
                    }
                }
            }

            method_inputs& get() noexcept { return m_inputs; }

        private:
            std::unique_ptr<aligned_inputs> m_aligned;
            method_inputs m_inputs;
        };

        inline std::uint64_t input_bytes(const planned_tensor& t)
        {
            std::uint64_t n = 0;
            xmerge::for_each_input(t, [&](const model_tensor& x) { n += x.bytes; });
            return n;
        }

        inline void release_inputs(const planned_tensor& t)
        {
            xmerge::for_each_input(t,
                                   [](const model_tensor& x)
                                   {
                                       if (x.file)
                                       {
                                           x.file->release(x.name);
                                       }
                                   });
        }

        // Overwriting a directory that holds an input would destroy the user's model.
        inline void check_output_is_not_input(const merge_plan& plan, const std::string& out_dir)
        {
            namespace fs = std::filesystem;
            std::error_code ec;
            const fs::path out = fs::weakly_canonical(fs::absolute(out_dir), ec);
            if (ec)
            {
                return;
            }
            std::set<std::string> checked;
            for (const auto& t : plan.tensors)
            {
                xmerge::for_each_input(t,
                                       [&](const model_tensor& x)
                                       {
                                           if (x.file == nullptr || !checked.insert(x.file->path()).second)
                                           {
                                               return;
                                           }
                                           const fs::path in = fs::weakly_canonical(fs::absolute(x.file->path()), ec);
                                           auto o = out.begin();
                                           auto i = in.begin();
                                           for (; o != out.end() && i != in.end() && *o == *i; ++o, ++i)
                                           {
                                           }
                                           if (!ec && o == out.end())
                                           {
                                               throw io_error(out_dir, "", "holds the input file " + x.file->path() + "; choose an output directory that holds no input");
                                           }
                                       });
            }
        }

        /// The values of each whole-model statistic `info` declares for one merged tensor, in declaration order.
        inline std::vector<std::vector<double>> tensor_statistics(const planned_tensor& t, const method_info& info, std::uint64_t seed)
        {
            tensor_inputs in(t, seed);
            std::vector<std::vector<double>> parts;
            for (const auto& stat : info.model_statistics)
            {
                parts.push_back(stat.per_tensor(in.get()));
            }
            return parts;
        }

        /// sums += one tensor's statistic values (each sum grows to the longest part). Callers add tensors in plan order.
        inline void add_statistics(std::vector<std::vector<double>>& sums, const std::vector<std::vector<double>>& parts)
        {
            sums.resize(std::max(sums.size(), parts.size()));
            for (std::size_t s = 0; s < parts.size(); ++s)
            {
                auto& sum = sums[s];
                sum.resize(std::max(sum.size(), parts[s].size()), 0.0);
                for (std::size_t k = 0; k < parts[s].size(); ++k)
                {
                    sum[k] += parts[s][k];
                }
            }
        }

        /// The finished statistics by name, from their sums over every merged tensor.
        inline std::map<std::string, std::vector<double>> finish_statistics(const method_info& info, std::vector<std::vector<double>> sums)
        {
            std::map<std::string, std::vector<double>> statistics;
            sums.resize(info.model_statistics.size());
            for (std::size_t s = 0; s < info.model_statistics.size(); ++s)
            {
                for (double& v : sums[s])
                {
                    v = info.model_statistics[s].finish(v);
                }
                statistics[info.model_statistics[s].name] = std::move(sums[s]);
            }
            return statistics;
        }

        // The whole-model statistics a method declares, summed over every merged tensor, then finished.
        inline std::map<std::string, std::vector<double>> model_statistics(const merge_plan& plan, const method_info& info, const merge_options& options,
                                                                           merge_progress& progress)
        {
            if (info.model_statistics.empty())
            {
                return {};
            }
            progress.phase = merge_progress::stage::statistics;
            progress.total = plan.tensors.size();
            std::vector<std::vector<double>> sums;
            for (const auto& t : plan.tensors)
            {
                if (t.what == planned_tensor::action::merge)
                {
                    add_statistics(sums, tensor_statistics(t, info, options.seed));
                    progress.bytes_read += input_bytes(t);
                    release_inputs(t);
                }
                ++progress.done;
                progress.tensor = t.name;
                if (options.progress)
                {
                    options.progress(progress);
                }
            }
            return finish_statistics(info, std::move(sums));
        }

        /// The executor of a merge's evaluations: the caller's, or a pool of merge_options::threads made here.
        class merge_evaluation
        {
        public:
            explicit merge_evaluation(const merge_options& options)
            {
                m_eval.threads = options.threads;
                m_eval.exec = options.exec;
                if (m_eval.exec == nullptr && options.threads != 1)
                {
                    m_pool = std::make_unique<thread_pool>(options.threads);
                    m_eval.exec = m_pool.get();
                }
            }
            const eval_options& get() const noexcept { return m_eval; }

        private:
            std::unique_ptr<thread_pool> m_pool;
            eval_options m_eval;
        };

        /// Name, dtype and shape of every output tensor, in plan order.
        inline std::vector<io::tensor_info> output_layout(const merge_plan& plan)
        {
            std::vector<io::tensor_info> layout;
            for (const auto& t : plan.tensors)
            {
                io::tensor_info i;
                i.name = t.name;
                i.dtype = t.dtype;
                i.shape = t.shape;
                layout.push_back(std::move(i));
            }
            return layout;
        }

        /**
         * Computes one planned tensor into `writer` (a checkpoint_writer, or
         * anything with its tensor(), write() and finish()) and releases its
         * inputs. Returns true for a merged tensor, false for a copy.
         */
        template <class Writer>
        bool write_planned_tensor(const planned_tensor& t, const merge_plan& plan, const method_registry& registry,
                                  const std::map<std::string, std::vector<double>>& statistics, Writer& writer, const eval_options& eval, std::uint64_t seed)
        {
            bool merged = false;
            if (t.what == planned_tensor::action::copy)
            {
                const model_tensor& src = *t.copy_from;
                if (src.dtype == t.dtype)
                {
                    writer.write(t.name, src.data, src.bytes);
                }
                else
                {
                    evaluate(input(src.ref()), writer.tensor(t.name), eval);
                }
            }
            else
            {
                tensor_inputs in(t, seed);
                in.get().model_statistics = statistics;
                const any_expression expr = registry.build(plan.method, in.get(), t.params);
                evaluate(expr, writer.tensor(t.name), eval);
                merged = true;
            }
            writer.finish(t.name);
            release_inputs(t);
            return merged;
        }
    }

    inline merge_summary run_merge(const merge_plan& plan, const method_registry& registry, const std::string& out_dir, const merge_options& options)
    {
        const auto start = std::chrono::steady_clock::now();
        const method_info& info = registry.find(plan.method);
        const detail::merge_evaluation eval(options);

        detail::check_output_is_not_input(plan, out_dir);
        // Fails early on a non-empty output directory, before anything is read.
        io::checkpoint_writer writer(out_dir, detail::output_layout(plan), options.output);

        merge_summary summary;
        merge_progress progress;
        const auto statistics = detail::model_statistics(plan, info, options, progress);

        progress.phase = merge_progress::stage::tensors;
        progress.done = 0;
        progress.total = plan.tensors.size();
        for (const auto& t : plan.tensors)
        {
            if (detail::write_planned_tensor(t, plan, registry, statistics, writer, eval.get(), options.seed))
            {
                ++summary.merged;
            }
            else
            {
                ++summary.copied;
            }
            progress.bytes_read += detail::input_bytes(t);
            progress.bytes_written += numel(t.shape) * io::dtype_bits(t.dtype) / 8;
            ++progress.done;
            progress.tensor = t.name;
            if (options.progress)
            {
                options.progress(progress);
            }
        }
        for (const auto& [source, name] : options.files)
        {
            writer.add_file(source, name);
        }
        for (const auto& [name, contents] : options.file_contents)
        {
            writer.add_file_contents(name, contents);
        }
        writer.commit();

        summary.tensors = plan.tensors.size();
        summary.shards = writer.shard_count();
        summary.layers = plan.layers;
        summary.bytes_read = progress.bytes_read;
        summary.bytes_written = writer.total_bytes();
        summary.notes = plan.notes;
        summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        return summary;
    }
}

#endif
