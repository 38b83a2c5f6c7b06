/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_MAX_MAGNITUDE_HPP
#define XMERGE_OPS_MAX_MAGNITUDE_HPP

#include <algorithm>
#include <cstddef>
#include <new>
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
            for (const auto& t : m_terms)
            {
                t.for_each_input(f);
            }
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
            explicit evaluator(const max_magnitude_node<E>& node)
            {
                m_terms.reserve(node.terms().size());
                for (const auto& t : node.terms())
                {
                    m_terms.emplace_back(t);
                }
            }

            std::size_t collect(statistics_registry& r)
            {
                std::size_t level = 0;
                for (auto& t : m_terms)
                {
                    level = std::max(level, t.collect(r));
                }
                return level;
            }

            auto bind(std::size_t begin, std::size_t n, arena& a) const
            {
                using bound_term = decltype(m_terms[0].bind(begin, n, a));
                auto* terms = a.allocate<bound_term>(m_terms.size());
                for (std::size_t i = 0; i < m_terms.size(); ++i)
                {
                    new (terms + i) bound_term(m_terms[i].bind(begin, n, a));
                }
                return bound_max_magnitude<bound_term>{terms, m_terms.size()};
            }

        private:
            std::vector<evaluator<E>> m_terms;
        };
    }

    template <class E>
    inline max_magnitude_node<E>::max_magnitude_node(expression_list<E> terms) : m_terms(std::move(terms))
    {
        if (m_terms.empty())
        {
            throw parameter_error("", "models", "a merge needs at least one model");
        }
        for (std::size_t k = 1; k < m_terms.size(); ++k)
        {
            if (m_terms[k].shape() != m_terms[0].shape())
            {
                throw shape_error(m_terms[k].name(), "", "model " + std::to_string(k) + " has shape " + to_string(m_terms[k].shape())
                                                             + " but model 0 has shape " + to_string(m_terms[0].shape()));
            }
        }
    }
}

#endif
