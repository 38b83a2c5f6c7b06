/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_CORE_SHARING_HPP
#define XMERGE_CORE_SHARING_HPP

#include <map>
#include <memory>

namespace xmerge::detail
{
    /**
     * Evaluators of shared sub-expressions, by the identity of the shared
     * node, while one evaluation builds its evaluator tree.
     *
     * A sharing_scope is opened around the construction of a root evaluator;
     * the evaluator of a shared node looks up the innermost scope of its
     * thread so that every use of the node in the tree gets the same
     * evaluator (and so the same statistics, computed once). Scopes nest,
     * and nothing outlives construction but the evaluators themselves.
     */
    class sharing_scope
    {
    public:
        sharing_scope() : m_outer(current()) { current() = this; }
        ~sharing_scope() { current() = m_outer; }
        sharing_scope(const sharing_scope&) = delete;
        sharing_scope& operator=(const sharing_scope&) = delete;

        /// The state shared by all uses of `identity` in this scope, made by make() on first use.
        template <class State, class Make>
        static std::shared_ptr<State> get(const void* identity, Make&& make)
        {
            sharing_scope* scope = current();
            if (!scope)
            {
                return make();
            }
            auto& slot = scope->m_states[identity];
            if (!slot)
            {
                slot = make();
            }
            return std::static_pointer_cast<State>(slot);
        }

    private:
        static sharing_scope*& current() noexcept
        {
            static thread_local sharing_scope* scope = nullptr;
            return scope;
        }

        sharing_scope* m_outer;
        std::map<const void*, std::shared_ptr<void>> m_states;
    };
}

#endif
