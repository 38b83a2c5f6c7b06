/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MPI_FLAT_LAYOUT_HPP
#define XMERGE_MPI_FLAT_LAYOUT_HPP

#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor_ref.hpp"

/**
 * @file
 * A parameter set seen as one flat run of elements, cut into buckets (the
 * unit of one collective call) and each bucket into one part per rank.
 */

namespace xmerge::mpi
{
    /// Elements [begin, end) of the flat run.
    struct flat_range
    {
        std::size_t begin = 0;
        std::size_t end = 0;
        std::size_t size() const noexcept { return end - begin; }
    };

    /**
     * The tensors of a parameter set laid end to end: element i of the run
     * is element i - offset(k) of tensor k. Buckets hold `bucket_elements`
     * elements (the last one fewer); part p of N of a bucket is its p-th
     * contiguous N-th, sizes differing by at most one element.
     */
    class flat_layout
    {
    public:
        flat_layout() = default;
        /// Throws parameter_error for bucket_elements = 0.
        flat_layout(const std::vector<const_tensor_ref>& tensors, std::size_t bucket_elements);

        std::size_t elements() const noexcept { return m_offsets.empty() ? 0 : m_offsets.back(); }
        std::size_t tensors() const noexcept { return m_offsets.empty() ? 0 : m_offsets.size() - 1; }
        std::size_t buckets() const noexcept { return (elements() + m_bucket - 1) / m_bucket; }
        flat_range bucket(std::size_t b) const noexcept { return {b * m_bucket, std::min(elements(), (b + 1) * m_bucket)}; }
        /// Part p of `parts` of bucket b.
        flat_range part(std::size_t b, std::size_t p, std::size_t parts) const noexcept;
        /// The shapes, for checking later calls.
        const std::vector<shape_type>& shapes() const noexcept { return m_shapes; }

        /**
         * Calls f(k, offset, count, position) for every tensor k that range r
         * overlaps: elements [offset, offset + count) of tensor k are
         * elements [position, position + count) of r.
         */
        template <class F>
        void for_each_segment(flat_range r, F&& f) const;

    private:
        std::vector<std::size_t> m_offsets;
        std::vector<shape_type> m_shapes;
        std::size_t m_bucket = 1;
    };

    namespace detail
    {
        /// Throws shape_error unless `tensors` have the layout's count and shapes.
        inline void check_same_shapes(const flat_layout& layout, const std::vector<const_tensor_ref>& tensors, const char* parameter);
    }

    /********************
     * Implementation   *
     ********************/

    inline flat_layout::flat_layout(const std::vector<const_tensor_ref>& tensors, std::size_t bucket_elements) : m_bucket(bucket_elements)
    {
        if (bucket_elements == 0)
        {
            throw parameter_error("", "bucket_elements", "must be positive");
        }
        m_offsets.reserve(tensors.size() + 1);
        m_offsets.push_back(0);
        for (const auto& t : tensors)
        {
            m_offsets.push_back(m_offsets.back() + t.size());
            m_shapes.push_back(t.shape());
        }
    }

    inline flat_range flat_layout::part(std::size_t b, std::size_t p, std::size_t parts) const noexcept
    {
        const flat_range whole = bucket(b);
        const std::size_t n = whole.size();
        return {whole.begin + n * p / parts, whole.begin + n * (p + 1) / parts};
    }

    template <class F>
    inline void flat_layout::for_each_segment(flat_range r, F&& f) const
    {
        if (r.size() == 0)
        {
            return;
        }
        // The first tensor whose end lies past r.begin.
        std::size_t k = static_cast<std::size_t>(std::upper_bound(m_offsets.begin() + 1, m_offsets.end(), r.begin) - m_offsets.begin()) - 1;
        for (std::size_t at = r.begin; at < r.end; ++k)
        {
            const std::size_t stop = std::min(r.end, m_offsets[k + 1]);
            if (stop > at)
            {
                f(k, at - m_offsets[k], stop - at, at - r.begin);
                at = stop;
            }
        }
    }

    namespace detail
    {
        inline void check_same_shapes(const flat_layout& layout, const std::vector<const_tensor_ref>& tensors, const char* parameter)
        {
            if (tensors.size() != layout.tensors())
            {
                throw parameter_error("", parameter, "expected " + std::to_string(layout.tensors()) + " tensors, got " + std::to_string(tensors.size()));
            }
            for (std::size_t i = 0; i < tensors.size(); ++i)
            {
                if (tensors[i].shape() != layout.shapes()[i])
                {
                    throw shape_error(tensors[i].name(), parameter, "tensor " + std::to_string(i) + " has shape " + to_string(tensors[i].shape())
                                                                        + " but the averaged set has shape " + to_string(layout.shapes()[i]));
                }
            }
        }
    }
}

#endif
