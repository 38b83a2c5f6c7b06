/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_MODEL_STATISTICS_HPP
#define XMERGE_METHODS_MODEL_STATISTICS_HPP

#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "registry.hpp"

namespace xmerge
{
    /**
     * The whole-model statistics `method` declares, over every tensor of a
     * model: for each statistic, the sum over `tensors` of its per-tensor
     * values, then its `finish`, one value per model.
     *
     * A caller merging a model tensor by tensor runs this once over the
     * method_inputs of all tensors, then sets the result as
     * method_inputs::model_statistics of each tensor before building it
     * (Fisher merging normalizes by the Fisher norm of the whole model this
     * way). Throws parameter_error when a tensor's inputs give another
     * number of values than the first tensor's.
     */
    inline std::map<std::string, std::vector<double>> compute_model_statistics(const method_info& method, const std::vector<method_inputs>& tensors);

    /********************
     * Implementation   *
     ********************/

    inline std::map<std::string, std::vector<double>> compute_model_statistics(const method_info& method, const std::vector<method_inputs>& tensors)
    {
        std::map<std::string, std::vector<double>> out;
        for (const auto& stat : method.model_statistics)
        {
            std::vector<double> sums;
            for (const auto& in : tensors)
            {
                const std::vector<double> v = stat.per_tensor(in);
                if (sums.empty())
                {
                    sums.assign(v.size(), 0.0);
                }
                if (v.size() != sums.size())
                {
                    throw parameter_error(in.tensor, stat.name, "gives " + std::to_string(v.size()) + " values (one per model) but the first tensor gave "
                                                                    + std::to_string(sums.size()));
                }
                for (std::size_t k = 0; k < v.size(); ++k)
                {
                    sums[k] += v[k];
                }
            }
            for (double& s : sums)
            {
                s = stat.finish(s);
            }
            out[stat.name] = std::move(sums);
        }
        return out;
    }
}

#endif
