/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_LIST_NODE_HPP
#define XMERGE_OPS_LIST_NODE_HPP

#include <cstddef>
#include <new>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../config.hpp"
#include "../core/arena.hpp"
#include "../core/bound.hpp"
#include "../core/error.hpp"
#include "../core/expression.hpp"
#include "../core/statistic.hpp"
#include "../simd/batch.hpp"
#include "input.hpp"
#include "list.hpp"
#include "map.hpp"
#include "scalar.hpp"

/**
 * @file
 * The generic node over a run-time number of terms: the K models of a merge
 * (and, for some methods, a second list such as their Fishers) with K
 * weights. What it computes per element is a functor over a *term view*:
 *
 *     struct max_magnitude_fn
 *     {
 *         template <class Terms>
 *         auto operator()(const Terms& t) const
 *         {
 *             auto best = t[0];
 *             for (std::size_t k = 1; k < t.size(); ++k)
 *             {
 *                 best = simd::select(simd::abs(t[k]) > simd::abs(best), t[k], best);
 *             }
 *             return best;
 *         }
 *     };
 *
 * The view gives, for the batch being computed, `t[k]` (term k of the first
 * list), `t.template at<L>(k)` (term k of list L), `t.weight(k)` (weight k,
 * broadcast), `t.weight_total()` (the weights' sum, in double) and
 * `t.size()`; `Terms::batch` is the register type (`simd::batch`, or float in
 * the scalar twin). The binder behind it owns what every such node needs
 * once: the terms' per-chunk state in arena memory, the weights, a loop
 * compiled per element type when all inputs of a list share one dtype, and
 * one load of a base shared by task vectors.
 */

namespace xmerge
{
    /**
     * Per element, f(terms) over K terms of one or more lists of equal length
     * and K weights (numbers or scalar expressions; none when the functor
     * reads none). f may name what it computes for error messages with a
     * member `static constexpr const char* what` ("a merge" otherwise).
     */
    template <class F, class W, class... E>
    class list_node : public tensor_expression<list_node<F, W, E...>>
    {
        static_assert(sizeof...(E) > 0, "a list node needs at least one list of terms");
        static_assert((is_tensor_expression_v<E> && ...), "list terms must be tensor expressions");

    public:
        list_node(F f, std::vector<W> weights, expression_list<E>... lists);

        const shape_type& shape() const noexcept { return std::get<0>(m_lists)[0].shape(); }
        std::string name() const { return std::get<0>(m_lists)[0].name(); }
        std::size_t size() const noexcept { return std::get<0>(m_lists).size(); }
        const F& function() const noexcept { return m_f; }
        const std::tuple<expression_list<E>...>& lists() const noexcept { return m_lists; }
        /// The first list.
        const auto& terms() const noexcept { return std::get<0>(m_lists); }
        const std::vector<W>& weights() const noexcept { return m_weights; }

        template <class G>
        void for_each_input(G&& g) const;

    private:
        F m_f;
        std::tuple<expression_list<E>...> m_lists;
        std::vector<W> m_weights;
    };

    /// Per element f(terms) over the terms of one or more lists of equal length, without weights.
    template <class F, class E, class... More>
    auto combine(F f, const expression_list<E>& terms, const expression_list<More>&... more);

    /// Per element f(terms) with one finite number per term as its weights.
    template <class F, class E, class... More>
    auto combine_weighted(F f, const std::vector<double>& weights, const expression_list<E>& terms, const expression_list<More>&... more);

    /// Per element f(terms) with scalar expressions (statistics) as the weights.
    template <class F, class S, class E, class... More>
    auto combine_weighted(F f, const expression_list<S>& weights, const expression_list<E>& terms, const expression_list<More>&... more);

    namespace detail
    {
        template <class F, class = void>
        struct what_of
        {
            static constexpr const char* value = "a merge";
        };

        template <class F>
        struct what_of<F, std::void_t<decltype(F::what)>>
        {
            static constexpr const char* value = F::what;
        };

        /// Numbers as scalar_constant weights.
        inline std::vector<scalar_constant> constant_weights(const std::vector<double>& weights);

        /** @name Term access for one batch: term k of a list at element i */
        ///@{
        template <class B, class Bound>
        struct bound_term_access
        {
            const Bound* terms;
            std::size_t i;

            XMERGE_FORCE_INLINE B operator()(std::size_t k) const noexcept { return terms[k].template packet<B>(i); }
        };

        /// Inputs of one element type T: loads compiled for T, no dispatch per term.
        template <class B, class T>
        struct typed_input_access
        {
            const bound_input* terms;
            std::size_t i;

            XMERGE_FORCE_INLINE B operator()(std::size_t k) const noexcept { return load_as_float<B>(static_cast<const T*>(terms[k].data) + i); }
        };

        /// x_k - base with the base read once per batch.
        template <class B, class X>
        struct shared_base_access
        {
            X x;
            B base;

            XMERGE_FORCE_INLINE B operator()(std::size_t k) const noexcept { return x(k) - base; }
        };

        /// x_k - base_k.
        template <class B, class X>
        struct own_base_access
        {
            X x;
            const bound_input* bases;
            std::size_t i;

            XMERGE_FORCE_INLINE B operator()(std::size_t k) const noexcept { return x(k) - bases[k].template packet<B>(i); }
        };
        ///@}

        /** @name A list bound to one chunk
         *  `visit<B, Typed>(i, g)` calls g with the access to the list's terms at
         *  element i that suits the chunk (typed when Typed and the dtypes are
         *  uniform).
         */
        ///@{
        template <class Bound>
        struct bound_terms
        {
            const Bound* terms;

            template <class B, bool Typed, class G>
            XMERGE_FORCE_INLINE B visit(std::size_t i, G&& g) const noexcept
            {
                return g(bound_term_access<B, Bound>{terms, i});
            }
        };

        struct bound_inputs
        {
            const bound_input* terms;
            bool uniform;  // every term has terms[0]'s dtype

            template <class B, bool Typed, class G>
            XMERGE_FORCE_INLINE B visit(std::size_t i, G&& g) const noexcept
            {
                if constexpr (Typed)
                {
                    if (uniform)
                    {
                        return with_element_type(terms[0].type, [&](auto tag) XMERGE_LAMBDA_INLINE
                                                 { return g(typed_input_access<B, std::remove_const_t<std::remove_pointer_t<decltype(tag)>>>{terms, i}); });
                    }
                }
                return g(bound_term_access<B, bound_input>{terms, i});
            }
        };

        template <class XBound>
        struct bound_task_vectors
        {
            XBound models;
            const bound_input* bases;
            bool shared_base;

            template <class B, bool Typed, class G>
            XMERGE_FORCE_INLINE B visit(std::size_t i, G&& g) const noexcept
            {
                if (shared_base)
                {
                    return models.template visit<B, Typed>(i, [&](const auto& x) XMERGE_LAMBDA_INLINE
                                                           { return g(shared_base_access<B, std::decay_t<decltype(x)>>{x, bases[0].template packet<B>(i)}); });
                }
                // Bases of their own are rare: one generic loop for them.
                return models.template visit<B, false>(i, [&](const auto& x) XMERGE_LAMBDA_INLINE
                                                       { return g(own_base_access<B, std::decay_t<decltype(x)>>{x, bases, i}); });
            }
        };
        ///@}

        /**
         * How a list of E binds to a chunk: its terms' bound values in arena
         * memory. Specialised for inputs (a loop typed per dtype) and for task
         * vectors of one base (the base read once per batch).
         */
        template <class E, class Enable = void>
        class list_binder
        {
        public:
            explicit list_binder(const expression_list<E>& list) : m_terms(list) {}
            std::size_t collect(statistics_registry& r) { return m_terms.collect(r); }
            auto bind(std::size_t begin, std::size_t n, arena& a) const
            {
                const auto* terms = m_terms.bind(begin, n, a);
                return bound_terms<std::remove_const_t<std::remove_pointer_t<decltype(terms)>>>{terms};
            }

        private:
            list_evaluator<E> m_terms;
        };

        template <>
        class list_binder<input_node>
        {
        public:
            explicit list_binder(const expression_list<input_node>& list) : m_terms(list) {}
            std::size_t collect(statistics_registry&) { return 0; }
            bound_inputs bind(std::size_t begin, std::size_t n, arena& a) const
            {
                const bound_input* terms = m_terms.bind(begin, n, a);
                bool uniform = true;
                for (std::size_t k = 1; k < m_terms.size(); ++k)
                {
                    uniform = uniform && terms[k].type == terms[0].type;
                }
                return {terms, uniform};
            }

        private:
            list_evaluator<input_node> m_terms;
        };

        template <class X>
        class list_binder<map_node<minus_fn, X, input_node>, std::enable_if_t<is_tensor_expression_v<X>>>
        {
        public:
            explicit list_binder(const expression_list<map_node<minus_fn, X, input_node>>& list);
            std::size_t collect(statistics_registry& r) { return m_models.collect(r); }
            auto bind(std::size_t begin, std::size_t n, arena& a) const
            {
                auto models = m_models.bind(begin, n, a);
                auto* bases = a.allocate<bound_input>(m_bases.size());
                for (std::size_t k = 0; k < m_bases.size(); ++k)
                {
                    new (bases + k) bound_input(m_bases[k].bind(begin, n, a));
                }
                return bound_task_vectors<decltype(models)>{models, bases, m_bases.size() == 1};
            }

        private:
            static expression_list<X> models_of(const expression_list<map_node<minus_fn, X, input_node>>& list);
            static expression_list<input_node> bases_of(const expression_list<map_node<minus_fn, X, input_node>>& list);

            list_binder<X> m_models;
            list_evaluator<input_node> m_bases;  // one when every term has the same base memory
        };

        /// The terms of one batch as a list node's functor sees them.
        template <class B, class... Access>
        class term_view
        {
        public:
            using batch = B;

            XMERGE_FORCE_INLINE term_view(const float* weights, double weight_total, std::size_t count, const Access&... access) noexcept
                : m_weights(weights), m_weight_total(weight_total), m_count(count), m_access(access...)
            {
            }

            std::size_t size() const noexcept { return m_count; }
            /// Term k of the first list.
            XMERGE_FORCE_INLINE B operator[](std::size_t k) const noexcept { return std::get<0>(m_access)(k); }
            /// Term k of list L.
            template <std::size_t L>
            XMERGE_FORCE_INLINE B at(std::size_t k) const noexcept
            {
                return std::get<L>(m_access)(k);
            }
            /// Weight k in every lane.
            XMERGE_FORCE_INLINE B weight(std::size_t k) const noexcept { return simd::batch_traits<B>::broadcast(m_weights[k]); }
            /// Weight k as a number.
            float weight_value(std::size_t k) const noexcept { return m_weights[k]; }
            /// The sum of the weights' values, in double, in term order.
            double weight_total() const noexcept { return m_weight_total; }

        private:
            const float* m_weights;
            double m_weight_total;
            std::size_t m_count;
            std::tuple<Access...> m_access;
        };

        template <class F, class... Lists>
        struct bound_list_node
        {
            const F* f;
            const float* weights;
            double weight_total;
            std::size_t count;
            std::tuple<Lists...> lists;

            template <class B>
            XMERGE_FORCE_INLINE B packet(std::size_t i) const noexcept
            {
                return visit_from<B, 0>(i);
            }

            // Visits the lists one after another, then calls f with every list's access.
            template <class B, std::size_t L, class... Access>
            XMERGE_FORCE_INLINE B visit_from(std::size_t i, const Access&... access) const noexcept
            {
                if constexpr (L == sizeof...(Lists))
                {
                    return (*f)(term_view<B, Access...>(weights, weight_total, count, access...));
                }
                else
                {
                    // Only the first list gets loops typed per dtype: typing every list would
                    // compile the functor once per combination of dtypes.
                    return std::get<L>(lists).template visit<B, L == 0>(i, [&](const auto& next) XMERGE_LAMBDA_INLINE
                                                                { return this->template visit_from<B, L + 1>(i, access..., next); });
                }
            }
        };

        template <class F, class W, class... E>
        class evaluator<list_node<F, W, E...>>
        {
        public:
            explicit evaluator(const list_node<F, W, E...>& node) : evaluator(node, std::index_sequence_for<E...>{}) {}

            std::size_t collect(statistics_registry& r);
            auto bind(std::size_t begin, std::size_t n, arena& a) const { return bind(begin, n, a, std::index_sequence_for<E...>{}); }

        private:
            template <std::size_t... I>
            evaluator(const list_node<F, W, E...>& node, std::index_sequence<I...>);

            template <std::size_t... I>
            auto bind(std::size_t begin, std::size_t n, arena& a, std::index_sequence<I...>) const;

            F m_f;
            std::tuple<list_binder<E>...> m_lists;
            list_evaluator<W> m_weights;
            std::size_t m_count;
        };
    }

    /********************
     * Implementation   *
     ********************/

    template <class F, class W, class... E>
    inline list_node<F, W, E...>::list_node(F f, std::vector<W> weights, expression_list<E>... lists)
        : m_f(std::move(f)), m_lists(std::move(lists)...), m_weights(std::move(weights))
    {
        const auto& first = std::get<0>(m_lists);
        detail::check_models(first, detail::what_of<F>::value);
        std::apply(
            [&](const auto&... list)
            {
                const auto check = [&](const auto& l)
                {
                    if (l.size() != first.size())
                    {
                        throw parameter_error(first[0].name(), "models", "expected " + std::to_string(first.size()) + " terms in every list (one per model), got "
                                                                             + std::to_string(l.size()));
                    }
                    for (std::size_t k = 0; k < l.size(); ++k)
                    {
                        if (l[k].shape() != first[0].shape())
                        {
                            throw shape_error(l[k].name(), "", "term " + std::to_string(k) + " has shape " + xmerge::to_string(l[k].shape()) + " but model 0 ('"
                                                                   + first[0].name() + "') has shape " + xmerge::to_string(first[0].shape()));
                        }
                    }
                };
                (check(list), ...);
            },
            m_lists);
        if (!m_weights.empty() && m_weights.size() != first.size())
        {
            throw parameter_error(first[0].name(), "weights", "expected " + std::to_string(first.size()) + " values (one per model), got "
                                                                  + std::to_string(m_weights.size()));
        }
    }

    template <class F, class W, class... E>
    template <class G>
    inline void list_node<F, W, E...>::for_each_input(G&& g) const
    {
        std::apply([&](const auto&... list) { (list.for_each_input(g), ...); }, m_lists);
        for (const auto& w : m_weights)
        {
            w.for_each_input(g);
        }
    }

    template <class F, class E, class... More>
    inline auto combine(F f, const expression_list<E>& terms, const expression_list<More>&... more)
    {
        return list_node<F, scalar_constant, E, More...>(std::move(f), {}, terms, more...);
    }

    template <class F, class E, class... More>
    inline auto combine_weighted(F f, const std::vector<double>& weights, const expression_list<E>& terms, const expression_list<More>&... more)
    {
        if (terms.empty())
        {
            throw parameter_error("", "models", std::string(detail::what_of<F>::value) + " needs at least one model");
        }
        detail::check_weights(terms[0].name(), terms.size(), weights);
        return list_node<F, scalar_constant, E, More...>(std::move(f), detail::constant_weights(weights), terms, more...);
    }

    template <class F, class S, class E, class... More>
    inline auto combine_weighted(F f, const expression_list<S>& weights, const expression_list<E>& terms, const expression_list<More>&... more)
    {
        return list_node<F, S, E, More...>(std::move(f), weights.items(), terms, more...);
    }

    namespace detail
    {
        inline std::vector<scalar_constant> constant_weights(const std::vector<double>& weights)
        {
            std::vector<scalar_constant> w;
            w.reserve(weights.size());
            for (double x : weights)
            {
                w.emplace_back(x);
            }
            return w;
        }

        template <class X>
        inline list_binder<map_node<minus_fn, X, input_node>, std::enable_if_t<is_tensor_expression_v<X>>>::list_binder(
            const expression_list<map_node<minus_fn, X, input_node>>& list)
            : m_models(models_of(list)), m_bases(bases_of(list))
        {
        }

        template <class X>
        inline expression_list<X> list_binder<map_node<minus_fn, X, input_node>, std::enable_if_t<is_tensor_expression_v<X>>>::models_of(
            const expression_list<map_node<minus_fn, X, input_node>>& list)
        {
            expression_list<X> models;
            for (const auto& d : list)
            {
                models.push_back(std::get<0>(d.args()));
            }
            return models;
        }

        template <class X>
        inline expression_list<input_node> list_binder<map_node<minus_fn, X, input_node>, std::enable_if_t<is_tensor_expression_v<X>>>::bases_of(
            const expression_list<map_node<minus_fn, X, input_node>>& list)
        {
            // One base tensor for every term (the usual task_vectors(models, base)) is bound once.
            expression_list<input_node> bases;
            const auto& first = std::get<1>(list[0].args()).tensor();
            bool shared = true;
            for (const auto& d : list)
            {
                const auto& b = std::get<1>(d.args()).tensor();
                shared = shared && b.data() == first.data() && b.type() == first.type();
                bases.push_back(std::get<1>(d.args()));
            }
            return shared ? expression_list<input_node>(std::vector<input_node>{bases[0]}) : bases;
        }

        template <class F, class W, class... E>
        template <std::size_t... I>
        inline evaluator<list_node<F, W, E...>>::evaluator(const list_node<F, W, E...>& node, std::index_sequence<I...>)
            : m_f(node.function()), m_lists(std::get<I>(node.lists())...), m_weights(expression_list<W>(node.weights())), m_count(node.size())
        {
        }

        template <class F, class W, class... E>
        inline std::size_t evaluator<list_node<F, W, E...>>::collect(statistics_registry& r)
        {
            std::size_t level = m_weights.collect(r);
            std::apply([&](auto&... list) { ((level = std::max(level, list.collect(r))), ...); }, m_lists);
            return level;
        }

        template <class F, class W, class... E>
        template <std::size_t... I>
        inline auto evaluator<list_node<F, W, E...>>::bind(std::size_t begin, std::size_t n, arena& a, std::index_sequence<I...>) const
        {
            float* weights = nullptr;
            double total = 0.0;
            if (m_weights.size() != 0)
            {
                weights = a.allocate<float>(m_weights.size());
                for (std::size_t k = 0; k < m_weights.size(); ++k)
                {
                    const double w = m_weights[k].value();
                    weights[k] = static_cast<float>(w);
                    total += w;
                }
            }
            using bound = bound_list_node<F, decltype(std::get<I>(m_lists).bind(begin, n, a))...>;
            // Braced initialization binds the lists in order.
            return bound{&m_f, weights, total, m_count, {std::get<I>(m_lists).bind(begin, n, a)...}};
        }
    }
}

#endif
