/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LORA_FOLD_HPP
#define XMERGE_LORA_FOLD_HPP

#include <algorithm>
#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/arena.hpp"
#include "../core/bound.hpp"
#include "../core/error.hpp"
#include "../core/expression.hpp"
#include "../core/statistic.hpp"
#include "../core/tensor_ref.hpp"
#include "../ops/list.hpp"
#include "../simd/convert.hpp"
#include "kernels.hpp"
#include "layer.hpp"

/**
 * @file
 * A LoRA update as a leaf of a lazy expression: each chunk of the folded
 * weight W + s B A (or of the update s B A alone) is computed when the
 * evaluation reaches it, so an expression over several adapters (task
 * arithmetic, TIES) holds no tensor-sized temporary. Cost per element:
 * rank fused multiply-adds from cache-resident factors, plus the read of W.
 */

namespace xmerge::lora
{
    /// What a low_rank_node yields.
    enum class low_rank_result
    {
        folded,  ///< W' (W + s B A, or DoRA's rescaled V)
        update   ///< W' - W
    };

    /// A weight with a LoRA update folded in, or the update alone; see fold() and update().
    class low_rank_node : public tensor_expression<low_rank_node>
    {
    public:
        low_rank_node(std::optional<const_tensor_ref> weight, std::optional<layer> l, shape_type shape, std::string name, low_rank_result what);

        const shape_type& shape() const noexcept { return m_shape; }
        std::string name() const { return m_name; }
        /// The base weight, when the result reads it.
        const std::optional<const_tensor_ref>& weight() const noexcept { return m_weight; }
        const std::optional<lora::layer>& adapted() const noexcept { return m_layer; }
        low_rank_result result() const noexcept { return m_result; }

        template <class F>
        void for_each_input(F&& f) const;

    private:
        std::optional<const_tensor_ref> m_weight;
        std::optional<lora::layer> m_layer;
        shape_type m_shape;
        std::string m_name;
        low_rank_result m_result;
    };

    /// W + s B A (DoRA: m / ||V|| * V); throws shape_error when the layer does not fit W.
    inline low_rank_node fold(const const_tensor_ref& weight, const layer& l);
    /// W itself, through the same node type (a weight the adapter leaves alone).
    inline low_rank_node fold(const const_tensor_ref& weight);
    /// The update W' - W: s B A, read from the factors only (DoRA reads W too).
    inline low_rank_node update(const const_tensor_ref& weight, const layer& l);
    /// s B A for a weight of `shape` that is not at hand (not for DoRA).
    inline low_rank_node update(const layer& l, shape_type shape);
    /// Zeros of `shape`: the base against which updates are merged by methods that subtract one.
    inline low_rank_node zeros(shape_type shape, std::string name = {});

    /// fold(weight, l) for every layer (several adapters of one weight).
    inline expression_list<low_rank_node> folds(const const_tensor_ref& weight, const std::vector<layer>& layers);
    /// update(weight, l) for every layer.
    inline expression_list<low_rank_node> updates(const const_tensor_ref& weight, const std::vector<layer>& layers);

    /********************
     * Implementation   *
     ********************/

    inline low_rank_node::low_rank_node(std::optional<const_tensor_ref> weight, std::optional<lora::layer> l, shape_type shape, std::string name,
                                        low_rank_result what)
        : m_weight(std::move(weight)), m_layer(std::move(l)), m_shape(std::move(shape)), m_name(std::move(name)), m_result(what)
    {
        if (m_weight && m_weight->shape() != m_shape)
        {
            throw shape_error(m_name, "", "weight has shape " + to_string(m_weight->shape()) + ", not " + to_string(m_shape));
        }
        if (m_layer)
        {
            check(*m_layer, m_shape);
            if (m_layer->is_dora() && !m_weight)
            {
                throw parameter_error(m_name, "weight", "a DoRA update depends on the base weight, which was not given");
            }
        }
        if (m_result == low_rank_result::folded && !m_weight)
        {
            throw parameter_error(m_name, "weight", "folding needs the base weight");
        }
    }

    template <class F>
    inline void low_rank_node::for_each_input(F&& f) const
    {
        if (m_weight)
        {
            f(*m_weight);
        }
        if (m_layer)
        {
            f(m_layer->a);
            f(m_layer->b);
            if (m_layer->magnitude)
            {
                f(*m_layer->magnitude);
            }
        }
    }

    inline low_rank_node fold(const const_tensor_ref& weight, const layer& l)
    {
        return low_rank_node(weight, l, weight.shape(), l.target.empty() ? weight.name() : l.target, low_rank_result::folded);
    }

    inline low_rank_node fold(const const_tensor_ref& weight)
    {
        return low_rank_node(weight, std::nullopt, weight.shape(), weight.name(), low_rank_result::folded);
    }

    inline low_rank_node update(const const_tensor_ref& weight, const layer& l)
    {
        // Only DoRA's update depends on W; a plain one never reads it.
        std::optional<const_tensor_ref> w;
        if (l.is_dora())
        {
            w = weight;
        }
        return low_rank_node(w, l, weight.shape(), l.target.empty() ? weight.name() : l.target, low_rank_result::update);
    }

    inline low_rank_node update(const layer& l, shape_type shape)
    {
        return low_rank_node(std::nullopt, l, std::move(shape), l.target, low_rank_result::update);
    }

    inline low_rank_node zeros(shape_type shape, std::string name)
    {
        return low_rank_node(std::nullopt, std::nullopt, std::move(shape), std::move(name), low_rank_result::update);
    }

    inline expression_list<low_rank_node> folds(const const_tensor_ref& weight, const std::vector<layer>& layers)
    {
        expression_list<low_rank_node> out;
        for (const auto& l : layers)
        {
            out.push_back(fold(weight, l));
        }
        return out;
    }

    inline expression_list<low_rank_node> updates(const const_tensor_ref& weight, const std::vector<layer>& layers)
    {
        expression_list<low_rank_node> out;
        for (const auto& l : layers)
        {
            out.push_back(update(weight, l));
        }
        return out;
    }
}

namespace xmerge::detail
{
    /**
     * Evaluation of a low_rank_node: the factors are widened to float32 once
     * (scale folded into the left one), DoRA's per-feature factors m / ||V||
     * are computed in the statistics phase, and bind() writes each chunk of
     * the result into a chunk buffer.
     */
    template <>
    class evaluator<lora::low_rank_node> final : public statistic
    {
    public:
        explicit evaluator(const lora::low_rank_node& node);

        std::size_t collect(statistics_registry& r);

        std::size_t size() const noexcept override { return m_size; }
        bool begin_pass(const pass_layout& layout) override;
        void accumulate(std::size_t, std::size_t, std::size_t, arena&) override {}
        void end_pass() override {}

        bound_pointer bind(std::size_t begin, std::size_t n, arena& a) const;

    private:
        std::optional<const_tensor_ref> m_weight;
        std::optional<const_tensor_ref> m_magnitude;
        std::string m_name;
        bool m_fold;
        bool m_per_row = true;  // DoRA's norm axis
        std::size_t m_size;
        std::size_t m_rows = 0, m_cols = 0, m_rank = 0;
        std::vector<float> m_left;     // [rows, rank], scale folded in
        std::vector<float> m_right;    // [rank, cols]
        std::vector<float> m_factors;  // DoRA: m / ||V|| per output feature
    };

    inline evaluator<lora::low_rank_node>::evaluator(const lora::low_rank_node& node)
        : m_weight(node.weight()), m_name(node.name()), m_fold(node.result() == lora::low_rank_result::folded), m_size(numel(node.shape()))
    {
        if (!node.adapted() || m_size == 0)
        {
            return;
        }
        const lora::layer& l = *node.adapted();
        const auto& shape = node.shape();
        m_rank = l.rank();
        m_magnitude = l.magnitude;
        std::vector<float> a(l.a.size()), b(l.b.size());
        simd::load_as_float(l.a.type(), l.a.data(), 0, a.size(), a.data());
        simd::load_as_float(l.b.type(), l.b.data(), 0, b.size(), b.data());
        const float s = static_cast<float>(l.scale);
        if (l.layout == lora::factor_layout::out_in)
        {
            // W [out, in...] += (s B) A
            m_rows = shape[0];
            m_cols = m_size / m_rows;
            m_left = std::move(b);
            for (float& x : m_left)
            {
                x *= s;
            }
            m_right = std::move(a);
        }
        else
        {
            // W [in, out] += (s A^T) B^T
            m_per_row = false;
            m_rows = shape[0];
            m_cols = shape[1];
            m_left.resize(m_rows * m_rank);
            m_right.resize(m_rank * m_cols);
            for (std::size_t k = 0; k < m_rank; ++k)
            {
                for (std::size_t i = 0; i < m_rows; ++i)
                {
                    m_left[i * m_rank + k] = s * a[k * m_rows + i];
                }
                for (std::size_t j = 0; j < m_cols; ++j)
                {
                    m_right[k * m_cols + j] = b[j * m_rank + k];
                }
            }
        }
    }

    inline std::size_t evaluator<lora::low_rank_node>::collect(statistics_registry& r)
    {
        if (!m_magnitude || m_size == 0)
        {
            return 0;
        }
        r.add(this, 1);
        return 1;
    }

    inline bool evaluator<lora::low_rank_node>::begin_pass(const pass_layout& layout)
    {
        if (!m_factors.empty())
        {
            return false;
        }
        const std::vector<double> norms = lora::detail::feature_norms(m_weight->data(), m_weight->type(), m_rows, m_cols, m_left.data(), m_right.data(),
                                                                      m_rank, m_per_row, layout.threads, layout.exec);
        std::vector<float> m(norms.size());
        simd::load_as_float(m_magnitude->type(), m_magnitude->data(), 0, m.size(), m.data());
        m_factors.resize(norms.size());
        for (std::size_t i = 0; i < norms.size(); ++i)
        {
            if (!(norms[i] > 0.0) || !std::isfinite(norms[i]))
            {
                throw merge_error(m_name, "lora_magnitude_vector",
                                  "DoRA cannot rescale output feature " + std::to_string(i) + ": the norm of W + s B A there is " + std::to_string(norms[i]));
            }
            m_factors[i] = static_cast<float>(static_cast<double>(m[i]) / norms[i]);
        }
        return false;
    }

    inline bound_pointer evaluator<lora::low_rank_node>::bind(std::size_t begin, std::size_t n, arena& a) const
    {
        float* buf = padded_buffer(n, a);
        const bool reads_weight = m_fold || m_magnitude;
        if (m_rank == 0)
        {
            if (reads_weight)
            {
                simd::load_as_float(m_weight->type(), m_weight->data(), begin, n, buf);
            }
            else
            {
                std::fill(buf, buf + n, 0.0f);
            }
        }
        else if (reads_weight)
        {
            with_element_type(m_weight->type(),
                              [&](auto tag)
                              {
                                  lora::detail::low_rank_chunk(buf, static_cast<decltype(tag)>(m_weight->data()) + begin, begin, n, m_cols, m_left.data(),
                                                               m_right.data(), m_rank);
                              });
        }
        else
        {
            std::fill(buf, buf + n, 0.0f);
            lora::detail::low_rank_chunk(buf, static_cast<const float*>(buf), begin, n, m_cols, m_left.data(), m_right.data(), m_rank);
        }
        if (m_magnitude)
        {
            for (std::size_t done = 0; done < n;)
            {
                const std::size_t row = (begin + done) / m_cols, col = (begin + done) % m_cols;
                const std::size_t len = std::min(m_cols - col, n - done);
                const float* f = m_per_row ? nullptr : m_factors.data() + col;
                for (std::size_t j = 0; j < len; ++j)
                {
                    buf[done + j] *= m_per_row ? m_factors[row] : f[j];
                }
                done += len;
            }
            if (!m_fold)
            {
                float* w = a.buffer();
                simd::load_as_float(m_weight->type(), m_weight->data(), begin, n, w);
                for (std::size_t i = 0; i < n; ++i)
                {
                    buf[i] -= w[i];
                }
            }
        }
        return {buf};
    }
}

#endif
