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

        // The whole-model statistics a method declares, summed over every merged tensor, then finished.
        inline std::map<std::string, std::vector<double>> model_statistics(const merge_plan& plan, const method_info& info, const merge_options& options,
                                                                           merge_progress& progress)
        {
            std::map<std::string, std::vector<double>> statistics;
            if (info.model_statistics.empty())
            {
                return statistics;
            }
            progress.phase = merge_progress::stage::statistics;
            progress.total = plan.tensors.size();
            for (const auto& stat : info.model_statistics)
            {
                statistics[stat.name];
            }
            for (const auto& t : plan.tensors)
            {
                if (t.what == planned_tensor::action::merge)
                {
                    tensor_inputs in(t, options.seed);
                    for (const auto& stat : info.model_statistics)
                    {
                        const std::vector<double> part = stat.per_tensor(in.get());
                        auto& sum = statistics[stat.name];
                        sum.resize(std::max(sum.size(), part.size()), 0.0);
                        for (std::size_t k = 0; k < part.size(); ++k)
                        {
                            sum[k] += part[k];
                        }
                    }
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
            for (const auto& stat : info.model_statistics)
            {
                for (double& v : statistics[stat.name])
                {
                    v = stat.finish(v);
                }
            }
            return statistics;
        }
    }

    inline merge_summary run_merge(const merge_plan& plan, const method_registry& registry, const std::string& out_dir, const merge_options& options)
    {
        const auto start = std::chrono::steady_clock::now();
        const method_info& info = registry.find(plan.method);

        std::unique_ptr<thread_pool> own_pool;
        eval_options eval;
        eval.threads = options.threads;
        eval.exec = options.exec;
        if (eval.exec == nullptr && options.threads != 1)
        {
            own_pool = std::make_unique<thread_pool>(options.threads);
            eval.exec = own_pool.get();
        }

        std::vector<io::tensor_info> layout;
        for (const auto& t : plan.tensors)
        {
            io::tensor_info i;
            i.name = t.name;
            i.dtype = t.dtype;
            i.shape = t.shape;
            layout.push_back(std::move(i));
        }
        detail::check_output_is_not_input(plan, out_dir);
        // Fails early on a non-empty output directory, before anything is read.
        io::checkpoint_writer writer(out_dir, layout, options.output);

        merge_summary summary;
        merge_progress progress;
        const auto statistics = detail::model_statistics(plan, info, options, progress);

        progress.phase = merge_progress::stage::tensors;
        progress.done = 0;
        progress.total = plan.tensors.size();
        for (const auto& t : plan.tensors)
        {
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
                ++summary.copied;
            }
            else
            {
                detail::tensor_inputs in(t, options.seed);
                in.get().model_statistics = statistics;
                const any_expression merged = registry.build(plan.method, in.get(), t.params);
                evaluate(merged, writer.tensor(t.name), eval);
                ++summary.merged;
            }
            writer.finish(t.name);
            detail::release_inputs(t);
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
