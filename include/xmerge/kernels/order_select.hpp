/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_KERNELS_ORDER_SELECT_HPP
#define XMERGE_KERNELS_ORDER_SELECT_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>

/**
 * @file
 * Order statistics of signed values: the values an ascending sort would put
 * at given positions (quantiles without interpolation), found by selection
 * in linear time on average. NaN sorts after every number, as torch.sort
 * puts it; the scalar twin sorts.
 */

namespace xmerge::kernels
{
    /// Ascending order with NaN last (a strict weak order, unlike operator<).
    template <class T>
    inline bool ascending_nan_last(T a, T b) noexcept
    {
        return !std::isnan(a) && (std::isnan(b) || a < b);
    }

    /**
     * out[j] = the value at position positions[j] of values[0, n) sorted
     * ascending, for m positions given in non-decreasing order, each < n.
     * Reorders `values`.
     */
    template <class T>
    void select_positions(T* values, std::size_t n, const std::size_t* positions, std::size_t m, T* out);

    namespace scalar
    {
        template <class T>
        void select_positions(T* values, std::size_t n, const std::size_t* positions, std::size_t m, T* out);
    }

    /********************
     * Implementation   *
     ********************/

    template <class T>
    inline void select_positions(T* values, std::size_t n, const std::size_t* positions, std::size_t m, T* out)
    {
        // Each selection partitions the range, so the next one searches only what lies after it.
        std::size_t from = 0;
        for (std::size_t j = 0; j < m; ++j)
        {
            const std::size_t p = positions[j];
            if (p >= from)
            {
                std::nth_element(values + from, values + p, values + n, ascending_nan_last<T>);
                from = p + 1;
            }
            out[j] = values[p];
        }
    }

    namespace scalar
    {
        template <class T>
        inline void select_positions(T* values, std::size_t n, const std::size_t* positions, std::size_t m, T* out)
        {
            std::sort(values, values + n, ascending_nan_last<T>);
            for (std::size_t j = 0; j < m; ++j)
            {
                out[j] = values[positions[j]];
            }
        }
    }
}

#endif
