/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LINALG_GRAM_HPP
#define XMERGE_LINALG_GRAM_HPP

#include <algorithm>
#include <array>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor_ref.hpp"
#include "../simd/convert.hpp"
#include "backend.hpp"
#include "dense.hpp"

namespace xmerge
{
    /**
     * Accumulates the Gram matrix of a linear layer's inputs over batches,
     * for RegMean: after batches X_b [rows_b, in], sum() = sum_b X_b^T X_b
     * and gram() = sum() / (sum_b rows_b).
     *
     * Each batch is one BLAS symmetric rank-k update (ssyrk) into a float32
     * in x in buffer the accumulator owns; only its upper triangle is
     * updated, and the lower one is filled in when the matrix is read. Batches
     * of bfloat16 or float16 activations are widened a block of rows at a
     * time. Cost per batch: rows * in^2 flops.
     *
     * Activations of shape [..., in] (a sequence batch [batch, seq, in], say)
     * count every leading index as a row, i.e. every token is an example.
     */
    class gram_accumulator
    {
    public:
        /// An accumulator for `features` inputs; `name` (the layer) appears in errors.
        explicit gram_accumulator(std::size_t features, std::string name = {});

        /// Adds X^T X for activations of shape [..., features], any dtype.
        void add(const const_tensor_ref& activations);
        /// Adds X^T X for `rows` float32 rows of `features` values each, row-major.
        void add(const float* activations, std::size_t rows);

        /// Rows seen since construction or the last reset().
        std::size_t rows() const noexcept { return m_rows; }
        std::size_t features() const noexcept { return m_features; }
        const std::string& name() const noexcept { return m_name; }

        /// sum_b X_b^T X_b, symmetric [features, features].
        dense_matrix<float> sum() const;
        /// sum() / rows(); throws parameter_error when no row was added.
        dense_matrix<float> gram() const;
        /// Writes gram() into `out` ([features, features], any dtype).
        void write(const tensor_ref& out) const;

        /// Forgets every batch.
        void reset();

    private:
        dense_matrix<float> symmetric(double divisor) const;

        std::size_t m_features;
        std::string m_name;
        dense_matrix<float> m_upper;  // valid in its upper triangle
        std::size_t m_rows = 0;
    };

    /********************
     * Implementation   *
     ********************/

    inline gram_accumulator::gram_accumulator(std::size_t features, std::string name)
        : m_features(features)
        , m_name(std::move(name))
        , m_upper(dense_matrix<float>(std::array<std::size_t, 2>{features, features}, 0.0f))
    {
        detail::blas_dim(features, m_name);
    }

    inline void gram_accumulator::add(const float* activations, std::size_t rows)
    {
        if (rows == 0)
        {
            return;
        }
        if (activations == nullptr)
        {
            throw layout_error(m_name, "activations", "null pointer for " + std::to_string(rows) + " rows");
        }
        // syrk's k is an int: feed very tall batches in slices.
        const std::size_t slice = std::size_t{1} << 30;
        for (std::size_t begin = 0; begin < rows; begin += slice)
        {
            const std::size_t count = std::min(slice, rows - begin);
            detail::syrk_upper<float>(m_features, count, 1.0f, activations + begin * m_features, m_features, 1.0f, m_upper.data());
        }
        m_rows += rows;
    }

    inline void gram_accumulator::add(const const_tensor_ref& activations)
    {
        const auto& shape = activations.shape();
        if (shape.empty() || shape.back() != m_features)
        {
            throw shape_error(activations.name().empty() ? m_name : activations.name(), "activations",
                              "expected shape [..., " + std::to_string(m_features) + "], got " + xmerge::to_string(shape));
        }
        const std::size_t rows = m_features == 0 ? 0 : activations.size() / m_features;
        if (activations.type() == dtype::float32)
        {
            add(static_cast<const float*>(activations.data()), rows);
            return;
        }
        // About 4 MiB of float32 rows per rank-k update.
        const std::size_t block = std::max<std::size_t>(1, (std::size_t{1} << 20) / std::max<std::size_t>(1, m_features));
        std::vector<float> buf(std::min(block, rows) * m_features);
        for (std::size_t begin = 0; begin < rows; begin += block)
        {
            const std::size_t count = std::min(block, rows - begin);
            simd::load_as_float(activations.type(), activations.data(), begin * m_features, count * m_features, buf.data());
            add(buf.data(), count);
        }
    }

    inline dense_matrix<float> gram_accumulator::symmetric(double divisor) const
    {
        auto out = detail::uninitialized_matrix<float>(m_features, m_features);
        for (std::size_t i = 0; i < m_features; ++i)
        {
            for (std::size_t j = i; j < m_features; ++j)
            {
                const float v = divisor == 1.0 ? m_upper(i, j) : static_cast<float>(static_cast<double>(m_upper(i, j)) / divisor);
                out(i, j) = v;
                out(j, i) = v;
            }
        }
        return out;
    }

    inline dense_matrix<float> gram_accumulator::sum() const
    {
        return symmetric(1.0);
    }

    inline dense_matrix<float> gram_accumulator::gram() const
    {
        if (m_rows == 0)
        {
            throw parameter_error(m_name, "activations", "no rows were added, so the Gram matrix is undefined");
        }
        return symmetric(static_cast<double>(m_rows));
    }

    inline void gram_accumulator::write(const tensor_ref& out) const
    {
        const shape_type expected{m_features, m_features};
        if (out.shape() != expected)
        {
            throw shape_error(out.name().empty() ? m_name : out.name(), "out", "expected shape " + xmerge::to_string(expected) + ", got " + xmerge::to_string(out.shape()));
        }
        const dense_matrix<float> g = gram();
        simd::store_from_float(out.type(), g.data(), out.data(), 0, g.size());
    }

    inline void gram_accumulator::reset()
    {
        std::fill(m_upper.begin(), m_upper.end(), 0.0f);
        m_rows = 0;
    }
}

#endif
