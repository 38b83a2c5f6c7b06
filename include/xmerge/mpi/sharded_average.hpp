/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MPI_SHARDED_AVERAGE_HPP
#define XMERGE_MPI_SHARDED_AVERAGE_HPP

#include <cstddef>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include <mpi.h>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../core/tensor_ref.hpp"
#include "../ops/input.hpp"
#include "../ops/lerp.hpp"
#include "../simd/convert.hpp"
#include "average.hpp"
#include "error.hpp"
#include "flat_layout.hpp"

/**
 * @file
 * A running average of a parameter set whose float32 state is split across
 * the ranks of a communicator: each rank keeps about 1/N of it, and the
 * whole copy is assembled only when asked for. The shared machinery of
 * sharded_ema and sharded_swa.
 */

namespace xmerge::mpi
{
    /// Where the averaged copy's new values come from.
    enum class average_source
    {
        /// Every rank holds the same parameters (data parallelism): each rank updates its shard from its own copy, without communication.
        replicated,
        /// The ranks' parameters differ (local SGD between averaging): the copy follows their uniform mean, one MPI_Reduce_scatter per bucket and update.
        rank_mean
    };

    /// Options of the sharded averagers.
    struct sharded_options
    {
        average_source source = average_source::replicated;
        /// Elements per collective call (see average_options::bucket_elements); every rank must pass the same.
        std::size_t bucket_elements = std::size_t(1) << 22;
        /// Threads of the in-place updates of the shard.
        eval_options eval;
    };

    /**
     * The state: the flat parameter set is cut into buckets and each bucket
     * into one part per rank (flat_layout); this rank keeps its part of
     * every bucket as float32.
     */
    class sharded_average
    {
    public:
        /// Collective. Shapes come from `params`; the state starts at zero. Throws parameter_error on every rank when ranks disagree on the set.
        sharded_average(const std::vector<const_tensor_ref>& params, MPI_Comm comm, sharded_options options = {});

        /**
         * state <- (1 - t) * state + t * x for this rank's elements; t = 1
         * copies. Collective with average_source::rank_mean (then a shape
         * mismatch on any rank throws on every rank).
         */
        void blend(const std::vector<const_tensor_ref>& params, double t);

        /// Collective: writes the whole averaged copy into `out` (any of the three dtypes, the set's shapes) on every rank; a shape mismatch on any rank throws on every rank.
        void gather(const std::vector<tensor_ref>& out) const;

        /// This rank's part of the state, in bucket order.
        const std::vector<float>& shard() const noexcept { return m_shard; }
        /// Elements of the whole parameter set.
        std::size_t elements() const noexcept { return m_layout.elements(); }
        MPI_Comm communicator() const noexcept { return m_comm; }

    private:
        MPI_Comm m_comm;
        std::size_t m_rank;
        std::size_t m_ranks;
        sharded_options m_options;
        flat_layout m_layout;
        std::vector<float> m_shard;
        std::vector<float> m_buffer;
    };

    namespace detail
    {
        /**
         * Runs a check of this rank's arguments to a collective call and
         * makes its outcome known to every rank (one MPI_Allreduce): a rank
         * that threw alone would leave the others waiting in the collective.
         * Rethrows here; the other ranks throw parameter_error.
         */
        template <class F>
        void check_on_every_rank(MPI_Comm comm, const char* parameter, F&& local_check)
        {
            std::exception_ptr failure;
            try
            {
                local_check();
            }
            catch (...)
            {
                failure = std::current_exception();
            }
            int bad = failure ? 1 : 0;
            check(MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, comm), "MPI_Allreduce");
            if (failure)
            {
                std::rethrow_exception(failure);
            }
            if (bad != 0)
            {
                throw parameter_error("", parameter, "another rank passed tensors this collective call refused");
            }
        }

        /// Elements [offset, offset + n) of a tensor as a flat tensor of their own.
        template <class Ref>
        Ref flat_slice(const Ref& t, std::size_t offset, std::size_t n)
        {
            return Ref(static_cast<typename Ref::byte_pointer>(t.data()) + offset * xmerge::size_of(t.type()), t.type(), {n}, t.name());
        }
    }

    /********************
     * Implementation   *
     ********************/

    inline sharded_average::sharded_average(const std::vector<const_tensor_ref>& params, MPI_Comm comm, sharded_options options)
        : m_comm(comm)
        , m_rank(static_cast<std::size_t>(comm_rank(comm)))
        , m_ranks(static_cast<std::size_t>(comm_size(comm)))
        , m_options(options)
        , m_layout(params, options.bucket_elements)
    {
        detail::check_agreement({static_cast<long long>(m_layout.tensors()), static_cast<long long>(m_layout.elements()),
                                 static_cast<long long>(options.bucket_elements), static_cast<long long>(options.source)},
                                {"params (tensor count)", "params (element count)", "bucket_elements", "source"}, comm);
        std::size_t n = 0;
        for (std::size_t b = 0; b < m_layout.buckets(); ++b)
        {
            n += m_layout.part(b, m_rank, m_ranks).size();
        }
        m_shard.assign(n, 0.0f);
    }

    inline void sharded_average::blend(const std::vector<const_tensor_ref>& params, double t)
    {
        if (m_options.source == average_source::rank_mean)
        {
            detail::check_on_every_rank(m_comm, "params", [&] { detail::check_same_shapes(m_layout, params, "params"); });
        }
        else
        {
            detail::check_same_shapes(m_layout, params, "params");
        }
        const float scale = 1.0f / static_cast<float>(m_ranks);
        std::vector<int> counts(m_ranks);
        std::size_t at = 0;
        for (std::size_t b = 0; b < m_layout.buckets(); ++b)
        {
            const flat_range own = m_layout.part(b, m_rank, m_ranks);
            const tensor_ref state(m_shard.data() + at, dtype::float32, {own.size()});
            std::vector<const_tensor_ref> sources;
            if (m_options.source == average_source::rank_mean)
            {
                const flat_range whole = m_layout.bucket(b);
                m_buffer.resize(whole.size() + own.size());
                detail::pack(m_layout, params, whole, m_buffer.data());
                detail::scale(m_buffer.data(), whole.size(), scale);
                for (std::size_t p = 0; p < m_ranks; ++p)
                {
                    counts[p] = detail::count(m_layout.part(b, p, m_ranks).size(), "bucket");
                }
                float* mean = m_buffer.data() + whole.size();
                check(MPI_Reduce_scatter(m_buffer.data(), mean, counts.data(), MPI_FLOAT, MPI_SUM, m_comm), "MPI_Reduce_scatter");
                sources.emplace_back(mean, dtype::float32, shape_type{own.size()});
            }
            else
            {
                m_layout.for_each_segment(own, [&](std::size_t k, std::size_t offset, std::size_t n, std::size_t)
                                          { sources.push_back(detail::flat_slice(params[k], offset, n)); });
            }
            std::size_t position = 0;
            for (const auto& source : sources)
            {
                const tensor_ref target = detail::flat_slice(state, position, source.size());
                if (t == 1.0)
                {
                    // A copy: lerp at t = 1 would turn inf or NaN in the old state into NaN.
                    simd::load_as_float(source.type(), source.data(), 0, source.size(), static_cast<float*>(target.data()));
                }
                else
                {
                    xmerge::evaluate(xmerge::lerp(input_node(target), input_node(source), t), target, m_options.eval);
                }
                position += source.size();
            }
            at += own.size();
        }
    }

    inline void sharded_average::gather(const std::vector<tensor_ref>& out) const
    {
        detail::check_on_every_rank(m_comm, "out", [&] { detail::check_same_shapes(m_layout, std::vector<const_tensor_ref>(out.begin(), out.end()), "out"); });
        std::vector<int> counts(m_ranks), displs(m_ranks);
        std::vector<float> whole;
        std::size_t at = 0;
        for (std::size_t b = 0; b < m_layout.buckets(); ++b)
        {
            const flat_range bucket = m_layout.bucket(b);
            for (std::size_t p = 0; p < m_ranks; ++p)
            {
                const flat_range part = m_layout.part(b, p, m_ranks);
                counts[p] = detail::count(part.size(), "bucket");
                displs[p] = detail::count(part.begin - bucket.begin, "bucket");
            }
            whole.resize(bucket.size());
            const std::size_t own = static_cast<std::size_t>(counts[m_rank]);
            check(MPI_Allgatherv(m_shard.data() + at, counts[m_rank], MPI_FLOAT, whole.data(), counts.data(), displs.data(), MPI_FLOAT, m_comm),
                  "MPI_Allgatherv");
            detail::unpack(m_layout, out, bucket, whole.data());
            at += own;
        }
    }
}

#endif
