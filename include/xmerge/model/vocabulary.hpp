/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MODEL_VOCABULARY_HPP
#define XMERGE_MODEL_VOCABULARY_HPP

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../simd/convert.hpp"
#include "model.hpp"

/**
 * @file
 * Token-indexed tensors (embeddings, output heads) of models whose
 * vocabularies differ, laid out on one output vocabulary before they are
 * merged, with mergekit's rules for the rows a model lacks.
 *
 * For each output token and each model, the model's own row is used when it
 * has the token. Otherwise the row comes from, in order: a rule the recipe
 * gives for the token (`tokenizer: tokens:`); the only model that has it;
 * the base model when it has it; the mean of the models that have it; zeros
 * when none has it. A forced rule replaces every model's row. Rows past the
 * tokens (a size padded to a multiple) hold the mean of each model's token rows.
 */

namespace xmerge
{
    /// Where a token's row comes from for models that lack it (or for all, when forced).
    struct token_fill
    {
        enum class kind
        {
            zero,   ///< zeros
            model,  ///< the row of `source` for this token
            row     ///< row `row` of `source`'s tensor, whatever token it holds
        };
        kind what = kind::zero;
        const model* source = nullptr;
        std::int64_t row = -1;
        bool force = false;
    };

    /// An output vocabulary and where each model's tokens sit in it.
    struct vocabulary_alignment
    {
        /// Tokens of the output tokenizer.
        std::size_t tokens = 0;
        /// Rows of the merged token-indexed tensors (tokens, or more when padded).
        std::size_t rows = 0;
        /// Per model, the row of each output token in the model's tensors, -1 where it lacks the token.
        std::map<const model*, std::vector<std::int64_t>> rows_of;
        /// Rules the recipe gives for tokens, by output token id.
        std::map<std::int64_t, token_fill> configured;
        /// Its rows win for tokens several models have and some lack.
        const model* base = nullptr;
        /// The recipe's order of the models: means add in this order.
        std::vector<const model*> order;
    };

    /**
     * The inputs of one token-indexed tensor laid out on the output
     * vocabulary, as float32 tensors this object owns.
     */
    class aligned_inputs
    {
    public:
        /// `inputs`: each input model with its tensor named `name` (an input embedding stands for a tied head).
        aligned_inputs(const vocabulary_alignment& alignment, const std::string& name, const std::vector<std::pair<const model*, const model_tensor*>>& inputs);
        aligned_inputs(const aligned_inputs&) = delete;
        aligned_inputs& operator=(const aligned_inputs&) = delete;

        std::size_t size() const noexcept { return m_tensors.size(); }
        const model_tensor& operator[](std::size_t k) const { return m_tensors.at(k); }

    private:
        std::vector<std::vector<float>> m_data;
        std::vector<model_tensor> m_tensors;
    };

    /********************
     * Implementation   *
     ********************/

    inline aligned_inputs::aligned_inputs(const vocabulary_alignment& a, const std::string& name,
                                          const std::vector<std::pair<const model*, const model_tensor*>>& inputs)
    {
        if (inputs.empty())
        {
            return;
        }
        const model_tensor& first = *inputs.front().second;
        if (first.shape.empty())
        {
            throw shape_error(name, "", "a token-indexed tensor needs at least one dimension");
        }
        shape_type row_shape(first.shape.begin() + 1, first.shape.end());
        const std::size_t width = numel(row_shape);
        const std::size_t n = inputs.size();
        std::vector<std::vector<float>> in(n);
        std::vector<const std::vector<std::int64_t>*> rows(n);
        std::vector<std::size_t> in_rows(n);
        for (std::size_t k = 0; k < n; ++k)
        {
            const auto& [m, t] = inputs[k];
            if (shape_type(t->shape.begin() + 1, t->shape.end()) != row_shape || t->shape.empty())
            {
                throw shape_error(name, "", "in model '" + m->name() + "' has shape " + to_string(t->shape) + "; token rows of " + to_string(row_shape)
                                                + " were expected, as in '" + inputs.front().first->name() + "'");
            }
            const auto it = a.rows_of.find(m);
            if (it == a.rows_of.end())
            {
                throw io_error(m->name(), name, "this model has no place in the merged vocabulary");
            }
            rows[k] = &it->second;
            in_rows[k] = static_cast<std::size_t>(t->shape[0]);
            in[k].resize(in_rows[k] * width);
            const const_tensor_ref r = t->ref();
            simd::load_as_float(r.type(), r.data(), 0, in[k].size(), in[k].data());
        }
        auto present = [&](std::size_t k, std::size_t token)
        {
            const std::int64_t r = (*rows[k])[token];
            return r >= 0 && static_cast<std::size_t>(r) < in_rows[k];
        };
        auto row = [&](std::size_t k, std::int64_t r) { return in[k].data() + static_cast<std::size_t>(r) * width; };
        auto index_of = [&](const model* m) -> std::size_t
        {
            for (std::size_t k = 0; k < n; ++k)
            {
                if (inputs[k].first == m)
                {
                    return k;
                }
            }
            return n;
        };
        // Means add in the recipe's order of the models.
        std::vector<std::size_t> order(n);
        for (std::size_t k = 0; k < n; ++k)
        {
            order[k] = k;
        }
        auto rank = [&](std::size_t k)
        { return static_cast<std::size_t>(std::find(a.order.begin(), a.order.end(), inputs[k].first) - a.order.begin()); };
        std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return rank(x) < rank(y); });

        // The row for models lacking each token that some lack (or all, when forced).
        std::map<std::size_t, std::vector<float>> fills;
        std::map<std::size_t, bool> forced;
        for (std::size_t token = 0; token < a.tokens; ++token)
        {
            const auto rule = a.configured.find(static_cast<std::int64_t>(token));
            const bool force = rule != a.configured.end() && rule->second.force;
            std::size_t have = 0, donor = n;
            for (std::size_t k : order)
            {
                if (present(k, token))
                {
                    donor = have == 0 ? k : donor;
                    ++have;
                }
            }
            if (have == n && !force)
            {
                continue;
            }
            std::vector<float> fill(width, 0.0f);
            if (rule != a.configured.end())
            {
                const token_fill& f = rule->second;
                if (f.what != token_fill::kind::zero)
                {
                    const std::size_t k = index_of(f.source);
                    if (k == n)
                    {
                        throw parameter_error(name, "tokenizer.tokens", "a token's row is to come from model '" + (f.source ? f.source->name() : std::string("?"))
                                                                            + "', which is not an input of this tensor");
                    }
                    const std::int64_t r = f.what == token_fill::kind::row ? f.row : (*rows[k])[token];
                    if (r < 0 || static_cast<std::size_t>(r) >= in_rows[k])
                    {
                        throw parameter_error(name, "tokenizer.tokens", "model '" + f.source->name() + "' has no row " + std::to_string(r) + " for output token "
                                                                            + std::to_string(token));
                    }
                    std::copy(row(k, r), row(k, r) + width, fill.begin());
                }
            }
            else if (have == 1)
            {
                std::copy(row(donor, (*rows[donor])[token]), row(donor, (*rows[donor])[token]) + width, fill.begin());
            }
            else if (have > 1)
            {
                const std::size_t b = index_of(a.base);
                if (b < n && present(b, token))
                {
                    std::copy(row(b, (*rows[b])[token]), row(b, (*rows[b])[token]) + width, fill.begin());
                }
                else
                {
                    for (std::size_t k : order)
                    {
                        if (present(k, token))
                        {
                            const float* src = row(k, (*rows[k])[token]);
                            for (std::size_t j = 0; j < width; ++j)
                            {
                                fill[j] += src[j];
                            }
                        }
                    }
                    for (float& v : fill)
                    {
                        v /= static_cast<float>(have);
                    }
                }
            }
            fills.emplace(token, std::move(fill));
            forced[token] = force;
        }

        shape_type out_shape = first.shape;
        out_shape[0] = static_cast<std::int64_t>(a.rows);
        m_data.resize(n);
        for (std::size_t k = 0; k < n; ++k)
        {
            std::vector<float>& out = m_data[k];
            out.assign(a.rows * width, 0.0f);
            for (std::size_t token = 0; token < a.tokens; ++token)
            {
                const auto f = fills.find(token);
                const float* src = present(k, token) && (f == fills.end() || !forced[token]) ? row(k, (*rows[k])[token]) : (f == fills.end() ? nullptr : f->second.data());
                if (src != nullptr)
                {
                    std::copy(src, src + width, out.data() + token * width);
                }
            }
            if (a.rows > a.tokens && a.tokens > 0)
            {
                // Padding rows: the mean of the model's token rows.
                std::vector<float> mean(width, 0.0f);
                for (std::size_t token = 0; token < a.tokens; ++token)
                {
                    for (std::size_t j = 0; j < width; ++j)
                    {
                        mean[j] += out[token * width + j];
                    }
                }
                for (float& v : mean)
                {
                    v /= static_cast<float>(a.tokens);
                }
                for (std::size_t r = a.tokens; r < a.rows; ++r)
                {
                    std::copy(mean.begin(), mean.end(), out.data() + r * width);
                }
            }
            model_tensor t;
            t.name = name;
            t.dtype = "F32";
            t.shape = out_shape;
            t.data = reinterpret_cast<const std::uint8_t*>(out.data());
            t.bytes = out.size() * sizeof(float);
            m_tensors.push_back(std::move(t));
        }
    }
}

#endif
