/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MPI_AVERAGE_HPP
#define XMERGE_MPI_AVERAGE_HPP

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <mpi.h>

#include "../core/error.hpp"
#include "../core/tensor_ref.hpp"
#include "../simd/convert.hpp"
#include "error.hpp"
#include "flat_layout.hpp"

/**
 * @file
 * Averaging a parameter set across the ranks of a communicator, in place:
 * local SGD, model soups across workers, the outer step of DiLoCo.
 */

namespace xmerge::mpi
{
    /// How parameters travel between ranks.
    enum class wire_format
    {
        /// float32 values summed by MPI_Allreduce (the MPI library chooses the order of the sum).
        float32,
        /// bfloat16 values (half the bytes), summed in float32 in rank order; the result is rounded to bfloat16 once.
        bfloat16
    };

    /// Options of average().
    struct average_options
    {
        /// This rank's weight (e.g. the examples it saw): the result is sum_r w_r x_r / sum_r w_r. Finite, >= 0; the sum must be > 0.
        double weight = 1.0;
        wire_format wire = wire_format::float32;
        /**
         * Elements per collective call: small tensors are packed together
         * (one call instead of one per tensor), large ones split. The extra
         * memory is a few buffers of this many elements.
         */
        std::size_t bucket_elements = std::size_t(1) << 22;
    };

    /// What one average() call did on this rank.
    struct average_summary
    {
        std::size_t elements = 0;
        /// Collective calls on tensor data (one per bucket for float32, two for bfloat16).
        std::size_t collectives = 0;
        /// Bytes of tensor data this rank handed to the collectives as input.
        std::uint64_t bytes_in = 0;
        /**
         * Bytes this rank sends to the other ranks. Exact for the bfloat16
         * wire (its messages are fixed: 4 (N - 1) / N bytes per element); for
         * float32, what a bandwidth-optimal allreduce (reduce-scatter then
         * allgather) sends, 8 (N - 1) / N bytes per element: the MPI library
         * chooses its algorithm and may send more.
         */
        std::uint64_t bytes_sent = 0;
    };

    /**
     * Replaces every tensor of `params` (float32, bfloat16 or float16) by
     * the weighted mean of that tensor over the ranks of `comm`. Collective:
     * every rank calls it with tensors of the same shapes in the same order
     * and the same wire format and bucket size, and every rank ends with the
     * same values.
     *
     * float32 wire: each rank scales its values by w_r / sum w and
     * MPI_Allreduce sums them; float32 tensors spanning a whole bucket are
     * reduced in their own memory, other buckets are packed into a buffer.
     *
     * bfloat16 wire: a reduce-scatter (MPI_Alltoallv of bfloat16 values,
     * each rank summing its part in float32 in rank order) followed by an
     * MPI_Allgatherv of the bfloat16 results: the values are rounded to
     * bfloat16 on the way in and once more at the end.
     *
     * Throws parameter_error on every rank when the ranks disagree on the
     * tensor count, element count, wire format or bucket size, or a weight
     * is invalid; mpi::error when an MPI call fails.
     */
    inline average_summary average(const std::vector<tensor_ref>& params, MPI_Comm comm, const average_options& options = {});

    namespace detail
    {
        /// Throws parameter_error on every rank when `values` differ between ranks (one MPI_Allreduce).
        inline void check_agreement(std::vector<long long> values, const std::vector<const char*>& names, MPI_Comm comm);

        /// The weights of all ranks, in rank order, checked (one MPI_Allgather).
        inline std::vector<double> gather_weights(double weight, MPI_Comm comm);

        /// Elements r of the flat layout, as float32, into out[0, r.size()).
        template <class Ref>
        void pack(const flat_layout& layout, const std::vector<Ref>& tensors, flat_range r, float* out);
        /// out[0, r.size()) into elements r of the tensors, rounded to their dtypes.
        inline void unpack(const flat_layout& layout, const std::vector<tensor_ref>& tensors, flat_range r, const float* in);
    }

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        inline void check_agreement(std::vector<long long> values, const std::vector<const char*>& names, MPI_Comm comm)
        {
            // The maximum of v and of -v in one call: the ranks agree exactly when max(v) == -max(-v).
            const std::size_t n = values.size();
            values.resize(2 * n);
            for (std::size_t i = 0; i < n; ++i)
            {
                values[n + i] = -values[i];
            }
            check(MPI_Allreduce(MPI_IN_PLACE, values.data(), count(values.size(), "agreement check"), MPI_LONG_LONG, MPI_MAX, comm), "MPI_Allreduce");
            for (std::size_t i = 0; i < n; ++i)
            {
                if (values[i] != -values[n + i])
                {
                    throw parameter_error("", names[i], "differs between ranks (from " + std::to_string(-values[n + i]) + " to " + std::to_string(values[i])
                                                            + "); every rank must pass the same parameter set and options");
                }
            }
        }

        inline std::vector<double> gather_weights(double weight, MPI_Comm comm)
        {
            std::vector<double> weights(static_cast<std::size_t>(comm_size(comm)));
            check(MPI_Allgather(&weight, 1, MPI_DOUBLE, weights.data(), 1, MPI_DOUBLE, comm), "MPI_Allgather");
            double total = 0.0;
            for (std::size_t r = 0; r < weights.size(); ++r)
            {
                if (!(std::isfinite(weights[r]) && weights[r] >= 0.0))
                {
                    throw parameter_error("", "weight", "rank " + std::to_string(r) + " passed " + std::to_string(weights[r]) + "; weights must be finite and >= 0");
                }
                total += weights[r];
            }
            if (!(total > 0.0 && std::isfinite(total)))
            {
                throw parameter_error("", "weight", "the weights of the ranks sum to " + std::to_string(total) + "; at least one must be positive");
            }
            for (double& w : weights)
            {
                w /= total;
            }
            return weights;
        }

        template <class Ref>
        inline void pack(const flat_layout& layout, const std::vector<Ref>& tensors, flat_range r, float* out)
        {
            layout.for_each_segment(r, [&](std::size_t k, std::size_t offset, std::size_t n, std::size_t position)
                                    { simd::load_as_float(tensors[k].type(), tensors[k].data(), offset, n, out + position); });
        }

        inline void unpack(const flat_layout& layout, const std::vector<tensor_ref>& tensors, flat_range r, const float* in)
        {
            layout.for_each_segment(r, [&](std::size_t k, std::size_t offset, std::size_t n, std::size_t position)
                                    { simd::store_from_float(tensors[k].type(), in + position, tensors[k].data(), offset, n); });
        }

        inline void scale(float* x, std::size_t n, float c) noexcept
        {
            for (std::size_t i = 0; i < n; ++i)
            {
                x[i] *= c;
            }
        }

        // The float32 wire: one in-place MPI_Allreduce per bucket.
        inline void average_float32(const flat_layout& layout, const std::vector<tensor_ref>& params, float c, MPI_Comm comm, average_summary& summary)
        {
            const std::size_t me = static_cast<std::size_t>(comm_rank(comm));
            const std::size_t ranks = static_cast<std::size_t>(comm_size(comm));
            std::vector<float> buffer;
            for (std::size_t b = 0; b < layout.buckets(); ++b)
            {
                const flat_range r = layout.bucket(b);
                float* data = nullptr;
                layout.for_each_segment(r,
                                        [&](std::size_t k, std::size_t offset, std::size_t n, std::size_t)
                                        {
                                            if (n == r.size() && params[k].type() == dtype::float32)
                                            {
                                                data = static_cast<float*>(params[k].data()) + offset;
                                            }
                                        });
                if (data == nullptr)
                {
                    buffer.resize(r.size());
                    pack(layout, params, r, buffer.data());
                }
                float* x = data ? data : buffer.data();
                scale(x, r.size(), c);
                check(MPI_Allreduce(MPI_IN_PLACE, x, count(r.size(), "bucket"), MPI_FLOAT, MPI_SUM, comm), "MPI_Allreduce");
                if (data == nullptr)
                {
                    unpack(layout, params, r, buffer.data());
                }
                ++summary.collectives;
                summary.bytes_in += r.size() * sizeof(float);
                summary.bytes_sent += 2 * (r.size() - layout.part(b, me, ranks).size()) * sizeof(float);
            }
        }

        // The bfloat16 wire: reduce-scatter by MPI_Alltoallv with float32 sums in rank order, then MPI_Allgatherv.
        inline void average_bfloat16(const flat_layout& layout, const std::vector<tensor_ref>& params, const std::vector<double>& weights, MPI_Comm comm,
                                     average_summary& summary)
        {
            const std::size_t ranks = weights.size();
            const std::size_t me = static_cast<std::size_t>(comm_rank(comm));
            std::vector<float> values, part, sum;
            std::vector<bfloat16> wire, received, mine;
            std::vector<int> send_counts(ranks), send_displs(ranks), recv_counts(ranks), recv_displs(ranks);
            for (std::size_t b = 0; b < layout.buckets(); ++b)
            {
                const flat_range r = layout.bucket(b);
                const flat_range own = layout.part(b, me, ranks);
                values.resize(r.size());
                wire.resize(r.size());
                pack(layout, params, r, values.data());
                simd::narrow(values.data(), wire.data(), r.size());
                for (std::size_t p = 0; p < ranks; ++p)
                {
                    const flat_range other = layout.part(b, p, ranks);
                    send_counts[p] = count(other.size(), "bucket");
                    send_displs[p] = count(other.begin - r.begin, "bucket");
                    recv_counts[p] = count(own.size(), "bucket");
                    recv_displs[p] = count(p * own.size(), "bucket");
                }
                received.resize(ranks * own.size());
                check(MPI_Alltoallv(wire.data(), send_counts.data(), send_displs.data(), MPI_UINT16_T, received.data(), recv_counts.data(), recv_displs.data(),
                                    MPI_UINT16_T, comm),
                      "MPI_Alltoallv");
                sum.assign(own.size(), 0.0f);
                part.resize(own.size());
                for (std::size_t p = 0; p < ranks; ++p)
                {
                    simd::widen(received.data() + p * own.size(), part.data(), own.size());
                    const float c = static_cast<float>(weights[p]);
                    for (std::size_t i = 0; i < own.size(); ++i)
                    {
                        sum[i] += c * part[i];
                    }
                }
                mine.resize(own.size());
                simd::narrow(sum.data(), mine.data(), own.size());
                // The gathered parts land where each came from: recv counts and displacements are the send layout above.
                check(MPI_Allgatherv(mine.data(), count(own.size(), "bucket"), MPI_UINT16_T, wire.data(), send_counts.data(), send_displs.data(), MPI_UINT16_T,
                                     comm),
                      "MPI_Allgatherv");
                simd::widen(wire.data(), values.data(), r.size());
                unpack(layout, params, r, values.data());
                summary.collectives += 2;
                summary.bytes_in += (r.size() + own.size()) * sizeof(bfloat16);
                // Every part but its own to its owner, then its own part to every other rank.
                summary.bytes_sent += ((r.size() - own.size()) + (ranks - 1) * own.size()) * sizeof(bfloat16);
            }
        }
    }

    inline average_summary average(const std::vector<tensor_ref>& params, MPI_Comm comm, const average_options& options)
    {
        const std::vector<const_tensor_ref> view(params.begin(), params.end());
        const flat_layout layout(view, options.bucket_elements);
        detail::check_agreement({static_cast<long long>(layout.tensors()), static_cast<long long>(layout.elements()), static_cast<long long>(options.wire),
                                 static_cast<long long>(options.bucket_elements)},
                                {"params (tensor count)", "params (element count)", "wire", "bucket_elements"}, comm);
        const std::vector<double> weights = detail::gather_weights(options.weight, comm);
        average_summary summary;
        summary.elements = layout.elements();
        if (options.wire == wire_format::float32)
        {
            detail::average_float32(layout, params, static_cast<float>(weights[static_cast<std::size_t>(comm_rank(comm))]), comm, summary);
        }
        else
        {
            detail::average_bfloat16(layout, params, weights, comm, summary);
        }
        return summary;
    }
}

#endif
