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
#include "../core/error.hpp"
#include "../core/expression.hpp"
#include "../core/statistic.hpp"
#include "../simd/batch.hpp"
#include "../simd/random.hpp"
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
        /// Position in the magnitude ranking: larger |value| first, then lower index.
        struct rank_key
        {
            std::int32_t bits;  // bit pattern of |value|
            std::uint64_t index;
        };

        inline bool ranks_before(const rank_key& a, const rank_key& b) noexcept
        {
            return a.bits > b.bits || (a.bits == b.bits && a.index < b.index);
        }

        /// The rank order of elements of tensors below 2^32 elements as one 64-bit number (larger ranks first).
        inline std::uint64_t packed_rank(std::int32_t bits, std::uint64_t index) noexcept
        {
            return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(bits)) << 32) | (0xFFFFFFFFULL - (index & 0xFFFFFFFFULL));
        }

        inline rank_key unpack_rank(std::uint64_t key) noexcept
        {
            return {static_cast<std::int32_t>(key >> 32), 0xFFFFFFFFULL - (key & 0xFFFFFFFFULL)};
        }

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

        /// A cut seen from one chunk: keep iff bits > above || (bits == at && lane <= last_lane).
        struct chunk_cut
        {
            std::int32_t above;
            std::int32_t at;
            float last_lane;
        };

        inline chunk_cut localize(const rank_cut& c, std::size_t begin, std::size_t n) noexcept
        {
            constexpr std::int32_t never = std::numeric_limits<std::int32_t>::max();
            switch (c.what)
            {
                case rank_cut::kind::none:
                    return {never, never, -1.0f};
                case rank_cut::kind::all:
                    return {-1, never, -1.0f};
                default:
                    break;
            }
            float lane = -1.0f;
            if (c.last.index >= begin + n)
            {
                lane = static_cast<float>(n);
            }
            else if (c.last.index >= begin)
            {
                lane = static_cast<float>(c.last.index - begin);
            }
            return {c.last.bits, c.last.bits, lane};
        }

        template <class B>
        XMERGE_FORCE_INLINE auto in_cut(const chunk_cut& c, const simd::int_batch_t<B>& bits, const B& lane) noexcept
        {
            using I = simd::int_batch_t<B>;
            return simd::float_mask(bits > I(c.above)) || (simd::float_mask(bits == I(c.at)) && (lane <= B(c.last_lane)));
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
                const B lane = simd::lane_offsets<B>() + B(static_cast<float>(i));
                const auto kept = in_cut(last, bits, lane);
                const auto keep = excludes ? kept && !in_cut(first, bits, lane) : kept;
                return simd::select(keep, values ? v : B(1.0f), B(0.0f));
            }
        };

        template <class E, class First, class Last>
        class evaluator<rank_mask_node<E, First, Last>> final : public statistic
        {
        public:
            explicit evaluator(const rank_mask_node<E, First, Last>& node);

            std::size_t collect(statistics_registry& r);
            auto bind(std::size_t begin, std::size_t n, arena& a) const
            {
                return bound_rank_mask<decltype(m_key.bind(begin, n, a))>{m_key.bind(begin, n, a), localize(m_cuts[0], begin, n),
                                                                         localize(m_cuts[1], begin, n), m_cuts[0].what != rank_cut::kind::none,
                                                                         m_values};
            }

            std::size_t size() const noexcept override { return m_size; }
            bool begin_pass(const pass_layout& layout) override;
            void accumulate(std::size_t task, std::size_t begin, std::size_t n, arena& a) override;
            void end_pass() override;

            /// The cut of target t (0: first, 1: last), after the statistics phase.
            const rank_cut& cut(std::size_t t) const noexcept { return m_cuts[t]; }

        private:
            enum class phase
            {
                start,
                sampling,
                sampled,
                banding,
                done
            };

            // Candidates of one task: magnitude bits and offsets from the task's first element.
            struct task_candidates
            {
                std::vector<std::int32_t> bits;
                std::vector<std::uint32_t> offsets;
                std::size_t size = 0;

                void reserve_more(std::size_t extra)
                {
                    if (size + extra > bits.size())
                    {
                        const std::size_t capacity = std::max(size + extra, 2 * bits.size());
                        bits.resize(capacity);
                        offsets.resize(capacity);
                    }
                }
            };

            struct target
            {
                std::size_t k = 0;
                bool resolved = true;
                rank_key hi{0, 0};  // band: keys ranking from hi ...
                rank_key lo{0, 0};  // ... to lo, inclusive
                double band_fraction = 1.0;  // expected share of elements in the band
                std::vector<std::size_t> above;
                std::vector<task_candidates> candidates;
            };

            void set_bands();
            bool sampled_chunk(std::size_t chunk) const noexcept;

            evaluator<E> m_key;
            evaluator<First> m_first;
            evaluator<Last> m_last;
            std::size_t m_size;
            bool m_values;
            phase m_phase = phase::start;
            std::size_t m_attempt = 0;
            std::size_t m_chunk_size = 0;
            std::size_t m_task_size = 0;
            std::size_t m_sample_stride = 1;
            // Sample positions only bound the band, so their indices may wrap for huge tensors.
            std::vector<std::vector<std::uint64_t>> m_task_samples;
            std::vector<std::uint64_t> m_sample;
            target m_targets[2];
            rank_cut m_cuts[2];
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
        return rank_range_mask(std::forward<E>(key), 0.0, std::forward<K>(k));
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
        return keep_rank_range(std::forward<E>(e), 0.0, std::forward<K>(k));
    }

    namespace detail
    {
        template <class E, class First, class Last>
        inline evaluator<rank_mask_node<E, First, Last>>::evaluator(const rank_mask_node<E, First, Last>& node)
            : m_key(node.key()), m_first(node.first()), m_last(node.last()), m_size(numel(node.shape())), m_values(node.values())
        {
        }

        template <class E, class First, class Last>
        inline std::size_t evaluator<rank_mask_node<E, First, Last>>::collect(statistics_registry& r)
        {
            const std::size_t level = std::max({m_key.collect(r), m_first.collect(r), m_last.collect(r)}) + 1;
            r.add(this, level);
            return level;
        }

        template <class E, class First, class Last>
        inline bool evaluator<rank_mask_node<E, First, Last>>::sampled_chunk(std::size_t chunk) const noexcept
        {
            // Pseudo-random chunks, so that a periodic structure (rows) cannot line up with the sample.
            return simd::detail::mix32(static_cast<std::uint32_t>(chunk) ^ 0x5bd1e995U) % m_sample_stride == 0;
        }

        template <class E, class First, class Last>
        inline bool evaluator<rank_mask_node<E, First, Last>>::begin_pass(const pass_layout& layout)
        {
            m_chunk_size = layout.chunk_size;
            m_task_size = layout.task_size();
            if (m_phase == phase::start)
            {
                const double bounds[2] = {m_first.value(), m_last.value()};
                for (std::size_t t = 0; t < 2; ++t)
                {
                    const double b = std::isnan(bounds[t]) ? 0.0 : std::clamp(std::floor(bounds[t]), 0.0, static_cast<double>(m_size));
                    m_targets[t].k = static_cast<std::size_t>(b);
                    m_targets[t].resolved = m_targets[t].k == 0 || m_targets[t].k == m_size;
                    m_cuts[t].what = m_targets[t].k == 0 ? rank_cut::kind::none : rank_cut::kind::all;
                }
                if (m_targets[0].resolved && m_targets[1].resolved)
                {
                    m_phase = phase::done;
                    return false;
                }
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
                    const double wanted_chunks = std::ceil(wanted / static_cast<double>(layout.chunk_size));
                    m_sample_stride = std::max<std::size_t>(1, static_cast<std::size_t>(static_cast<double>(chunks) / wanted_chunks));
                    m_task_samples.assign(layout.tasks(), {});
                    m_phase = phase::sampling;
                    return true;
                }
            }
            else if (m_phase == phase::sampled)
            {
                set_bands();
            }
            if (m_phase == phase::done)
            {
                return false;
            }
            for (auto& t : m_targets)
            {
                if (!t.resolved)
                {
                    t.above.assign(layout.tasks(), 0);
                    t.candidates.assign(layout.tasks(), {});
                    const auto expected = static_cast<std::size_t>(1.25 * t.band_fraction * static_cast<double>(layout.task_size())) + 64;
                    for (auto& c : t.candidates)
                    {
                        c.reserve_more(std::min(expected, layout.task_size() + simd::lanes));
                    }
                }
            }
            m_phase = phase::banding;
            return true;
        }

        template <class E, class First, class Last>
        inline void evaluator<rank_mask_node<E, First, Last>>::set_bands()
        {
            const std::size_t m = m_sample.size();
            for (auto& t : m_targets)
            {
                if (t.resolved)
                {
                    continue;
                }
                // hi: nothing ranks before it; lo: everything ranks before it.
                t.hi = {std::numeric_limits<std::int32_t>::max(), 0};
                t.lo = {-1, std::numeric_limits<std::uint64_t>::max()};
                t.band_fraction = 1.0;
                if (m_attempt >= 2 || m == 0)
                {
                    continue;
                }
                const double q = static_cast<double>(t.k) / static_cast<double>(m_size);
                const double expected = q * static_cast<double>(m);
                const double margin = (m_attempt == 0 ? 8.0 : 64.0) * (std::sqrt(static_cast<double>(m) * q * (1.0 - q)) + 1.0);
                const double hi_rank = std::floor(expected - margin) - 1.0;
                const double lo_rank = std::ceil(expected + margin);
                if (hi_rank >= 0.0)
                {
                    const auto pos = m_sample.begin() + static_cast<std::ptrdiff_t>(hi_rank);
                    std::nth_element(m_sample.begin(), pos, m_sample.end(), std::greater<>());
                    t.hi = unpack_rank(*pos);
                }
                if (lo_rank < static_cast<double>(m))
                {
                    const auto pos = m_sample.begin() + static_cast<std::ptrdiff_t>(lo_rank);
                    std::nth_element(m_sample.begin(), pos, m_sample.end(), std::greater<>());
                    t.lo = unpack_rank(*pos);
                }
                t.band_fraction = (std::min(lo_rank, static_cast<double>(m)) - std::max(hi_rank, 0.0)) / static_cast<double>(m);
            }
            m_phase = phase::banding;
        }

        template <class E, class First, class Last>
        inline void evaluator<rank_mask_node<E, First, Last>>::accumulate(std::size_t task, std::size_t begin, std::size_t n, arena& a)
        {
            using B = simd::batch;
            using I = simd::int_batch_t<B>;
            constexpr std::size_t w = simd::lanes;
            const bool sampling = m_phase == phase::sampling;
            if (sampling && !sampled_chunk(begin / m_chunk_size))
            {
                return;
            }
            arena::frame frame(a);
            const auto key = m_key.bind(begin, n, a);
            alignas(64) std::int32_t lane_values[w];

            if (sampling)
            {
                auto& out = m_task_samples[task];
                for (std::size_t j = 0; j < n; j += w)
                {
                    simd::store_ints(lane_values, simd::bits_of(key.template packet<B>(j)) & I(0x7FFFFFFF));
                    for (std::size_t l = 0; l < w && j + l < n; ++l)
                    {
                        out.push_back(packed_rank(lane_values[l], begin + j + l));
                    }
                }
                return;
            }

            // A band edge seen from this chunk: its magnitude bits and its index as a lane position.
            struct local_edge
            {
                I bits;
                B lane;
            };
            const auto localize_edge = [&](const rank_key& k)
            {
                const double lane = k.index < begin ? -1.0 : std::min(static_cast<double>(k.index - begin), static_cast<double>(n) + 1.0);
                return local_edge{I(k.bits), B(static_cast<float>(lane))};
            };
            struct active_target
            {
                target* t;
                local_edge hi;
                local_edge lo;
                B above;
            };
            active_target active[2];
            std::size_t count = 0;
            for (auto& t : m_targets)
            {
                if (!t.resolved)
                {
                    active[count++] = {&t, localize_edge(t.hi), localize_edge(t.lo), B(0.0f)};
                }
            }
            const auto offset0 = static_cast<std::uint32_t>(begin - task * m_task_size);
            const B valid_lanes(static_cast<float>(n));
            for (std::size_t j = 0; j < n; j += w)
            {
                const I bits = simd::bits_of(key.template packet<B>(j)) & I(0x7FFFFFFF);
                const B lane = simd::lane_offsets<B>() + B(static_cast<float>(j));
                const auto valid = lane < valid_lanes;
                for (std::size_t c = 0; c < count; ++c)
                {
                    active_target& at = active[c];
                    // Most elements are clearly above or below the band: two compares decide.
                    const auto strictly_above = simd::float_mask(bits > at.hi.bits);
                    const auto touches_band = simd::float_mask((bits >= at.lo.bits) && (bits <= at.hi.bits)) && valid;
                    if (!simd::any(touches_band))
                    {
                        at.above += simd::select(strictly_above && valid, B(1.0f), B(0.0f));
                        continue;
                    }
                    // ranks before hi: above the band; lo ranks before it: below the band
                    const auto above = strictly_above || (simd::float_mask(bits == at.hi.bits) && lane < at.hi.lane);
                    const auto below = simd::float_mask(at.lo.bits > bits) || (simd::float_mask(bits == at.lo.bits) && lane > at.lo.lane);
                    at.above += simd::select(above && valid, B(1.0f), B(0.0f));
                    std::uint32_t in_band = simd::lane_bits(!above && !below && valid);
                    if (!in_band)
                    {
                        continue;
                    }
                    task_candidates& out = at.t->candidates[task];
                    out.reserve_more(w);
                    const auto first_offset = static_cast<std::uint32_t>(offset0 + j);
#if defined(__AVX512F__)
                    if constexpr (w == 16)
                    {
                        const auto m = static_cast<__mmask16>(in_band);
                        _mm512_mask_compressstoreu_epi32(out.bits.data() + out.size, m, static_cast<__m512i>(bits));
                        const __m512i offsets = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(first_offset)),
                                                                 _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
                        _mm512_mask_compressstoreu_epi32(out.offsets.data() + out.size, m, offsets);
                        out.size += static_cast<std::size_t>(__builtin_popcount(in_band));
                        continue;
                    }
#endif
                    simd::store_ints(lane_values, bits);
                    for (; in_band; in_band &= in_band - 1)
                    {
                        const unsigned l = simd::lowest_bit(in_band);
                        out.bits[out.size] = lane_values[l];
                        out.offsets[out.size] = first_offset + l;
                        ++out.size;
                    }
                }
            }
            for (std::size_t c = 0; c < count; ++c)
            {
                active[c].t->above[task] += static_cast<std::size_t>(simd::batch_traits<B>::reduce_add(active[c].above));
            }
        }

        template <class E, class First, class Last>
        inline void evaluator<rank_mask_node<E, First, Last>>::end_pass()
        {
            if (m_phase == phase::sampling)
            {
                for (auto& s : m_task_samples)
                {
                    m_sample.insert(m_sample.end(), s.begin(), s.end());
                }
                m_task_samples.clear();
                m_task_samples.shrink_to_fit();
                m_phase = phase::sampled;
                return;
            }
            bool all_resolved = true;
            for (std::size_t i = 0; i < 2; ++i)
            {
                target& t = m_targets[i];
                if (t.resolved)
                {
                    continue;
                }
                std::size_t above = 0;
                std::size_t total = 0;
                for (std::size_t x : t.above)
                {
                    above += x;
                }
                for (const auto& c : t.candidates)
                {
                    total += c.size;
                }
                if (above < t.k && t.k <= above + total)
                {
                    const std::size_t position = t.k - above - 1;
                    if (m_size <= 0xFFFFFFFFULL)
                    {
                        // one 64-bit number per candidate selects about twice as fast as a struct
                        std::vector<std::uint64_t> band;
                        band.reserve(total);
                        for (std::size_t task = 0; task < t.candidates.size(); ++task)
                        {
                            const auto& c = t.candidates[task];
                            for (std::size_t x = 0; x < c.size; ++x)
                            {
                                band.push_back(packed_rank(c.bits[x], task * m_task_size + c.offsets[x]));
                            }
                        }
                        const auto pos = band.begin() + static_cast<std::ptrdiff_t>(position);
                        std::nth_element(band.begin(), pos, band.end(), std::greater<>());
                        m_cuts[i] = {rank_cut::kind::some, unpack_rank(*pos)};
                    }
                    else
                    {
                        std::vector<rank_key> band;
                        band.reserve(total);
                        for (std::size_t task = 0; task < t.candidates.size(); ++task)
                        {
                            const auto& c = t.candidates[task];
                            for (std::size_t x = 0; x < c.size; ++x)
                            {
                                band.push_back({c.bits[x], task * m_task_size + c.offsets[x]});
                            }
                        }
                        const auto pos = band.begin() + static_cast<std::ptrdiff_t>(position);
                        std::nth_element(band.begin(), pos, band.end(), ranks_before);
                        m_cuts[i] = {rank_cut::kind::some, *pos};
                    }
                    t.resolved = true;
                }
                else
                {
                    all_resolved = false;
                }
                t.above.clear();
                t.candidates.clear();
                t.candidates.shrink_to_fit();
            }
            if (all_resolved)
            {
                m_phase = phase::done;
                m_sample.clear();
                m_sample.shrink_to_fit();
            }
            else
            {
                // The sample misjudged the band: widen it (the last attempt takes every element).
                ++m_attempt;
                m_phase = phase::sampled;
            }
        }
    }
}

XMERGE_INTRINSICS_END

#endif
