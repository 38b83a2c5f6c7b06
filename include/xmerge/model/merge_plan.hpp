/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MODEL_MERGE_PLAN_HPP
#define XMERGE_MODEL_MERGE_PLAN_HPP

#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../methods/registry.hpp"
#include "model.hpp"
#include "vocabulary.hpp"

/**
 * @file
 * A checked merge, tensor by tensor, before anything is read or written.
 */

namespace xmerge
{
    /// One output tensor of a plan.
    struct planned_tensor
    {
        enum class action
        {
            merge,
            copy
        };
        std::string name;
        std::string dtype;
        shape_type shape;
        action what = action::merge;
        /// Merge inputs (null base when the merge has none).
        const model_tensor* base = nullptr;
        std::vector<const model_tensor*> models;
        std::map<std::string, std::vector<const model_tensor*>> extra;
        /// The model each input comes from: base_model (null without a base) and one per entry of `models`.
        const model* base_model = nullptr;
        std::vector<const model*> model_sources;
        /// Set for a token-indexed tensor when vocabularies are merged: the inputs are laid out on it first.
        std::shared_ptr<const vocabulary_alignment> vocabulary;
        /// Parameters for this tensor, complete: every parameter the method declares, given or its default.
        parameters params;
        /// Copy source.
        const model_tensor* copy_from = nullptr;
        /// Why a tensor is copied by a rule instead of merged (empty for non-float tensors, always copied).
        std::string note;
    };

    /// Every output tensor, checked and with its parameters, before anything is written.
    struct merge_plan
    {
        std::string method;
        std::vector<planned_tensor> tensors;
        /// Number of output layers (0 when the names carry none).
        std::size_t layers = 0;
        /// Things the user may want to know (tensors only some models have, copies).
        std::vector<std::string> notes;
        /// Settings the method does not use, ignored (merge_options::strict refuses them instead).
        std::vector<std::string> warnings;
    };

    /// Calls f(const model_tensor&) for every tensor a planned tensor reads: its copy source, or its base, models and extra tensors.
    template <class F>
    void for_each_input(const planned_tensor& t, F&& f);

    /********************
     * Implementation   *
     ********************/

    template <class F>
    inline void for_each_input(const planned_tensor& t, F&& f)
    {
        if (t.what == planned_tensor::action::copy)
        {
            f(*t.copy_from);
            return;
        }
        if (t.base)
        {
            f(*t.base);
        }
        for (const model_tensor* m : t.models)
        {
            f(*m);
        }
        for (const auto& [_, list] : t.extra)
        {
            for (const model_tensor* e : list)
            {
                f(*e);
            }
        }
    }
}

#endif
