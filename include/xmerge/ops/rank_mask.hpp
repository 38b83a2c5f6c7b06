/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_RANK_MASK_HPP
#define XMERGE_OPS_RANK_MASK_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "../config.hpp"
#include "../core/arena.hpp"
#include "../core/bound.hpp"
#include "../core/chunk_statistic.hpp"
#include "../core/error.hpp"
#include "../core/expression.hpp"
#include "../core/statistic.hpp"
#include "../kernels/rank_band.hpp"
#include "../kernels/rank_select.hpp"
#include "../simd/batch.hpp"
#include "../simd/random.hpp"
#include "map.hpp"
#include "scalar.hpp"

XMERGE_INTRINSICS_BEGIN

namespace xmerge
{
    /**
     * 1 where an element's rank by magnitude is in [first, last), else 0.
     *
     * Elements are ranked by |value|, largest first; NaN ranks above +inf
     * (as in a descending sort); among equal magnitudes the lower index ranks
     * first. The set kept is therefore exact and deterministic: exactly
     * last - first elements (clamped to the tensor), whatever the data.
     *
     * The ranks are found in the statistics phase in linear time: a pass over
     * a sample of ~1/64 of the chunks brackets each cut in a narrow band of
     * magnitudes, then one threaded pass counts the elements above the band
     * and collects the few inside it, and a selection among those gives the
     * exact cut (a wider band, rarely, costs one more pass). `first` and
     * `last` may be statistics themselves (numbers of elements).
     */
    template <class E, class First, class Last>
    class rank_mask_node : public tensor_expression<rank_mask_node<E, First, Last>>
    {
    public:
        /// With `values`, the node gives the key's value where kept (and 0 elsewhere) instead of 1.
        rank_mask_node(E key, First first, Last last, bool values = false)
            : m_key(std::move(key)), m_first(std::move(first)), m_last(std::move(last)), m_values(values)
        {
        }

        bool values() const noexcept { return m_values; }
        const shape_type& shape() const noexcept { return m_key.shape(); }
        std::string name() const { return m_key.name(); }
        const E& key() const noexcept { return m_key; }
        const First& first() const noexcept { return m_first; }
        const Last& last() const noexcept { return m_last; }

        template <class F>
        void for_each_input(F&& f) const
        {
            m_key.for_each_input(f);
            m_first.for_each_input(f);
            m_last.for_each_input(f);
        }

    private:
        E m_key;
        First m_first;
        Last m_last;
        bool m_values;
    };

    /// 1 for elements ranked in [first, last) by |key|, else 0; first and last are numbers or scalar expressions.
    template <class E, class First, class Last>
    auto rank_range_mask(E&& key, First&& first, Last&& last);

    /// 1 for the k elements of largest |key|, else 0.
    template <class E, class K>
    auto top_k_mask(E&& key, K&& k);

    /// e where it is among the k elements of largest |e|, else 0 (one evaluation of e per element).
    template <class E, class K>
    auto keep_top_k(E&& e, K&& k);

    /// e where its rank by |e| is in [first, last), else 0.
    template <class E, class First, class Last>
    auto keep_rank_range(E&& e, First&& first, Last&& last);

    namespace detail
    {
        using kernels::rank_key;

        /// The set of the k first-ranked elements: none, all, or those ranking at or before `last`.
        struct rank_cut
        {
            enum class kind
            {
                none,
                all,
                some
            };
            kind what = kind::none;
            rank_key last{0, 0};
        };

        /**
         * A cut seen from one chunk: keep iff bits > threshold, or bits ==
         * threshold and (inclusive, or by lane: lane <= last_lane). Only the
         * chunk holding the cut's own element needs the lane.
         */
        struct chunk_cut
        {
            std::int32_t threshold;
            bool inclusive;
            bool by_lane;
            float last_lane;
        };

        inline chunk_cut localize(const rank_cut& c, std::size_t begin, std::size_t n) noexcept;

        template <class B>
        XMERGE_FORCE_INLINE auto in_cut(const chunk_cut& c, const simd::int_batch_t<B>& bits, std::size_t i) noexcept
        {
            using I = simd::int_batch_t<B>;
            const I t(c.threshold);
            if (c.by_lane)
            {
                const B lane = simd::lane_offsets<B>() + B(static_cast<float>(i));
                return simd::float_mask(bits > t) || (simd::float_mask(bits == t) && (lane <= B(c.last_lane)));
            }
            return c.inclusive ? simd::float_mask(bits >= t) : simd::float_mask(bits > t);
        }

        template <class Bound>
        struct bound_rank_mask
        {
            Bound key;
            chunk_cut first;  // ranks before `first` are excluded
            chunk_cut last;   // ranks up to `last` are included
            bool excludes;    // whether `first` excludes anything
            bool values;

            template <class B>
            XMERGE_FORCE_INLINE B packet(std::size_t i) const noexcept
            {
                using I = simd::int_batch_t<B>;
                const B v = key.template packet<B>(i);
                const I bits = simd::bits_of(v) & I(0x7FFFFFFF);
                const B zero(0.0f);
                const B kept = simd::select(detail::in_cut<B>(last, bits, i), values ? v : B(1.0f), zero);
                return excludes ? simd::select(detail::in_cut<B>(first, bits, i), zero, kept) : kept;
            }
        };

        /// Elements [offset, ...) of a bound chunk.
        template <class Bound>
        struct offset_stream
        {
            const Bound& chunk;
            std::size_t offset;

            template <class B>
            XMERGE_FORCE_INLINE B packet(std::size_t i) const noexcept
            {
                return chunk.template packet<B>(offset + i);
            }
        };

        /**
         * The exact selection behind rank masks, as a chunk-statistic kernel
         * over float32 chunks (compiled once, whatever the key expression):
         * a pass over a sample of ~(3.2 n)^(2/3) elements (short runs from
         * many chunks, so that structure along the tensor averages out)
         * brackets each cut in a narrow band of ranks, one pass counts the
         * elements above each band and collects those inside
         * (kernels::band_pass), and a selection among the candidates gives the
         * cut. A band the sample misjudged is widened for one more pass; the
         * last attempt takes every element.
         */
        class magnitude_selection
        {
        public:
            struct partial
            {
                std::vector<std::uint64_t> sample;
                std::size_t above[2] = {0, 0};
                kernels::band_candidates candidates[2];
            };

            /// The counts of first-ranked elements the two cuts keep, before the first pass.
            void set_bounds(std::size_t size, double first, double last);
            bool started() const noexcept { return m_phase != phase::start; }

            bool begin_pass(const pass_layout& layout, std::vector<partial>& partials);
            /// The sampling pass reads only the sampled chunks.
            bool wants(const chunk_view& chunk) const noexcept { return m_phase != phase::sampling || sampled_chunk(chunk.begin / m_chunk_size); }
            template <class Bound>
            void accumulate(partial& p, const chunk_view& chunk, const Bound& key)
            {
                if (m_phase == phase::sampling)
                {
                    const std::size_t offset = sample_offset(chunk);
                    const std::size_t length = std::min(sample_run, chunk.size - offset);
                    float* values = detail::padded_buffer(length, chunk.scratch);
                    simd::store(length, values, offset_stream<Bound>{key, offset});
                    kernels::sample_ranks(values, length, chunk.begin + offset, p.sample);
                    return;
                }
                if constexpr (std::is_same<Bound, bound_map<minus_fn, bound_input, bound_input>>::value)
                {
                    // a task vector of inputs: its differences are classified as they are loaded
                    const bound_input& x = std::get<0>(key.args);
                    const bound_input& base = std::get<1>(key.args);
                    if (x.type == base.type)
                    {
                        with_element_type(x.type,
                                          [&](auto tag)
                                          {
                                              using T = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
                                              const T* xs = static_cast<const T*>(x.data);
                                              const T* bs = static_cast<const T*>(base.data);
                                              band_chunk(p, chunk, [&](auto&&... a) { kernels::band_pass_difference(xs, bs, chunk.size, a...); });
                                          });
                        return;
                    }
                }
                const float* keys = detail::chunk_values(chunk.size, key, chunk.scratch);
                band_chunk(p, chunk, [&](auto&&... a) { kernels::band_pass(keys, chunk.size, a...); });
            }
            void end_pass(std::vector<partial>& partials);

            /// The cut of target t (0: first, 1: last), after the statistics phase.
            const rank_cut& cut(std::size_t t) const noexcept { return m_cuts[t]; }

        private:
            enum class phase
            {
                start,
                sampling,
                banding,
                done
            };

            struct target
            {
                std::size_t k = 0;
                bool resolved = true;
                kernels::rank_band band{{0, 0}, {0, 0}};
                double band_fraction = 1.0;  // expected share of elements in the band
            };

            /// Elements sampled from each sampled chunk, in one run.
            static constexpr std::size_t sample_run = 256;

            /// Runs pass(begin, task_begin, bands, count, above, out) over the unresolved targets' bands.
            template <class Pass>
            void band_chunk(partial& p, const chunk_view& chunk, Pass&& pass) const;

            void set_bands();
            bool sampled_chunk(std::size_t chunk) const noexcept;
            std::size_t sample_offset(const chunk_view& chunk) const noexcept;
            void resolve(std::size_t t, std::vector<partial>& partials);

            std::size_t m_size = 0;
            phase m_phase = phase::start;
            std::size_t m_attempt = 0;
            std::size_t m_chunk_size = 0;
            std::size_t m_task_size = 0;
            std::size_t m_sample_stride = 1;
            // Sample positions only bound the band, so their indices may wrap for huge tensors.
            std::vector<std::uint64_t> m_sample;
            target m_targets[2];
            rank_cut m_cuts[2];
        };

        template <class E, class First, class Last>
        class evaluator<rank_mask_node<E, First, Last>> final : public chunk_statistic<magnitude_selection, evaluator<E>>
        {
            using base = chunk_statistic<magnitude_selection, evaluator<E>>;

        public:
            explicit evaluator(const rank_mask_node<E, First, Last>& node)
                : base(xmerge::numel(node.shape()), magnitude_selection{}, node.key()), m_first(node.first()), m_last(node.last()), m_values(node.values())
            {
            }

            std::size_t collect(statistics_registry& r) { return this->collect_after(r, std::max(m_first.collect(r), m_last.collect(r))); }

            bool begin_pass(const pass_layout& layout) override
            {
                if (!this->kernel().started())
                {
                    this->kernel().set_bounds(this->size(), m_first.value(), m_last.value());
                }
                return base::begin_pass(layout);
            }

            auto bind(std::size_t begin, std::size_t n, arena& a) const
            {
                const auto& key = std::get<0>(this->operands());
                const magnitude_selection& s = this->kernel();
                return bound_rank_mask<decltype(key.bind(begin, n, a))>{key.bind(begin, n, a), detail::localize(s.cut(0), begin, n),
                                                                       detail::localize(s.cut(1), begin, n), s.cut(0).what != rank_cut::kind::none, m_values};
            }

            /// The cut of target t (0: first, 1: last), after the statistics phase.
            const rank_cut& cut(std::size_t t) const noexcept { return this->kernel().cut(t); }

        private:
            evaluator<First> m_first;
            evaluator<Last> m_last;
            bool m_values;
        };
    }

    /********************
     * Implementation   *
     ********************/

    template <class E, class First, class Last>
    inline auto rank_range_mask(E&& key, First&& first, Last&& last)
    {
        using node = rank_mask_node<std::decay_t<E>, detail::as_scalar_t<First>, detail::as_scalar_t<Last>>;
        return node(std::forward<E>(key), detail::as_scalar(std::forward<First>(first)), detail::as_scalar(std::forward<Last>(last)));
    }

    template <class E, class K>
    inline auto top_k_mask(E&& key, K&& k)
    {
        return xmerge::rank_range_mask(std::forward<E>(key), 0.0, std::forward<K>(k));
    }

    template <class E, class First, class Last>
    inline auto keep_rank_range(E&& e, First&& first, Last&& last)
    {
        using node = rank_mask_node<std::decay_t<E>, detail::as_scalar_t<First>, detail::as_scalar_t<Last>>;
        return node(std::forward<E>(e), detail::as_scalar(std::forward<First>(first)), detail::as_scalar(std::forward<Last>(last)), true);
    }

    template <class E, class K>
    inline auto keep_top_k(E&& e, K&& k)
    {
        return xmerge::keep_rank_range(std::forward<E>(e), 0.0, std::forward<K>(k));
    }

    namespace detail
    {
        inline chunk_cut localize(const rank_cut& c, std::size_t begin, std::size_t n) noexcept
        {
            switch (c.what)
            {
                case rank_cut::kind::none:
                    return {std::numeric_limits<std::int32_t>::max(), false, false, 0.0f};
                case rank_cut::kind::all:
                    return {-1, false, false, 0.0f};
                default:
                    break;
            }
            // elements of equal magnitude rank by index: all kept before the cut's element, none after
            if (c.last.index >= begin + n)
            {
                return {c.last.bits, true, false, 0.0f};
            }
            if (c.last.index < begin)
            {
                return {c.last.bits, false, false, 0.0f};
            }
            return {c.last.bits, false, true, static_cast<float>(c.last.index - begin)};
        }

        inline void magnitude_selection::set_bounds(std::size_t size, double first, double last)
        {
            m_size = size;
            const double bounds[2] = {first, last};
            for (std::size_t t = 0; t < 2; ++t)
            {
                const double b = std::isnan(bounds[t]) ? 0.0 : std::clamp(std::floor(bounds[t]), 0.0, static_cast<double>(m_size));
                m_targets[t].k = static_cast<std::size_t>(b);
                m_targets[t].resolved = m_targets[t].k == 0 || m_targets[t].k == m_size;
                m_cuts[t].what = m_targets[t].k == 0 ? rank_cut::kind::none : rank_cut::kind::all;
            }
            m_phase = m_targets[0].resolved && m_targets[1].resolved ? phase::done : phase::sampling;
        }

        inline bool magnitude_selection::sampled_chunk(std::size_t chunk) const noexcept
        {
            // Pseudo-random chunks, so that a periodic structure (rows) cannot line up with the sample.
            return simd::detail::mix32(static_cast<std::uint32_t>(chunk) ^ 0x5bd1e995U) % m_sample_stride == 0;
        }

        inline std::size_t magnitude_selection::sample_offset(const chunk_view& chunk) const noexcept
        {
            // a pseudo-random run of whole batches within the chunk
            if (chunk.size <= sample_run)
            {
                return 0;
            }
            const std::size_t positions = (chunk.size - sample_run) / simd::lanes + 1;
            return simd::detail::mix32(static_cast<std::uint32_t>(chunk.begin / m_chunk_size) ^ 0x27d4eb2fU) % positions * simd::lanes;
        }

        inline bool magnitude_selection::begin_pass(const pass_layout& layout, std::vector<partial>& partials)
        {
            if (m_phase == phase::done)
            {
                return false;
            }
            m_chunk_size = layout.chunk_size;
            m_task_size = layout.task_size();
            partials.clear();
            partials.resize(layout.tasks());
            if (m_phase == phase::sampling && m_attempt == 0 && m_sample.empty())
            {
                // Small tensors go straight to an exact pass over every element.
                const std::size_t chunks = layout.chunks();
                if (m_size <= (std::size_t{1} << 16) || chunks < 64)
                {
                    m_attempt = 2;
                    set_bands();
                }
                else
                {
                    // About (3.2 n)^(2/3) samples balance the sample's cost against the band's.
                    const double wanted = std::max(16384.0, std::cbrt(3.2 * static_cast<double>(m_size)) * std::cbrt(3.2 * static_cast<double>(m_size)));
                    const double wanted_chunks = std::ceil(wanted / static_cast<double>(std::min(sample_run, layout.chunk_size)));
                    m_sample_stride = std::max<std::size_t>(1, static_cast<std::size_t>(static_cast<double>(chunks) / wanted_chunks));
                    return true;
                }
            }
            for (std::size_t t = 0; t < 2; ++t)
            {
                if (!m_targets[t].resolved)
                {
                    const auto expected = static_cast<std::size_t>(1.25 * m_targets[t].band_fraction * static_cast<double>(layout.task_size())) + 64;
                    for (auto& p : partials)
                    {
                        p.candidates[t].reserve_more(std::min(expected, layout.task_size() + simd::lanes));
                    }
                }
            }
            return true;
        }

        inline void magnitude_selection::set_bands()
        {
            const std::size_t m = m_sample.size();
            for (auto& t : m_targets)
            {
                if (t.resolved)
                {
                    continue;
                }
                // hi: nothing ranks before it; lo: everything ranks before it.
                t.band.hi = {std::numeric_limits<std::int32_t>::max(), 0};
                t.band.lo = {-1, std::numeric_limits<std::uint64_t>::max()};
                t.band_fraction = 1.0;
                if (m_attempt >= 2 || m == 0)
                {
                    continue;
                }
                const double q = static_cast<double>(t.k) / static_cast<double>(m_size);
                const double expected = q * static_cast<double>(m);
                // binomial standard deviations of the sample's rank: 5 leaves a retry once in ~10^6 cuts
                const double margin = (m_attempt == 0 ? 5.0 : 64.0) * (std::sqrt(static_cast<double>(m) * q * (1.0 - q)) + 1.0);
                const double hi_rank = std::floor(expected - margin) - 1.0;
                const double lo_rank = std::ceil(expected + margin);
                if (hi_rank >= 0.0)
                {
                    const auto pos = m_sample.begin() + static_cast<std::ptrdiff_t>(hi_rank);
                    std::nth_element(m_sample.begin(), pos, m_sample.end(), std::greater<>());
                    t.band.hi = kernels::unpack_rank(*pos);
                }
                if (lo_rank < static_cast<double>(m))
                {
                    const auto pos = m_sample.begin() + static_cast<std::ptrdiff_t>(lo_rank);
                    std::nth_element(m_sample.begin(), pos, m_sample.end(), std::greater<>());
                    t.band.lo = kernels::unpack_rank(*pos);
                }
                t.band_fraction = (std::min(lo_rank, static_cast<double>(m)) - std::max(hi_rank, 0.0)) / static_cast<double>(m);
            }
            m_phase = phase::banding;
        }

        template <class Pass>
        inline void magnitude_selection::band_chunk(partial& p, const chunk_view& chunk, Pass&& pass) const
        {
            kernels::rank_band bands[2];
            kernels::band_candidates* out[2];
            std::size_t targets[2];
            std::size_t count = 0;
            for (std::size_t t = 0; t < 2; ++t)
            {
                if (!m_targets[t].resolved)
                {
                    bands[count] = m_targets[t].band;
                    out[count] = &p.candidates[t];
                    targets[count++] = t;
                }
            }
            std::size_t counted[2] = {0, 0};
            pass(chunk.begin, chunk.task * m_task_size, bands, count, counted, out);
            for (std::size_t b = 0; b < count; ++b)
            {
                p.above[targets[b]] += counted[b];
            }
        }

        inline void magnitude_selection::resolve(std::size_t i, std::vector<partial>& partials)
        {
            target& t = m_targets[i];
            std::size_t above = 0;
            std::size_t total = 0;
            for (const auto& p : partials)
            {
                above += p.above[i];
                total += p.candidates[i].size;
            }
            if (!(above < t.k && t.k <= above + total))
            {
                return;
            }
            std::vector<const kernels::band_candidates*> tasks;
            tasks.reserve(partials.size());
            for (const auto& p : partials)
            {
                tasks.push_back(&p.candidates[i]);
            }
            m_cuts[i] = {rank_cut::kind::some, kernels::select_ranked(tasks.data(), tasks.size(), m_task_size, t.k - above - 1)};
            t.resolved = true;
        }

        inline void magnitude_selection::end_pass(std::vector<partial>& partials)
        {
            if (m_phase == phase::sampling)
            {
                std::size_t total = 0;
                for (const auto& p : partials)
                {
                    total += p.sample.size();
                }
                m_sample.reserve(total);
                for (const auto& p : partials)
                {
                    m_sample.insert(m_sample.end(), p.sample.begin(), p.sample.end());
                }
                set_bands();
                return;
            }
            for (std::size_t i = 0; i < 2; ++i)
            {
                if (!m_targets[i].resolved)
                {
                    resolve(i, partials);
                }
            }
            if (m_targets[0].resolved && m_targets[1].resolved)
            {
                m_phase = phase::done;
                m_sample.clear();
                m_sample.shrink_to_fit();
            }
            else
            {
                // The sample misjudged the band: widen it (the last attempt takes every element).
                ++m_attempt;
                set_bands();
            }
        }
    }
}

XMERGE_INTRINSICS_END

#endif
