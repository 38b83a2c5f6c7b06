/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MODEL_MERGE_SPEC_HPP
#define XMERGE_MODEL_MERGE_SPEC_HPP

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/dtype.hpp"
#include "../core/parallel.hpp"
#include "../io/checkpoint_writer.hpp"
#include "model.hpp"
#include "parameter_setting.hpp"
#include "vocabulary.hpp"

/**
 * @file
 * What a whole-model merge is asked to do: the method, its models (or layer
 * slices) with their parameter settings, and how it runs.
 */

namespace xmerge
{
    /// A model taking part in a merge, with its own parameters.
    struct merge_source
    {
        merge_source() = default;
        merge_source(const model* m, std::map<std::string, parameter_setting> params = {}, std::map<std::string, const model*> extra_tensors = {},
                     std::pair<std::size_t, std::size_t> layers = {0, 0})
            : source(m)
            , parameters(std::move(params))
            , extra(std::move(extra_tensors))
            , layer_range(layers)
        {
        }

        const model* source = nullptr;
        /// Per-model parameters (method parameters of per-model scope).
        std::map<std::string, parameter_setting> parameters;
        /// Further per-model tensors a method reads (method_inputs::extra), by kind ("fisher").
        std::map<std::string, const model*> extra;
        /// Layers [first, second) this source contributes to a slice (slices only).
        std::pair<std::size_t, std::size_t> layer_range{0, 0};
    };

    /// A run of output layers built from equally long layer ranges of several models.
    struct merge_slice
    {
        std::vector<merge_source> sources;
        /// The base's layer range for this slice; needed when the method needs a base.
        std::optional<merge_source> base;
        /// Parameters for this slice, consulted before the global ones.
        std::map<std::string, parameter_setting> parameters;
    };

    /**
     * What to merge: a method, its inputs and parameter settings.
     *
     * Either `models` (every tensor of the reference model, which is the base
     * when there is one and the first model otherwise, is merged under its
     * own name) or `slices` (output layers are stacked from layer ranges,
     * renumbered from 0; tensors outside the layers come from the first
     * slice's sources when they sit before the layers, from the last slice's
     * otherwise; see before_layers).
     */
    struct merge_spec
    {
        std::string method;
        const model* base = nullptr;
        std::vector<merge_source> models;
        std::vector<merge_slice> slices;
        /// Global parameters (and per-model ones meant for every model).
        std::map<std::string, parameter_setting> parameters;
        /// Set when the models' vocabularies are merged: token-indexed tensors are laid out on it first.
        std::shared_ptr<const vocabulary_alignment> vocabulary;
    };

    /// What to do with a tensor some input lacks, or has with another shape.
    enum class tensor_rule
    {
        /// Throw an error naming the tensor and the model (default).
        error,
        /// Copy the tensor from the base model (from the first model when there is no base).
        copy_base
    };

    /// Where a merge stands, for progress reports.
    struct merge_progress
    {
        enum class stage
        {
            statistics,  ///< pre-pass over all tensors for whole-model statistics
            tensors      ///< writing output tensors
        };
        stage phase = stage::tensors;
        std::size_t done = 0;
        std::size_t total = 0;
        /// The tensor just completed.
        std::string tensor;
        std::uint64_t bytes_read = 0;
        std::uint64_t bytes_written = 0;
    };

    /// How a merge runs and what it writes.
    struct merge_options
    {
        /// 0: every hardware thread; 1: the calling thread only.
        std::size_t threads = 0;
        /// Runs the parallel work when set (else a pool of `threads` is made for the merge).
        executor* exec = nullptr;
        /// dtype of merged F32/BF16/F16 tensors; by default that of the reference model's tensor.
        std::optional<dtype> out_dtype;
        /// Seed of random methods (each tensor draws from its own stream keyed by its name).
        std::uint64_t seed = 0;
        tensor_rule on_missing = tensor_rule::error;
        tensor_rule on_mismatch = tensor_rule::error;
        /**
         * Refuse settings the method does not use (an undeclared parameter,
         * a global parameter set per model). By default they are dropped with
         * a warning in merge_plan::warnings, as mergekit ignores them.
         */
        bool strict = false;
        /// Shard size, overwrite, sync, metadata of the output.
        io::checkpoint_options output;
        /// Files copied into the output directory: (source path, name in the output).
        std::vector<std::pair<std::string, std::string>> files;
        /// Files of the output written from memory: (name in the output, contents).
        std::vector<std::pair<std::string, std::string>> file_contents;
        /// Called after each tensor (and during the statistics pre-pass).
        std::function<void(const merge_progress&)> progress;
    };
}

#endif
