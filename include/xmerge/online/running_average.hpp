/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_ONLINE_RUNNING_AVERAGE_HPP
#define XMERGE_ONLINE_RUNNING_AVERAGE_HPP

#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../core/tensor_ref.hpp"
#include "../ops/input.hpp"
#include "../ops/lerp.hpp"

namespace xmerge
{
    /**
     * Average buffers updated in place from a stream of parameter sets:
     * the shared machinery of ema, swa and checkpoint_average.
     *
     * Holds references to the caller's average tensors (any dtype); every
     * update moves all of them toward the given parameters in one parallel
     * evaluation: avg <- (1 - t) * avg + t * x. Accumulating in float32
     * buffers keeps long streams accurate; bfloat16 averages round each step.
     */
    class running_average
    {
    public:
        explicit running_average(std::vector<tensor_ref> averages, eval_options options = {});

        const std::vector<tensor_ref>& averages() const noexcept { return m_averages; }
        const eval_options& options() const noexcept { return m_options; }

        /// avg_i <- (1 - t) * avg_i + t * params_i for every tensor i; t = 1 copies.
        void blend(const std::vector<const_tensor_ref>& params, double t) const;

    private:
        void check(const std::vector<const_tensor_ref>& params) const;

        std::vector<tensor_ref> m_averages;
        eval_options m_options;
    };

    /********************
     * Implementation   *
     ********************/

    inline running_average::running_average(std::vector<tensor_ref> averages, eval_options options)
        : m_averages(std::move(averages))
        , m_options(options)
    {
        for (std::size_t i = 0; i < m_averages.size(); ++i)
        {
            if (m_averages[i].name().empty())
            {
                m_averages[i] = m_averages[i].with_name("average." + std::to_string(i));
            }
        }
    }

    inline void running_average::check(const std::vector<const_tensor_ref>& params) const
    {
        if (params.size() != m_averages.size())
        {
            throw parameter_error("", "params", "expected " + std::to_string(m_averages.size()) + " tensors (one per average), got "
                                                    + std::to_string(params.size()));
        }
        for (std::size_t i = 0; i < params.size(); ++i)
        {
            if (params[i].shape() != m_averages[i].shape())
            {
                throw shape_error(m_averages[i].name(), "params", "parameter " + std::to_string(i) + " has shape " + xmerge::to_string(params[i].shape())
                                                                      + " but its average has shape " + xmerge::to_string(m_averages[i].shape()));
            }
        }
    }

    inline void running_average::blend(const std::vector<const_tensor_ref>& params, double t) const
    {
        check(params);
        if (t == 1.0)
        {
            // A plain copy: lerp at t = 1 would turn inf or NaN in an uninitialized average into NaN.
            std::vector<input_node> copies;
            copies.reserve(params.size());
            for (const auto& p : params)
            {
                copies.emplace_back(p);
            }
            evaluate_all(copies, m_averages, m_options);
            return;
        }
        using blend_node = decltype(xmerge::lerp(input_node(params[0]), input_node(params[0]), t));
        std::vector<blend_node> updates;
        updates.reserve(params.size());
        for (std::size_t i = 0; i < params.size(); ++i)
        {
            updates.push_back(xmerge::lerp(input_node(m_averages[i]), input_node(params[i]), t));
        }
        evaluate_all(updates, m_averages, m_options);
    }
}

#endif
