/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_CORE_TENSOR_REF_HPP
#define XMERGE_CORE_TENSOR_REF_HPP

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "dtype.hpp"
#include "error.hpp"
#include "xtensor_compat.hpp"

namespace xmerge
{
    /// Shape of a tensor (row-major extents).
    using shape_type = xt::svector<std::size_t, 4>;

    /// Number of elements of a shape (1 for a scalar shape).
    inline std::size_t numel(const shape_type& shape) noexcept;

    /// "[3, 4]" style text for error messages.
    inline std::string to_string(const shape_type& shape);

    /**
     * Non-owning reference to contiguous, row-major parameter memory.
     *
     * Holds a pointer, an element type, a shape and an optional name used in
     * error messages. `Pointer` is `void*` for writable memory (tensor_ref) or
     * `const void*` for read-only memory (const_tensor_ref); a tensor_ref
     * converts to a const_tensor_ref.
     */
    template <class Pointer>
    class basic_tensor_ref
    {
    public:
        using pointer = Pointer;
        using byte_pointer = std::conditional_t<std::is_const<std::remove_pointer_t<Pointer>>::value, const std::uint8_t*, std::uint8_t*>;

        basic_tensor_ref() = default;
        basic_tensor_ref(pointer data, dtype type, shape_type shape, std::string name = {});

        /// Converts a writable reference into a read-only one.
        template <class P, class = std::enable_if_t<!std::is_same<P, Pointer>::value && std::is_convertible<P, Pointer>::value>>
        basic_tensor_ref(const basic_tensor_ref<P>& other);

        pointer data() const noexcept { return m_data; }
        dtype type() const noexcept { return m_type; }
        const shape_type& shape() const noexcept { return m_shape; }
        std::size_t dimension() const noexcept { return m_shape.size(); }
        std::size_t size() const noexcept { return m_size; }
        std::size_t bytes() const noexcept { return m_size * size_of(m_type); }
        const std::string& name() const noexcept { return m_name; }

        /// Address of the first byte after the tensor.
        byte_pointer end_address() const noexcept { return static_cast<byte_pointer>(m_data) + bytes(); }

        /// Typed pointer; throws layout_error when T is not the element type.
        template <class T>
        auto typed_data() const -> std::conditional_t<std::is_const<std::remove_pointer_t<Pointer>>::value, const T*, T*>;

        /// Same memory, new name.
        basic_tensor_ref with_name(std::string name) const;
        /// Same memory, new shape with the same number of elements.
        basic_tensor_ref reshaped(shape_type shape) const;

    private:
        pointer m_data = nullptr;
        dtype m_type = dtype::float32;
        shape_type m_shape = {0};
        std::size_t m_size = 0;
        std::string m_name;
    };

    using tensor_ref = basic_tensor_ref<void*>;
    using const_tensor_ref = basic_tensor_ref<const void*>;

    /// True when the byte ranges of two references share at least one byte.
    template <class P, class Q>
    bool overlaps(const basic_tensor_ref<P>& a, const basic_tensor_ref<Q>& b) noexcept;

    /// True when both references start at the same address (in-place use).
    template <class P, class Q>
    bool same_memory(const basic_tensor_ref<P>& a, const basic_tensor_ref<Q>& b) noexcept;

    /** @name Adaptors
     *  as_tensor() builds a tensor reference from raw pointers, std::vector and
     *  contiguous row-major xtensor containers, adaptors and views.
     *  Const sources give const_tensor_ref, mutable ones tensor_ref.
     */
    ///@{
    template <class T, class = std::enable_if_t<has_dtype_v<std::remove_const_t<T>>>>
    auto as_tensor(T* data, shape_type shape, std::string_view name = {});

    template <class T, class A, class = std::enable_if_t<has_dtype_v<T>>>
    tensor_ref as_tensor(std::vector<T, A>& v, std::string_view name = {});
    template <class T, class A, class = std::enable_if_t<has_dtype_v<T>>>
    const_tensor_ref as_tensor(const std::vector<T, A>& v, std::string_view name = {});
    template <class T, class A, class = std::enable_if_t<has_dtype_v<T>>>
    tensor_ref as_tensor(std::vector<T, A>& v, shape_type shape, std::string_view name = {});
    template <class T, class A, class = std::enable_if_t<has_dtype_v<T>>>
    const_tensor_ref as_tensor(const std::vector<T, A>& v, shape_type shape, std::string_view name = {});

    template <class E, class = std::enable_if_t<has_dtype_v<std::decay_t<typename std::decay_t<E>::value_type>>>,
              class = decltype(std::declval<E&>().data(), std::declval<E&>().strides(), std::declval<E&>().shape())>
    auto as_tensor(E& e, std::string_view name = {});

    inline tensor_ref as_tensor(const tensor_ref& r) { return r; }
    inline const_tensor_ref as_tensor(const const_tensor_ref& r) { return r; }

    /// A reference into a temporary vector would dangle: refused at compile time.
    template <class T, class A, class... Rest>
    void as_tensor(std::vector<T, A>&&, Rest&&...) = delete;
    ///@}

    /********************
     * Implementation   *
     ********************/

    inline std::size_t numel(const shape_type& shape) noexcept
    {
        std::size_t n = 1;
        for (std::size_t s : shape)
        {
            n *= s;
        }
        return n;
    }

    inline std::string to_string(const shape_type& shape)
    {
        std::string s = "[";
        for (std::size_t i = 0; i < shape.size(); ++i)
        {
            s += (i ? ", " : "") + std::to_string(shape[i]);
        }
        return s + "]";
    }

    template <class Pointer>
    inline basic_tensor_ref<Pointer>::basic_tensor_ref(pointer data, dtype type, shape_type shape, std::string name)
        : m_data(data)
        , m_type(type)
        , m_shape(std::move(shape))
        , m_size(xmerge::numel(m_shape))
        , m_name(std::move(name))
    {
        if (m_data == nullptr && m_size != 0)
        {
            throw layout_error(m_name, "", "null data pointer for a tensor of shape " + xmerge::to_string(m_shape));
        }
    }

    template <class Pointer>
    template <class P, class>
    inline basic_tensor_ref<Pointer>::basic_tensor_ref(const basic_tensor_ref<P>& other)
        : m_data(other.data())
        , m_type(other.type())
        , m_shape(other.shape())
        , m_size(other.size())
        , m_name(other.name())
    {
    }

    template <class Pointer>
    template <class T>
    inline auto basic_tensor_ref<Pointer>::typed_data() const -> std::conditional_t<std::is_const<std::remove_pointer_t<Pointer>>::value, const T*, T*>
    {
        if (dtype_of<T>::value != m_type)
        {
            throw layout_error(m_name, "", std::string("element type is ") + name_of(m_type) + ", not " + name_of(dtype_of<T>::value));
        }
        using result = std::conditional_t<std::is_const<std::remove_pointer_t<Pointer>>::value, const T*, T*>;
        return static_cast<result>(m_data);
    }

    template <class Pointer>
    inline basic_tensor_ref<Pointer> basic_tensor_ref<Pointer>::with_name(std::string name) const
    {
        basic_tensor_ref r = *this;
        r.m_name = std::move(name);
        return r;
    }

    template <class Pointer>
    inline basic_tensor_ref<Pointer> basic_tensor_ref<Pointer>::reshaped(shape_type shape) const
    {
        if (xmerge::numel(shape) != m_size)
        {
            throw shape_error(m_name, "", "cannot reshape " + xmerge::to_string(m_shape) + " to " + xmerge::to_string(shape));
        }
        return basic_tensor_ref(m_data, m_type, std::move(shape), m_name);
    }

    template <class P, class Q>
    inline bool overlaps(const basic_tensor_ref<P>& a, const basic_tensor_ref<Q>& b) noexcept
    {
        if (a.bytes() == 0 || b.bytes() == 0)
        {
            return false;
        }
        const auto a0 = reinterpret_cast<std::uintptr_t>(a.data());
        const auto b0 = reinterpret_cast<std::uintptr_t>(b.data());
        return a0 < b0 + b.bytes() && b0 < a0 + a.bytes();
    }

    template <class P, class Q>
    inline bool same_memory(const basic_tensor_ref<P>& a, const basic_tensor_ref<Q>& b) noexcept
    {
        return static_cast<const void*>(a.data()) == static_cast<const void*>(b.data());
    }

    template <class T, class>
    inline auto as_tensor(T* data, shape_type shape, std::string_view name)
    {
        using element = std::remove_const_t<T>;
        using result = std::conditional_t<std::is_const<T>::value, const_tensor_ref, tensor_ref>;
        return result(data, dtype_of<element>::value, std::move(shape), std::string(name));
    }

    template <class T, class A, class>
    inline tensor_ref as_tensor(std::vector<T, A>& v, std::string_view name)
    {
        return tensor_ref(v.data(), dtype_of<T>::value, {v.size()}, std::string(name));
    }

    template <class T, class A, class>
    inline const_tensor_ref as_tensor(const std::vector<T, A>& v, std::string_view name)
    {
        return const_tensor_ref(v.data(), dtype_of<T>::value, {v.size()}, std::string(name));
    }

    namespace detail
    {
        inline void check_vector_shape(std::size_t size, const shape_type& shape, const std::string& name)
        {
            if (xmerge::numel(shape) != size)
            {
                throw shape_error(name, "", "shape " + xmerge::to_string(shape) + " needs " + std::to_string(xmerge::numel(shape))
                                                + " elements but the vector holds " + std::to_string(size));
            }
        }

        template <class Shape, class Strides>
        bool is_row_major_contiguous(const Shape& shape, const Strides& strides)
        {
            std::ptrdiff_t expected = 1;
            for (std::size_t i = shape.size(); i-- > 0;)
            {
                if (shape[i] != 1 && static_cast<std::ptrdiff_t>(strides[i]) != expected)
                {
                    return false;
                }
                expected *= static_cast<std::ptrdiff_t>(shape[i]);
            }
            return true;
        }

        template <class E>
        auto data_offset(const E& e, int) -> decltype(e.data_offset())
        {
            return e.data_offset();
        }

        template <class E>
        std::size_t data_offset(const E&, long)
        {
            return 0;
        }
    }

    template <class T, class A, class>
    inline tensor_ref as_tensor(std::vector<T, A>& v, shape_type shape, std::string_view name)
    {
        detail::check_vector_shape(v.size(), shape, std::string(name));
        return tensor_ref(v.data(), dtype_of<T>::value, std::move(shape), std::string(name));
    }

    template <class T, class A, class>
    inline const_tensor_ref as_tensor(const std::vector<T, A>& v, shape_type shape, std::string_view name)
    {
        detail::check_vector_shape(v.size(), shape, std::string(name));
        return const_tensor_ref(v.data(), dtype_of<T>::value, std::move(shape), std::string(name));
    }

    template <class E, class, class>
    inline auto as_tensor(E& e, std::string_view name)
    {
        if (!detail::is_row_major_contiguous(e.shape(), e.strides()))
        {
            throw layout_error(std::string(name), "", "xtensor expression is not contiguous in row-major order; copy it into a row-major container first");
        }
        shape_type shape(e.shape().begin(), e.shape().end());
        auto* data = e.data() + detail::data_offset(e, 0);
        return xmerge::as_tensor(data, std::move(shape), name);
    }
}

#endif
