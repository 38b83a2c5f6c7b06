#ifndef XMERGE_TEST_LINALG_SUPPORT_HPP
#define XMERGE_TEST_LINALG_SUPPORT_HPP

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <xmerge/linalg.hpp>

#include "test_support.hpp"

namespace xmerge_test
{
    /// rows x cols normal values with standard deviation `scale`, row-major.
    inline std::vector<float> normal_matrix(std::size_t rows, std::size_t cols, std::uint32_t seed, float scale = 1.0f)
    {
        std::mt19937 gen(seed);
        std::normal_distribution<float> dist(0.0f, scale);
        std::vector<float> v(rows * cols);
        for (auto& x : v)
        {
            x = dist(gen);
        }
        return v;
    }

    /// C = A B in double, A [m, k], B [k, n] row-major.
    template <class A, class B>
    std::vector<double> matmul(const std::vector<A>& a, const std::vector<B>& b, std::size_t m, std::size_t k, std::size_t n)
    {
        std::vector<double> c(m * n, 0.0);
        for (std::size_t i = 0; i < m; ++i)
        {
            for (std::size_t l = 0; l < k; ++l)
            {
                const double x = a[i * k + l];
                for (std::size_t j = 0; j < n; ++j)
                {
                    c[i * n + j] += x * static_cast<double>(b[l * n + j]);
                }
            }
        }
        return c;
    }

    /// The transpose of a rows x cols row-major matrix.
    template <class T>
    std::vector<T> transpose(const std::vector<T>& a, std::size_t rows, std::size_t cols)
    {
        std::vector<T> t(a.size());
        for (std::size_t i = 0; i < rows; ++i)
        {
            for (std::size_t j = 0; j < cols; ++j)
            {
                t[j * rows + i] = a[i * cols + j];
            }
        }
        return t;
    }

    /// Solves S X = B (S n x n, B n x r) by Gaussian elimination with partial pivoting, in double.
    inline std::vector<double> solve(std::vector<double> s, std::vector<double> b, std::size_t n, std::size_t r)
    {
        for (std::size_t c = 0; c < n; ++c)
        {
            std::size_t p = c;
            for (std::size_t i = c + 1; i < n; ++i)
            {
                if (std::fabs(s[i * n + c]) > std::fabs(s[p * n + c]))
                {
                    p = i;
                }
            }
            for (std::size_t j = 0; j < n; ++j)
            {
                std::swap(s[c * n + j], s[p * n + j]);
            }
            for (std::size_t j = 0; j < r; ++j)
            {
                std::swap(b[c * r + j], b[p * r + j]);
            }
            for (std::size_t i = c + 1; i < n; ++i)
            {
                const double f = s[i * n + c] / s[c * n + c];
                for (std::size_t j = c; j < n; ++j)
                {
                    s[i * n + j] -= f * s[c * n + j];
                }
                for (std::size_t j = 0; j < r; ++j)
                {
                    b[i * r + j] -= f * b[c * r + j];
                }
            }
        }
        std::vector<double> x(n * r);
        for (std::size_t i = n; i-- > 0;)
        {
            for (std::size_t j = 0; j < r; ++j)
            {
                double v = b[i * r + j];
                for (std::size_t l = i + 1; l < n; ++l)
                {
                    v -= s[i * n + l] * x[l * r + j];
                }
                x[i * r + j] = v / s[i * n + i];
            }
        }
        return x;
    }

    /// Frobenius norm.
    template <class T>
    double frobenius(const std::vector<T>& a)
    {
        double s = 0.0;
        for (auto v : a)
        {
            s += static_cast<double>(v) * static_cast<double>(v);
        }
        return std::sqrt(s);
    }

    /// A dense_matrix<T> from a row-major vector.
    template <class T, class U>
    xmerge::dense_matrix<T> to_matrix(const std::vector<U>& v, std::size_t rows, std::size_t cols)
    {
        xmerge::dense_matrix<T> m = xmerge::dense_matrix<T>::from_shape({rows, cols});
        for (std::size_t i = 0; i < v.size(); ++i)
        {
            m.data()[i] = static_cast<T>(v[i]);
        }
        return m;
    }

    /// Singular values of a row-major matrix, in double.
    template <class U>
    std::vector<double> singular_values(const std::vector<U>& v, std::size_t rows, std::size_t cols)
    {
        const auto f = xmerge::svd<double>(to_matrix<double>(v, rows, cols));
        return std::vector<double>(f.s.begin(), f.s.end());
    }
}

#endif
