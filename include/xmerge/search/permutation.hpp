/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_SEARCH_PERMUTATION_HPP
#define XMERGE_SEARCH_PERMUTATION_HPP

#include <algorithm>
#include <cstddef>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor_ref.hpp"
#include "../simd/convert.hpp"
#include "objective.hpp"

/**
 * @file
 * Permutation symmetries of a network: which tensor axes index the same
 * hidden units, so that permuting them together leaves the function
 * unchanged, and applying such permutations to a model.
 */

namespace xmerge
{
    /// One axis of one tensor, by the tensor's name.
    struct permuted_axis
    {
        std::string tensor;
        std::size_t axis = 0;
    };

    /// Axes that are permuted together (the units of one hidden layer).
    struct permutation_group
    {
        std::string name;
        std::vector<permuted_axis> axes;
    };

    /// Every permutation symmetry of a model; an axis belongs to at most one group.
    struct permutation_spec
    {
        std::vector<permutation_group> groups;
    };

    /// perm[i] = j: index i of the permuted tensor reads index j of the original.
    using permutation = std::vector<std::size_t>;

    /**
     * The spec of a multilayer perceptron whose Linear layers are named
     * layers[0], ..., layers[n-1] in order (weights "<layer>.weight" of shape
     * [out, in], biases "<layer>.bias"): the hidden units after layer i
     * (i < n - 1) are one group, "<layer i>" = {layer i weight axis 0,
     * layer i bias axis 0, layer i+1 weight axis 1}. Element-wise
     * activations between the layers commute with the permutation; the
     * inputs and outputs of the network are not permuted.
     */
    inline permutation_spec mlp_permutation_spec(const std::vector<std::string>& layers, bool biases = true);

    /**
     * Writes every tensor of `in` into `out` (same order and shapes, any
     * dtypes) with each grouped axis permuted by its group's permutation:
     * out[.., i, ..] = in[.., perm[i], ..]. Tensors the spec does not name
     * are copied. Throws parameter_error for a tensor named by the spec that
     * `in` lacks, an axis out of range, group members of different sizes, an
     * axis in two groups, a permutation count other than the group count or
     * a vector that is not a permutation of the group's size; shape_error
     * when out does not match in; layout_error when they share memory.
     */
    inline void apply_permutation(const permutation_spec& spec, const std::vector<permutation>& perms, const parameter_list& in,
                                  const std::vector<tensor_ref>& out);

    namespace detail
    {
        /// A spec checked against a model's tensors.
        struct resolved_spec
        {
            /// Units per group.
            std::vector<std::size_t> sizes;
            /// members[g]: (tensor index, axis) of group g.
            std::vector<std::vector<std::pair<std::size_t, std::size_t>>> members;
            /// axis_group[t][d]: the group of tensor t's axis d, or npos.
            std::vector<std::vector<std::size_t>> axis_group;

            static constexpr std::size_t npos = static_cast<std::size_t>(-1);
        };

        inline resolved_spec resolve(const permutation_spec& spec, const parameter_list& tensors);

        inline void check_permutations(const permutation_spec& spec, const resolved_spec& r, const std::vector<permutation>& perms);

        /// The permutation of each axis of tensor t (null where the axis is not permuted or is `skip`).
        inline std::vector<const std::size_t*> axis_permutations(const resolved_spec& r, const std::vector<permutation>& perms, std::size_t t,
                                                                 std::size_t skip = resolved_spec::npos);

        /**
         * dst = src with each axis d read through perms[d] (identity when
         * null), its axes in order, or with axis `front` moved first (a
         * [shape[front], rest] matrix) when front is not npos. Raw float
         * buffers, row-major.
         */
        inline void gather_permuted(const float* src, const shape_type& shape, const std::vector<const std::size_t*>& perms, std::size_t front, float* dst);
    }

    /********************
     * Implementation   *
     ********************/

    inline permutation_spec mlp_permutation_spec(const std::vector<std::string>& layers, bool biases)
    {
        permutation_spec spec;
        for (std::size_t i = 0; i + 1 < layers.size(); ++i)
        {
            permutation_group g;
            g.name = layers[i];
            g.axes.push_back({layers[i] + ".weight", 0});
            if (biases)
            {
                g.axes.push_back({layers[i] + ".bias", 0});
            }
            g.axes.push_back({layers[i + 1] + ".weight", 1});
            spec.groups.push_back(std::move(g));
        }
        return spec;
    }

    namespace detail
    {
        inline resolved_spec resolve(const permutation_spec& spec, const parameter_list& tensors)
        {
            std::map<std::string, std::size_t> index;
            for (std::size_t t = 0; t < tensors.size(); ++t)
            {
                index.emplace(tensors[t].name(), t);
            }
            resolved_spec r;
            r.axis_group.resize(tensors.size());
            for (std::size_t t = 0; t < tensors.size(); ++t)
            {
                r.axis_group[t].assign(tensors[t].dimension(), resolved_spec::npos);
            }
            for (std::size_t g = 0; g < spec.groups.size(); ++g)
            {
                const permutation_group& group = spec.groups[g];
                if (group.axes.empty())
                {
                    throw parameter_error("", "spec", "permutation group '" + group.name + "' names no axis");
                }
                r.members.emplace_back();
                r.sizes.push_back(0);
                for (const permuted_axis& a : group.axes)
                {
                    const auto it = index.find(a.tensor);
                    if (it == index.end())
                    {
                        throw parameter_error(a.tensor, "spec", "permutation group '" + group.name + "' names a tensor the model does not have");
                    }
                    const std::size_t t = it->second;
                    const shape_type& shape = tensors[t].shape();
                    if (a.axis >= shape.size())
                    {
                        throw parameter_error(a.tensor, "spec", "permutation group '" + group.name + "' names axis " + std::to_string(a.axis) + " of a tensor of shape "
                                                                    + to_string(shape));
                    }
                    if (r.axis_group[t][a.axis] != resolved_spec::npos)
                    {
                        throw parameter_error(a.tensor, "spec", "axis " + std::to_string(a.axis) + " is in groups '" + spec.groups[r.axis_group[t][a.axis]].name
                                                                    + "' and '" + group.name + "'");
                    }
                    if (r.members[g].empty())
                    {
                        r.sizes[g] = shape[a.axis];
                    }
                    else if (shape[a.axis] != r.sizes[g])
                    {
                        throw parameter_error(a.tensor, "spec", "axis " + std::to_string(a.axis) + " has " + std::to_string(shape[a.axis]) + " entries but group '"
                                                                    + group.name + "' has " + std::to_string(r.sizes[g]));
                    }
                    r.axis_group[t][a.axis] = g;
                    r.members[g].emplace_back(t, a.axis);
                }
            }
            return r;
        }

        inline void check_permutations(const permutation_spec& spec, const resolved_spec& r, const std::vector<permutation>& perms)
        {
            if (perms.size() != r.sizes.size())
            {
                throw parameter_error("", "perms", "expected one permutation per group (" + std::to_string(r.sizes.size()) + "), got " + std::to_string(perms.size()));
            }
            for (std::size_t g = 0; g < perms.size(); ++g)
            {
                std::vector<char> seen(r.sizes[g], 0);
                bool ok = perms[g].size() == r.sizes[g];
                for (std::size_t i = 0; ok && i < perms[g].size(); ++i)
                {
                    ok = perms[g][i] < r.sizes[g] && !seen[perms[g][i]];
                    if (ok)
                    {
                        seen[perms[g][i]] = 1;
                    }
                }
                if (!ok)
                {
                    throw parameter_error("", "perms", "the vector for group '" + spec.groups[g].name + "' is not a permutation of " + std::to_string(r.sizes[g])
                                                          + " indices");
                }
            }
        }

        inline std::vector<const std::size_t*> axis_permutations(const resolved_spec& r, const std::vector<permutation>& perms, std::size_t t, std::size_t skip)
        {
            std::vector<const std::size_t*> out(r.axis_group[t].size(), nullptr);
            for (std::size_t d = 0; d < out.size(); ++d)
            {
                const std::size_t g = r.axis_group[t][d];
                if (g != resolved_spec::npos && d != skip)
                {
                    out[d] = perms[g].data();
                }
            }
            return out;
        }

        inline void gather_permuted(const float* src, const shape_type& shape, const std::vector<const std::size_t*>& perms, std::size_t front, float* dst)
        {
            const std::size_t rank = shape.size();
            const std::size_t n = numel(shape);
            if (rank == 0 || n == 0)
            {
                std::copy(src, src + n, dst);
                return;
            }
            std::vector<std::size_t> stride(rank, 1);
            for (std::size_t d = rank - 1; d-- > 0;)
            {
                stride[d] = stride[d + 1] * shape[d + 1];
            }
            // Output axes, outermost first.
            std::vector<std::size_t> order;
            if (front != resolved_spec::npos)
            {
                order.push_back(front);
            }
            for (std::size_t d = 0; d < rank; ++d)
            {
                if (d != front)
                {
                    order.push_back(d);
                }
            }
            auto source_index = [&](std::size_t axis, std::size_t i) { return (perms[axis] ? perms[axis][i] : i) * stride[axis]; };
            const std::size_t inner = order.back();
            std::vector<std::size_t> idx(rank, 0);  // over order[0 .. rank-2]
            for (std::size_t out = 0; out < n; out += shape[inner])
            {
                std::size_t offset = 0;
                for (std::size_t k = 0; k + 1 < rank; ++k)
                {
                    offset += source_index(order[k], idx[k]);
                }
                for (std::size_t i = 0; i < shape[inner]; ++i)
                {
                    dst[out + i] = src[offset + source_index(inner, i)];
                }
                for (std::size_t k = rank - 1; k-- > 0;)
                {
                    if (++idx[k] < shape[order[k]])
                    {
                        break;
                    }
                    idx[k] = 0;
                }
            }
        }
    }

    inline void apply_permutation(const permutation_spec& spec, const std::vector<permutation>& perms, const parameter_list& in,
                                  const std::vector<tensor_ref>& out)
    {
        const detail::resolved_spec r = detail::resolve(spec, in);
        detail::check_permutations(spec, r, perms);
        if (out.size() != in.size())
        {
            throw parameter_error("", "out", "expected " + std::to_string(in.size()) + " tensors, got " + std::to_string(out.size()));
        }
        for (std::size_t t = 0; t < in.size(); ++t)
        {
            if (out[t].shape() != in[t].shape())
            {
                throw shape_error(in[t].name(), "out", "output has shape " + to_string(out[t].shape()) + " but the input has shape " + to_string(in[t].shape()));
            }
            for (const auto& x : in)
            {
                if (overlaps(out[t], x))
                {
                    throw layout_error(in[t].name(), "out", "output shares memory with input '" + x.name() + "'");
                }
            }
        }
        std::vector<float> source, permuted;
        for (std::size_t t = 0; t < in.size(); ++t)
        {
            source.resize(in[t].size());
            permuted.resize(in[t].size());
            simd::load_as_float(in[t].type(), in[t].data(), 0, in[t].size(), source.data());
            detail::gather_permuted(source.data(), in[t].shape(), detail::axis_permutations(r, perms, t), detail::resolved_spec::npos, permuted.data());
            simd::store_from_float(out[t].type(), permuted.data(), out[t].data(), 0, out[t].size());
        }
    }
}

#endif
