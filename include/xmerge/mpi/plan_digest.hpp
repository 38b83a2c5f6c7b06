/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MPI_PLAN_DIGEST_HPP
#define XMERGE_MPI_PLAN_DIGEST_HPP

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "../core/fnv1a.hpp"
#include "../model/merge_plan.hpp"
#include "../model/merge_spec.hpp"

/**
 * @file
 * A 64-bit digest of what decides a merge's output bytes, so that ranks
 * that planned on their own can check that they planned the same thing.
 */

namespace xmerge::mpi
{
    /**
     * FNV-1a over the method; every planned tensor (name, dtype, shape,
     * action, parameters, and for each input its file, name, dtype, shape
     * and byte count); the seed and output dtype; the output options (shard
     * size, basename, metadata); and the files written beside the tensors
     * (names, source paths, in-memory contents). Tensor bytes are not read.
     */
    inline std::uint64_t plan_digest(const merge_plan& plan, const merge_options& options);

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        class digest
        {
        public:
            void bytes(const void* p, std::size_t n) { m_h.bytes(p, n); }
            // Length first, so that ("ab", "c") and ("a", "bc") differ.
            void text(const std::string& s)
            {
                number(s.size());
                bytes(s.data(), s.size());
            }
            template <class T>
            void number(T v)
            {
                static_assert(std::is_arithmetic<T>::value, "numbers only");
                bytes(&v, sizeof v);
            }
            std::uint64_t value() const noexcept { return m_h.value(); }

        private:
            xmerge::detail::fnv1a m_h;
        };

        inline void add_tensor(digest& d, const model_tensor* t)
        {
            d.number(t != nullptr);
            if (t != nullptr)
            {
                d.text(t->origin());
                d.text(t->name);
                d.text(t->dtype);
                d.number(t->shape.size());
                for (std::size_t e : t->shape)
                {
                    d.number(e);
                }
                d.number(t->bytes);
            }
        }
    }

    inline std::uint64_t plan_digest(const merge_plan& plan, const merge_options& options)
    {
        detail::digest d;
        d.text(plan.method);
        d.number(plan.tensors.size());
        for (const auto& t : plan.tensors)
        {
            d.text(t.name);
            d.text(t.dtype);
            d.number(t.shape.size());
            for (std::size_t e : t.shape)
            {
                d.number(e);
            }
            d.number(static_cast<int>(t.what));
            detail::add_tensor(d, t.base);
            detail::add_tensor(d, t.copy_from);
            d.number(t.models.size());
            for (const model_tensor* m : t.models)
            {
                detail::add_tensor(d, m);
            }
            for (const auto& [kind, list] : t.extra)
            {
                d.text(kind);
                d.number(list.size());
                for (const model_tensor* e : list)
                {
                    detail::add_tensor(d, e);
                }
            }
            d.number(t.vocabulary != nullptr);
            for (const auto& [name, value] : t.params.values())
            {
                d.text(name);
                d.number(value.index());
                if (const double* x = std::get_if<double>(&value))
                {
                    d.number(*x);
                }
                else if (const bool* b = std::get_if<bool>(&value))
                {
                    d.number(*b);
                }
                else if (const std::string* s = std::get_if<std::string>(&value))
                {
                    d.text(*s);
                }
                else
                {
                    const auto& list = std::get<std::vector<double>>(value);
                    d.number(list.size());
                    for (double v : list)
                    {
                        d.number(v);
                    }
                }
            }
        }
        d.number(options.seed);
        d.number(options.out_dtype ? static_cast<int>(*options.out_dtype) : -1);
        d.number(options.output.max_shard_bytes);
        d.text(options.output.basename);
        for (const auto& [k, v] : options.output.metadata)
        {
            d.text(k);
            d.text(v);
        }
        for (const auto& [source, name] : options.files)
        {
            d.text(source);
            d.text(name);
        }
        for (const auto& [name, contents] : options.file_contents)
        {
            d.text(name);
            d.text(contents);
        }
        return d.value();
    }
}

#endif
