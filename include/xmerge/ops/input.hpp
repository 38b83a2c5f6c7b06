/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_INPUT_HPP
#define XMERGE_OPS_INPUT_HPP

#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/arena.hpp"
#include "../core/bound.hpp"
#include "../core/expression.hpp"
#include "../core/statistic.hpp"
#include "../core/tensor_ref.hpp"
#include "../simd/convert.hpp"

namespace xmerge
{
    /**
     * Leaf reading parameter memory (float32, bfloat16 or float16); used as
     * `input_node`. (A class template only so that every node is one: see
     * reduce.hpp on names xtensor shares.)
     */
    template <class Ref = const_tensor_ref>
    class basic_input_node : public tensor_expression<basic_input_node<Ref>>
    {
    public:
        explicit basic_input_node(Ref tensor) : m_tensor(std::move(tensor)) {}

        const shape_type& shape() const noexcept { return m_tensor.shape(); }
        std::string name() const { return m_tensor.name(); }
        const Ref& tensor() const noexcept { return m_tensor; }

        template <class F>
        void for_each_input(F&& f) const { f(m_tensor); }

    private:
        Ref m_tensor;
    };

    using input_node = basic_input_node<>;

    /**
     * Leaf reading a lazy xtensor expression (an xt::xfunction over
     * containers, say) element by element in linear order.
     *
     * The expression must be linearly assignable to a row-major result of
     * its shape (no broadcasting of lower-rank operands); evaluation throws
     * layout_error otherwise. Containers go through input_node instead, which
     * reads their memory directly.
     */
    template <class CT>
    class xexpression_node : public tensor_expression<xexpression_node<CT>>
    {
    public:
        template <class E>
        xexpression_node(E&& e, std::string name);

        const shape_type& shape() const noexcept { return m_shape; }
        std::string name() const { return m_name; }
        const std::decay_t<CT>& expression() const noexcept { return m_expr; }

        template <class F>
        void for_each_input(F&&) const {}

    private:
        CT m_expr;
        shape_type m_shape;
        std::string m_name;
    };

    /**
     * A leaf from parameter memory: a tensor_ref / const_tensor_ref, a
     * std::vector, a contiguous xtensor container, adaptor or view, or a lazy
     * xtensor expression. `name` (used in error messages) replaces the
     * reference's own name when given.
     */
    template <class T>
    auto input(T&& x, std::string name = {});

    /// An input reading a temporary vector would dangle: refused at compile time.
    template <class T, class A>
    void input(std::vector<T, A>&&, std::string = {}) = delete;

    namespace detail
    {
        template <>
        class evaluator<input_node>
        {
        public:
            explicit evaluator(const input_node& node) noexcept : m_data(node.tensor().data()), m_type(node.tensor().type()) {}

            std::size_t collect(statistics_registry&) noexcept { return 0; }

            bound_input bind(std::size_t begin, std::size_t n, arena& a) const
            {
                if (n % simd::lanes == 0)
                {
                    return {static_cast<const std::uint8_t*>(m_data) + begin * size_of(m_type), m_type};
                }
                // the last chunk: a zero-padded float32 copy, so whole batches can be read
                float* buf = padded_buffer(n, a);
                simd::load_as_float(m_type, m_data, begin, n, buf);
                return {buf, dtype::float32};
            }

        private:
            const void* m_data;
            dtype m_type;
        };

        template <class CT>
        class evaluator<xexpression_node<CT>>
        {
        public:
            explicit evaluator(const xexpression_node<CT>& node);

            std::size_t collect(statistics_registry&) noexcept { return 0; }

            bound_pointer bind(std::size_t begin, std::size_t n, arena& a) const
            {
                const auto& e = m_node.expression();
                float* buf = padded_buffer(n, a);
                for (std::size_t i = 0; i < n; ++i)
                {
                    buf[i] = static_cast<float>(e.data_element(begin + i));
                }
                return {buf};
            }

        private:
            const xexpression_node<CT>& m_node;
        };

        template <class T>
        struct always_false : std::false_type
        {
        };

        /// A lazy xtensor expression with float values (a leaf read element by element).
        template <class T, class = void>
        struct is_float_xexpression : std::false_type
        {
        };

        template <class T>
        struct is_float_xexpression<T, std::enable_if_t<xt::is_xexpression<T>::value>> : std::is_same<typename T::value_type, float>
        {
        };

        template <class T, class = void>
        struct has_tensor_ref : std::false_type
        {
        };

        template <class T>
        struct has_tensor_ref<T, std::void_t<decltype(xmerge::as_tensor(std::declval<T&>()))>> : std::true_type
        {
        };
    }

    /********************
     * Implementation   *
     ********************/

    template <class CT>
    template <class E>
    inline xexpression_node<CT>::xexpression_node(E&& e, std::string name)
        : m_expr(std::forward<E>(e))
        , m_shape(m_expr.shape().begin(), m_expr.shape().end())
        , m_name(std::move(name))
    {
    }

    namespace detail
    {
        template <class CT>
        inline evaluator<xexpression_node<CT>>::evaluator(const xexpression_node<CT>& node)
            : m_node(node)
        {
            const auto& shape = node.shape();
            shape_type strides(shape.size());
            std::size_t s = 1;
            for (std::size_t i = shape.size(); i-- > 0;)
            {
                strides[i] = shape[i] == 1 ? 0 : s;
                s *= shape[i];
            }
            if (!node.expression().has_linear_assign(strides))
            {
                throw layout_error(node.name(), "", "xtensor expression of shape " + xmerge::to_string(shape)
                                                        + " cannot be read in linear order (broadcast or strided operands); evaluate it into a container first");
            }
        }
    }

    template <class T>
    inline auto input(T&& x, std::string name)
    {
        using U = std::decay_t<T>;
        if constexpr (std::is_same<U, const_tensor_ref>::value || std::is_same<U, tensor_ref>::value)
        {
            const_tensor_ref r = x;
            return input_node(name.empty() ? r : r.with_name(std::move(name)));
        }
        else if constexpr (detail::has_tensor_ref<std::remove_reference_t<T>>::value)
        {
            const_tensor_ref r = xmerge::as_tensor(x, std::move(name));
            return input_node(std::move(r));
        }
        else if constexpr (detail::is_float_xexpression<U>::value)
        {
            return xexpression_node<xt::const_xclosure_t<T>>(std::forward<T>(x), std::move(name));
        }
        else
        {
            static_assert(detail::always_false<U>::value,
                          "xmerge::input: a leaf holds float (float32), xmerge::bfloat16 or xmerge::float16 values: a tensor_ref, a pointer with a shape, "
                          "a std::vector, a contiguous xtensor container, or a lazy xtensor expression of float. Convert other element types "
                          "(double, integers) first, e.g. with xt::cast<float>(x).");
            return input_node(const_tensor_ref());
        }
    }
}

#endif
