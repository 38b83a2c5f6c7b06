/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_MAX_MAGNITUDE_HPP
#define XMERGE_OPS_MAX_MAGNITUDE_HPP

#include <cstddef>
#include <type_traits>
#include <string>
#include <utility>
#include <vector>

#include "../core/arena.hpp"
#include "../core/bound.hpp"
#include "../core/error.hpp"
#include "../core/expression.hpp"
#include "../core/statistic.hpp"
#include "../simd/batch.hpp"
#include "list.hpp"

namespace xmerge
{
    /**
     * Per element, the entry of largest magnitude among K tensors (MagMax's
     * selection); the first model wins a tie, and a NaN is chosen only when
     * it comes first.
     */
    template <class E>
    class max_magnitude_node : public tensor_expression<max_magnitude_node<E>>
    {
    public:
        explicit max_magnitude_node(expression_list<E> terms);

        const shape_type& shape() const noexcept { return m_terms[0].shape(); }
        std::string name() const { return m_terms[0].name(); }
        const expression_list<E>& terms() const noexcept { return m_terms; }

        template <class F>
        void for_each_input(F&& f) const
        {
            m_terms.for_each_input(f);
        }

    private:
        expression_list<E> m_terms;
    };

    /// Per element, the term of largest |value|.
    template <class E>
    max_magnitude_node<E> max_magnitude(const expression_list<E>& terms)
    {
        return max_magnitude_node<E>(terms);
    }

    namespace detail
    {
        template <class Bound>
        struct bound_max_magnitude
        {
            const Bound* terms;
            std::size_t count;

            template <class B>
            XMERGE_FORCE_INLINE B packet(std::size_t i) const noexcept
            {
                B best = terms[0].template packet<B>(i);
                B best_abs = simd::abs(best);
                for (std::size_t k = 1; k < count; ++k)
                {
                    const B v = terms[k].template packet<B>(i);
                    const B v_abs = simd::abs(v);
                    const auto larger = v_abs > best_abs;
                    best = simd::select(larger, v, best);
                    best_abs = simd::select(larger, v_abs, best_abs);
                }
                return best;
            }
        };

        template <class E>
        class evaluator<max_magnitude_node<E>>
        {
        public:
            explicit evaluator(const max_magnitude_node<E>& node) : m_terms(node.terms()) {}

            std::size_t collect(statistics_registry& r) { return m_terms.collect(r); }

            auto bind(std::size_t begin, std::size_t n, arena& a) const
            {
                return bound_max_magnitude<std::remove_pointer_t<decltype(m_terms.bind(begin, n, a))>>{m_terms.bind(begin, n, a), m_terms.size()};
            }

        private:
            list_evaluator<E> m_terms;
        };
    }

    template <class E>
    inline max_magnitude_node<E>::max_magnitude_node(expression_list<E> terms) : m_terms(std::move(terms))
    {
        detail::check_models(m_terms, "a magnitude selection");
    }
}

#endif
