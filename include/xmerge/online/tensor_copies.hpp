/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_ONLINE_TENSOR_COPIES_HPP
#define XMERGE_ONLINE_TENSOR_COPIES_HPP

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../core/tensor_ref.hpp"
#include "../ops/input.hpp"
#include "../ops/list.hpp"
#include "../ops/weighted_sum.hpp"

namespace xmerge
{
    /**
     * Owned copies of a parameter set, in a storage dtype of its own: the
     * snapshots that windowed and post-hoc averages keep. Copying converts
     * (float32 parameters into bfloat16 storage halve its memory, rounding
     * to nearest even).
     */
    class tensor_copies
    {
    public:
        tensor_copies() = default;
        /// Buffers shaped and named like `like` (not copied yet), of dtype `storage`.
        tensor_copies(const std::vector<const_tensor_ref>& like, dtype storage);

        /// Copies params into the buffers; throws like running_average on a count or shape mismatch.
        void assign(const std::vector<const_tensor_ref>& params, const eval_options& options = {});

        const std::vector<tensor_ref>& refs() const noexcept { return m_refs; }
        std::vector<const_tensor_ref> crefs() const { return {m_refs.begin(), m_refs.end()}; }
        dtype storage() const noexcept { return m_storage; }
        std::size_t size() const noexcept { return m_refs.size(); }

    private:
        dtype m_storage = dtype::float32;
        // 32-bit words keep every buffer aligned for float.
        std::vector<std::vector<std::uint32_t>> m_buffers;
        std::vector<tensor_ref> m_refs;
    };

    namespace detail
    {
        /// parameter_error unless `params` has `refs.size()` tensors of their shapes.
        template <class Ref>
        void check_parameter_set(const std::vector<Ref>& refs, const std::vector<const_tensor_ref>& params);
        /// outs_t <- sum_s weights[s] sets[s]_t for every tensor t, in one evaluation.
        inline void combine(const std::vector<const tensor_copies*>& sets, const std::vector<double>& weights, const std::vector<tensor_ref>& outs,
                            const eval_options& options);
    }

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        template <class Ref>
        inline void check_parameter_set(const std::vector<Ref>& refs, const std::vector<const_tensor_ref>& params)
        {
            if (params.size() != refs.size())
            {
                throw parameter_error("", "params", "expected " + std::to_string(refs.size()) + " tensors, got " + std::to_string(params.size()));
            }
            for (std::size_t i = 0; i < params.size(); ++i)
            {
                if (params[i].shape() != refs[i].shape())
                {
                    throw shape_error(refs[i].name(), "params", "parameter " + std::to_string(i) + " has shape " + to_string(params[i].shape())
                                                                    + " but was " + to_string(refs[i].shape()) + " when the average was set up");
                }
            }
        }

        inline void combine(const std::vector<const tensor_copies*>& sets, const std::vector<double>& weights, const std::vector<tensor_ref>& outs,
                            const eval_options& options)
        {
            detail::check_parameter_set(sets.front()->refs(), std::vector<const_tensor_ref>(outs.begin(), outs.end()));
            using term_list = expression_list<input_node>;
            using sum_node = decltype(weighted_sum(std::declval<const term_list&>(), weights));
            std::vector<sum_node> sums;
            sums.reserve(outs.size());
            for (std::size_t t = 0; t < outs.size(); ++t)
            {
                term_list terms;
                for (const tensor_copies* s : sets)
                {
                    terms.push_back(input_node(s->refs()[t]));
                }
                sums.push_back(weighted_sum(terms, weights));
            }
            evaluate_all(sums, outs, options);
        }
    }

    inline tensor_copies::tensor_copies(const std::vector<const_tensor_ref>& like, dtype storage) : m_storage(storage)
    {
        m_buffers.reserve(like.size());
        m_refs.reserve(like.size());
        for (std::size_t i = 0; i < like.size(); ++i)
        {
            const std::size_t bytes = like[i].size() * size_of(storage);
            m_buffers.emplace_back((bytes + 3) / 4);
            std::string name = like[i].name().empty() ? "tensor." + std::to_string(i) : like[i].name();
            m_refs.emplace_back(m_buffers.back().data(), storage, like[i].shape(), std::move(name));
        }
    }

    inline void tensor_copies::assign(const std::vector<const_tensor_ref>& params, const eval_options& options)
    {
        detail::check_parameter_set(m_refs, params);
        std::vector<input_node> copies;
        copies.reserve(params.size());
        for (const auto& p : params)
        {
            copies.emplace_back(p);
        }
        evaluate_all(copies, m_refs, options);
    }
}

#endif
