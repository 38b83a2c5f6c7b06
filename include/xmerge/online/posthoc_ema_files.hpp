/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_ONLINE_POSTHOC_EMA_FILES_HPP
#define XMERGE_ONLINE_POSTHOC_EMA_FILES_HPP

#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../io/checkpoint_writer.hpp"
#include "../model/model.hpp"
#include "../ops/input.hpp"
#include "../ops/list.hpp"
#include "../ops/weighted_sum.hpp"
#include "posthoc_ema.hpp"

/**
 * @file
 * Post-hoc EMA snapshots as safetensors checkpoints: each snapshot is a
 * checkpoint directory whose `__metadata__` records its profile
 * ("xmerge.ema.sigma_rel", "xmerge.ema.time"), and a reconstruction reads
 * any set of them tensor by tensor into a new checkpoint. Both are written
 * atomically (io::checkpoint_writer).
 */

namespace xmerge
{
    /**
     * Writes one snapshot (the tensors of `average`, under their names, in
     * their dtypes) with its profile to checkpoint directory `dir`. Throws
     * parameter_error for an unnamed or repeated tensor name.
     */
    inline void save_ema_snapshot(const std::string& dir, const ema_profile& profile, const std::vector<const_tensor_ref>& average,
                                  io::checkpoint_options output = {});

    /// Writes every profile of a tracker at its current time, to `prefix` + "-<time>-<sigma_rel>" directories; returns their paths.
    inline std::vector<std::string> save_ema_snapshots(const std::string& prefix, const power_ema& tracker, io::checkpoint_options output = {});

    /// The profile recorded in a snapshot checkpoint; io_error naming it when absent or unreadable.
    inline ema_profile ema_snapshot_profile(const model& snapshot);

    /// Options of reconstruct_ema_checkpoint.
    struct posthoc_ema_options
    {
        /// Reconstruction time; the latest snapshot's when negative.
        double time = -1.0;
        /// 0: every hardware thread.
        std::size_t threads = 0;
        /// dtype of the output tensors; by default that of the first snapshot's.
        std::optional<dtype> out_dtype;
        io::checkpoint_options output;
    };

    /**
     * Reconstructs the EMA of width sigma_rel from snapshot checkpoints into
     * checkpoint directory `out_dir`, reading each used snapshot once,
     * tensor by tensor. Throws io_error when the snapshots do not hold the
     * same tensors with the same shapes.
     */
    inline std::vector<double> reconstruct_ema_checkpoint(const std::vector<std::string>& snapshots, double sigma_rel, const std::string& out_dir,
                                                          const posthoc_ema_options& options = {});

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        inline std::string exact_decimal(double v)
        {
            char buffer[32];
            std::snprintf(buffer, sizeof(buffer), "%.17g", v);
            return buffer;
        }
    }

    inline void save_ema_snapshot(const std::string& dir, const ema_profile& profile, const std::vector<const_tensor_ref>& average,
                                  io::checkpoint_options output)
    {
        power_ema_gamma(profile.sigma_rel);
        std::vector<io::tensor_info> infos;
        std::map<std::string, std::size_t> seen;
        for (std::size_t i = 0; i < average.size(); ++i)
        {
            const auto& t = average[i];
            if (t.name().empty() || !seen.emplace(t.name(), i).second)
            {
                throw parameter_error(t.name(), "average", "snapshot tensors need distinct names (tensor " + std::to_string(i) + ")");
            }
            infos.push_back({t.name(), io::safetensors_name(t.type()), t.shape(), 0, 0});
        }
        output.metadata["xmerge.ema.sigma_rel"] = detail::exact_decimal(profile.sigma_rel);
        output.metadata["xmerge.ema.time"] = detail::exact_decimal(profile.time);
        io::checkpoint_writer writer(dir, infos, output);
        for (const auto& t : average)
        {
            writer.write(t.name(), t.data(), t.bytes());
            writer.finish(t.name());
        }
        writer.commit();
    }

    inline std::vector<std::string> save_ema_snapshots(const std::string& prefix, const power_ema& tracker, io::checkpoint_options output)
    {
        std::vector<std::string> paths;
        for (std::size_t k = 0; k < tracker.profile_count(); ++k)
        {
            char suffix[64];
            std::snprintf(suffix, sizeof(suffix), "-%012.0f-%.4f", tracker.time(), tracker.sigma_rel(k));
            paths.push_back(prefix + suffix);
            const auto& avg = tracker.averages(k);
            save_ema_snapshot(paths.back(), {tracker.sigma_rel(k), tracker.time()}, {avg.begin(), avg.end()}, output);
        }
        return paths;
    }

    inline ema_profile ema_snapshot_profile(const model& snapshot)
    {
        const auto& meta = snapshot.metadata();
        const auto number = [&](const char* key) {
            const auto it = meta.find(key);
            char* end = nullptr;
            const double v = it == meta.end() ? 0.0 : std::strtod(it->second.c_str(), &end);
            if (it == meta.end() || end == it->second.c_str() || *end != '\0')
            {
                throw io_error(snapshot.name(), "", std::string("is not a post-hoc EMA snapshot: its metadata lacks a number under ") + key);
            }
            return v;
        };
        ema_profile p;
        p.sigma_rel = number("xmerge.ema.sigma_rel");
        p.time = number("xmerge.ema.time");
        return p;
    }

    inline std::vector<double> reconstruct_ema_checkpoint(const std::vector<std::string>& snapshots, double sigma_rel, const std::string& out_dir,
                                                          const posthoc_ema_options& options)
    {
        if (snapshots.empty())
        {
            throw parameter_error("", "snapshots", "no snapshot was given");
        }
        std::vector<model> models;
        std::vector<ema_profile> profiles;
        double latest = 0.0;
        for (const auto& path : snapshots)
        {
            models.push_back(model::open(path));
            profiles.push_back(ema_snapshot_profile(models.back()));
            latest = std::max(latest, profiles.back().time);
        }
        const std::vector<double> x = posthoc_ema_coefficients(profiles, {sigma_rel, options.time < 0.0 ? latest : options.time});
        const model& first = models.front();
        std::vector<io::tensor_info> infos;
        for (const model_tensor& t : first.tensors())
        {
            for (const model& m : models)
            {
                const model_tensor* other = m.find(t.name);
                if (other == nullptr || other->shape != t.shape || m.size() != first.size())
                {
                    throw io_error(m.name(), t.name, "snapshots must hold the same tensors with the same shapes as " + first.name());
                }
            }
            if (!t.is_arithmetic())
            {
                throw io_error(first.name(), t.name, "has dtype " + t.dtype + ", which cannot be averaged");
            }
            infos.push_back({t.name, options.out_dtype ? io::safetensors_name(*options.out_dtype) : t.dtype, t.shape, 0, 0});
        }
        io::checkpoint_options output = options.output;
        output.metadata["xmerge.ema.sigma_rel"] = detail::exact_decimal(sigma_rel);
        output.metadata["xmerge.ema.time"] = detail::exact_decimal(options.time < 0.0 ? latest : options.time);
        io::checkpoint_writer writer(out_dir, infos, output);
        eval_options eval;
        eval.threads = options.threads;
        for (const model_tensor& t : first.tensors())
        {
            expression_list<input_node> terms;
            std::vector<double> weights;
            for (std::size_t i = 0; i < models.size(); ++i)
            {
                if (x[i] != 0.0)
                {
                    terms.push_back(input(models[i].at(t.name).ref()));
                    weights.push_back(x[i]);
                }
            }
            xmerge::evaluate(weighted_sum(terms, weights), writer.tensor(t.name), eval);
            writer.finish(t.name);
            for (const model& m : models)
            {
                m.release(m.at(t.name));
            }
        }
        writer.commit();
        return x;
    }
}

#endif
