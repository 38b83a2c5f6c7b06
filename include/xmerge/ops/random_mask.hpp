/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_RANDOM_MASK_HPP
#define XMERGE_OPS_RANDOM_MASK_HPP

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "../config.hpp"
#include "../core/arena.hpp"
#include "../core/bound.hpp"
#include "../core/expression.hpp"
#include "../core/statistic.hpp"
#include "../simd/random.hpp"
#include "map.hpp"
#include "scalar.hpp"

XMERGE_INTRINSICS_BEGIN

namespace xmerge
{
    /**
     * 1 with probability p, independently per element, else 0: a Bernoulli
     * mask drawn from a counter-based stream.
     *
     * The draw for element i is a function of (key, i) only, so the mask is
     * identical for any thread count, chunk size, SIMD width or machine.
     * p is a number, a scalar expression, or a tensor expression of the
     * mask's shape (a probability per element).
     */
    template <class P>
    class bernoulli_mask_node : public tensor_expression<bernoulli_mask_node<P>>
    {
    public:
        bernoulli_mask_node(P probability, simd::random_key key, shape_type shape, std::string name)
            : m_probability(std::move(probability)), m_key(key), m_shape(std::move(shape)), m_name(std::move(name))
        {
        }

        const shape_type& shape() const noexcept { return m_shape; }
        std::string name() const { return m_name; }
        const P& probability() const noexcept { return m_probability; }
        const simd::random_key& key() const noexcept { return m_key; }

        template <class F>
        void for_each_input(F&& f) const
        {
            m_probability.for_each_input(f);
        }

    private:
        P m_probability;
        simd::random_key m_key;
        shape_type m_shape;
        std::string m_name;
    };

    /// A Bernoulli mask shaped like `like`, keeping each element with probability p.
    template <class E, class P>
    auto bernoulli_mask(const E& like, P&& probability, simd::random_key key);

    namespace detail
    {
        template <class BoundP>
        struct bound_bernoulli
        {
            BoundP probability;
            simd::random_key key;
            std::uint64_t begin;

            template <class B>
            XMERGE_FORCE_INLINE B packet(std::size_t i) const noexcept
            {
                const B u = simd::uniform<B>(key, begin + i);
                return simd::select(u < probability.template packet<B>(i), B(1.0f), B(0.0f));
            }
        };

        template <class P>
        class evaluator<bernoulli_mask_node<P>>
        {
        public:
            explicit evaluator(const bernoulli_mask_node<P>& node) : m_probability(node.probability()), m_key(node.key()) {}

            std::size_t collect(statistics_registry& r) { return m_probability.collect(r); }

            auto bind(std::size_t begin, std::size_t n, arena& a) const
            {
                using bound_p = decltype(bind_operand(m_probability, begin, n, a));
                return bound_bernoulli<bound_p>{bind_operand(m_probability, begin, n, a), m_key, begin};
            }

        private:
            evaluator<P> m_probability;
            simd::random_key m_key;
        };
    }

    /********************
     * Implementation   *
     ********************/

    template <class E, class P>
    inline auto bernoulli_mask(const E& like, P&& probability, simd::random_key key)
    {
        using prob = detail::as_operand_t<P>;
        if constexpr (is_tensor_expression_v<prob>)
        {
            if (probability.shape() != like.shape())
            {
                throw shape_error(like.name(), "probability", "per-element probabilities have shape " + xmerge::to_string(probability.shape())
                                                                  + " but the mask has shape " + xmerge::to_string(like.shape()));
            }
        }
        return bernoulli_mask_node<prob>(detail::as_operand(std::forward<P>(probability)), key, like.shape(), like.name());
    }
}

XMERGE_INTRINSICS_END

#endif
