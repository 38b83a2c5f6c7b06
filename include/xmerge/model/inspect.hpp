/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MODEL_INSPECT_HPP
#define XMERGE_MODEL_INSPECT_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../simd/convert.hpp"
#include "layers.hpp"
#include "model.hpp"

#ifdef XMERGE_WITH_LINALG
#include "../linalg/dense.hpp"
#include "../linalg/svd.hpp"
#endif

/**
 * @file
 * What models did to a base, tensor by tensor: the task vectors
 * d_k = model_k - base and, per tensor and per layer, their norms (and the
 * ratio to the base's), the cosine similarity of every pair, the fraction
 * of entries where a pair's signs conflict, and optionally the top singular
 * values and the effective rank of 2-D task vectors. Given a merge among
 * the models, the pairs (merge, input) show how much of each input it kept.
 *
 * Tensors are read in chunks, so memory stays small whatever the model
 * size; sums are taken in double, chunk by chunk in a fixed order, so the
 * figures do not depend on the thread count.
 */

namespace xmerge
{
    struct inspect_options
    {
        /// Top singular values to report for 2-D task vectors (0: none; needs the linalg component).
        std::size_t singular_values = 0;
        /// 0: every hardware thread.
        std::size_t threads = 0;
        /// Called after each tensor with (done, total).
        std::function<void(std::size_t, std::size_t)> progress;
    };

    /// Sums over a set of entries (one tensor, one layer, the whole model) from which the figures follow.
    struct delta_sums
    {
        std::uint64_t elements = 0;
        double base_squares = 0.0;
        /// The model pairs (i, j), i < j, of the per-pair entries.
        std::vector<std::pair<std::size_t, std::size_t>> pairs;
        /// Per model: sum of d_k^2.
        std::vector<double> squares;
        /// Per pair (see model_inspection::pairs): sum of d_i d_j.
        std::vector<double> dots;
        /// Per pair: entries where both task vectors are nonzero, and where their signs differ there.
        std::vector<std::uint64_t> both_nonzero;
        std::vector<std::uint64_t> conflicts;

        void add(const delta_sums& other);
        /// ||d_k||.
        double norm(std::size_t k) const { return std::sqrt(squares.at(k)); }
        /// ||d_k|| / ||base|| (0 when the base is zero).
        double norm_ratio(std::size_t k) const { return base_squares > 0.0 ? std::sqrt(squares.at(k) / base_squares) : 0.0; }
        /// Cosine similarity of pair p (0 when a task vector is zero).
        double cosine(std::size_t p) const;
        /// Fraction of the entries where both are nonzero whose signs differ.
        double sign_conflict(std::size_t p) const;
    };

    struct tensor_inspection
    {
        std::string name;
        shape_type shape;
        /// The layer stack and index, when the name has one.
        std::string stack;
        std::optional<std::size_t> layer;
        delta_sums sums;
        /// Per model, when asked and the tensor is 2-D: top singular values of d_k, and its effective rank
        /// (exp of the entropy of the normalised singular values, Roy & Vetterli 2007).
        std::vector<std::vector<double>> singular_values;
        std::vector<double> effective_rank;
    };

    /// A group of tensors: one layer of one stack, or the tensors outside the layers.
    struct layer_inspection
    {
        /// "model.layers.3", or "other" for embeddings, norms and heads outside the layers.
        std::string label;
        std::string stack;
        std::optional<std::size_t> layer;
        delta_sums sums;
    };

    struct model_inspection
    {
        std::string base;
        std::vector<std::string> models;
        /// Every pair (i, j), i < j, in the order of delta_sums' pair entries.
        std::vector<std::pair<std::size_t, std::size_t>> pairs;
        std::vector<tensor_inspection> tensors;
        /// Layers in stack then index order; the "other" group last.
        std::vector<layer_inspection> layers;
        delta_sums total;
        /// Tensors left out, with why (not floating point, missing or of another shape in a model).
        std::vector<std::string> skipped;
    };

    /**
     * Compares `models` with `base` over every floating-point tensor of the
     * base that all models have with the same shape. Throws parameter_error
     * for no model.
     */
    inline model_inspection inspect_models(const model& base, const std::vector<const model*>& models, const inspect_options& options = {});

    /********************
     * Implementation   *
     ********************/

    inline void delta_sums::add(const delta_sums& o)
    {
        if (squares.empty())
        {
            pairs = o.pairs;
            squares.assign(o.squares.size(), 0.0);
            dots.assign(o.dots.size(), 0.0);
            both_nonzero.assign(o.both_nonzero.size(), 0);
            conflicts.assign(o.conflicts.size(), 0);
        }
        elements += o.elements;
        base_squares += o.base_squares;
        for (std::size_t k = 0; k < squares.size(); ++k)
        {
            squares[k] += o.squares[k];
        }
        for (std::size_t p = 0; p < dots.size(); ++p)
        {
            dots[p] += o.dots[p];
            both_nonzero[p] += o.both_nonzero[p];
            conflicts[p] += o.conflicts[p];
        }
    }

    inline double delta_sums::cosine(std::size_t p) const
    {
        const double norms = std::sqrt(squares.at(pairs.at(p).first) * squares.at(pairs.at(p).second));
        return norms > 0.0 ? dots[p] / norms : 0.0;
    }

    inline double delta_sums::sign_conflict(std::size_t p) const
    {
        return both_nonzero.at(p) ? static_cast<double>(conflicts[p]) / static_cast<double>(both_nonzero[p]) : 0.0;
    }

    namespace detail
    {
        constexpr std::size_t inspect_chunk = 1 << 16;

        // Sums of one chunk of one tensor.
        inline delta_sums chunk_sums(const std::vector<const_tensor_ref>& refs, const std::vector<std::pair<std::size_t, std::size_t>>& pairs, std::size_t begin,
                                     std::size_t n, std::vector<float>& buffer)
        {
            const std::size_t k = refs.size() - 1;  // refs[0] is the base
            buffer.resize((k + 1) * n);
            for (std::size_t i = 0; i <= k; ++i)
            {
                simd::load_as_float(refs[i].type(), refs[i].data(), begin, n, buffer.data() + i * n);
            }
            const float* b = buffer.data();
            // Task vectors in double: the difference of two floats is exact there.
            auto delta = [&](std::size_t model, std::size_t e) { return static_cast<double>(buffer[(model + 1) * n + e]) - b[e]; };
            delta_sums s;
            s.elements = n;
            s.pairs = pairs;
            s.squares.assign(k, 0.0);
            s.dots.assign(pairs.size(), 0.0);
            s.both_nonzero.assign(pairs.size(), 0);
            s.conflicts.assign(pairs.size(), 0);
            for (std::size_t e = 0; e < n; ++e)
            {
                s.base_squares += static_cast<double>(b[e]) * b[e];
            }
            for (std::size_t i = 0; i < k; ++i)
            {
                double sq = 0.0;
                for (std::size_t e = 0; e < n; ++e)
                {
                    const double d = delta(i, e);
                    sq += d * d;
                }
                s.squares[i] = sq;
            }
            for (std::size_t p = 0; p < pairs.size(); ++p)
            {
                double dot = 0.0;
                std::uint64_t both = 0, conflict = 0;
                for (std::size_t e = 0; e < n; ++e)
                {
                    const double x = delta(pairs[p].first, e), y = delta(pairs[p].second, e);
                    dot += x * y;
                    const bool nonzero = x != 0.0 && y != 0.0;
                    both += nonzero;
                    conflict += nonzero && ((x > 0.0) != (y > 0.0));
                }
                s.dots[p] = dot;
                s.both_nonzero[p] = both;
                s.conflicts[p] = conflict;
            }
            return s;
        }

#ifdef XMERGE_WITH_LINALG
        // Top singular values and effective rank of model k's 2-D task vector.
        inline std::pair<std::vector<double>, double> spectrum(const model_tensor& base, const model_tensor& m, std::size_t top)
        {
            dense_matrix<float> d = to_matrix<float>(m.ref());
            const dense_matrix<float> b = to_matrix<float>(base.ref());
            for (std::size_t i = 0; i < d.size(); ++i)
            {
                d.data()[i] -= b.data()[i];
            }
            const auto f = svd<float>(std::move(d), m.name);
            double total = 0.0;
            for (std::size_t j = 0; j < f.s.size(); ++j)
            {
                total += f.s(j);
            }
            double entropy = 0.0;
            for (std::size_t j = 0; j < f.s.size() && total > 0.0; ++j)
            {
                const double p = f.s(j) / total;
                entropy -= p > 0.0 ? p * std::log(p) : 0.0;
            }
            std::vector<double> values;
            for (std::size_t j = 0; j < std::min(top, f.s.size()); ++j)
            {
                values.push_back(f.s(j));
            }
            return {values, total > 0.0 ? std::exp(entropy) : 0.0};
        }
#endif
    }

    inline model_inspection inspect_models(const model& base, const std::vector<const model*>& models, const inspect_options& options)
    {
        if (models.empty())
        {
            throw parameter_error("", "models", "inspecting needs at least one model besides the base");
        }
#ifndef XMERGE_WITH_LINALG
        if (options.singular_values > 0)
        {
            throw parameter_error("", "singular_values", "singular values need the linalg component (xmerge::linalg, LAPACK)");
        }
#endif
        model_inspection out;
        out.base = base.name();
        for (const model* m : models)
        {
            out.models.push_back(m->name());
        }
        for (std::size_t i = 0; i < models.size(); ++i)
        {
            for (std::size_t j = i + 1; j < models.size(); ++j)
            {
                out.pairs.emplace_back(i, j);
            }
        }

        thread_pool pool(options.threads);
        std::map<std::pair<std::string, std::size_t>, std::size_t> layer_index;
        std::size_t done = 0;
        for (const auto& t : base.tensors())
        {
            ++done;
            if (!t.is_arithmetic())
            {
                out.skipped.push_back(t.name + ": dtype " + t.dtype + " is not floating point");
                continue;
            }
            std::vector<const model_tensor*> inputs;
            std::string missing;
            for (const model* m : models)
            {
                const model_tensor* x = m->find(t.name);
                if (x == nullptr || x->shape != t.shape || !x->is_arithmetic())
                {
                    missing = x == nullptr ? "missing from '" + m->name() + "'" : "of another shape or dtype in '" + m->name() + "'";
                    break;
                }
                inputs.push_back(x);
            }
            if (!missing.empty())
            {
                out.skipped.push_back(t.name + ": " + missing);
                continue;
            }
            std::vector<const_tensor_ref> refs = {t.ref()};
            for (const model_tensor* x : inputs)
            {
                refs.push_back(x->ref());
            }
            const std::size_t n = numel(t.shape);
            const std::size_t chunks = (n + detail::inspect_chunk - 1) / detail::inspect_chunk;
            std::vector<delta_sums> parts(chunks);
            detail::run_tasks(
                chunks, 0, &pool, [] { return std::vector<float>(); },
                [&](std::vector<float>& buffer, std::size_t c)
                {
                    const std::size_t begin = c * detail::inspect_chunk;
                    parts[c] = detail::chunk_sums(refs, out.pairs, begin, std::min(detail::inspect_chunk, n - begin), buffer);
                });
            tensor_inspection ti;
            ti.name = t.name;
            ti.shape = t.shape;
            std::vector<float> none;
            ti.sums = detail::chunk_sums(refs, out.pairs, 0, 0, none);  // zeros of the right sizes
            for (const auto& p : parts)
            {
                ti.sums.add(p);
            }
            if (const auto l = find_layer(t.name))
            {
                ti.stack = l->stack(t.name);
                ti.layer = l->index;
            }
#ifdef XMERGE_WITH_LINALG
            if (options.singular_values > 0 && t.shape.size() == 2 && n > 0)
            {
                for (const model_tensor* x : inputs)
                {
                    auto [values, rank] = detail::spectrum(t, *x, options.singular_values);
                    ti.singular_values.push_back(std::move(values));
                    ti.effective_rank.push_back(rank);
                }
            }
#endif
            for (const model* m : models)
            {
                m->release(*m->find(t.name));
            }
            base.release(t);
            out.total.add(ti.sums);
            const auto key = std::make_pair(ti.layer ? ti.stack : std::string("\x7f"), ti.layer ? *ti.layer : 0);
            auto it = layer_index.find(key);
            if (it == layer_index.end())
            {
                layer_inspection li;
                li.stack = ti.stack;
                li.layer = ti.layer;
                li.label = ti.layer ? ti.stack + "." + std::to_string(*ti.layer) : std::string("other");
                it = layer_index.emplace(key, out.layers.size()).first;
                out.layers.push_back(std::move(li));
            }
            out.layers[it->second].sums.add(ti.sums);
            out.tensors.push_back(std::move(ti));
            if (options.progress)
            {
                options.progress(done, base.size());
            }
        }
        // Stacks, then layer index, then the tensors outside the layers.
        std::vector<layer_inspection> ordered;
        for (const auto& [_, index] : layer_index)
        {
            ordered.push_back(std::move(out.layers[index]));
        }
        out.layers = std::move(ordered);
        return out;
    }
}

#endif
