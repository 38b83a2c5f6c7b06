/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_KARCHER_HPP
#define XMERGE_METHODS_KARCHER_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../ops/any.hpp"
#include "../ops/gram.hpp"
#include "../ops/list.hpp"
#include "options.hpp"
#include "registry.hpp"

namespace xmerge
{
    /**
     * Karcher mean (mergekit `karcher`): the Riemannian (geodesic) mean of the
     * inputs normalized to the unit sphere, with uniform weights, found by
     * Riemannian gradient steps (at most max_iter, until the step is below
     * tol), then scaled by the mean norm. Inputs with a norm at or below tol
     * do not steer the direction but count in the norm.
     *
     * Every iterate lies in the span of the inputs, so the iteration runs on
     * K coefficients with the Gram matrix standing in for dot products:
     * one statistics pass and one element-wise pass whatever max_iter is.
     */
    template <class E>
    any_expression karcher(const expression_list<E>& points, std::size_t max_iter = 10, double tol = 1e-5);

    /// The coefficients of the Karcher mean in the basis of the inputs.
    inline std::vector<double> karcher_coefficients(const gram_matrix& g, std::size_t max_iter, double tol);

    namespace detail
    {
        struct karcher_parameters
        {
            std::size_t max_iter = 10;
            double tol = 1e-5;
        };
    }

    /// `karcher` for the method registry (a base model, if given, is one more point).
    template <class = void>
    method_info karcher_method();

    /********************
     * Implementation   *
     ********************/

    inline std::vector<double> karcher_coefficients(const gram_matrix& g, std::size_t max_iter, double tol)
    {
        const std::size_t k = g.k;
        std::vector<double> norms(k);
        std::vector<std::size_t> valid;
        for (std::size_t i = 0; i < k; ++i)
        {
            norms[i] = std::sqrt(std::max(g(i, i), 0.0));
            if (norms[i] > tol)
            {
                valid.push_back(i);
            }
        }
        std::vector<double> c(k, 0.0);
        if (valid.empty())
        {
            return c;
        }
        const double alpha = 1.0 / static_cast<double>(valid.size());
        const auto norm_of = [&](const std::vector<double>& v) { return std::sqrt(std::max(g.inner(v, v), 0.0)); };

        for (std::size_t i : valid)
        {
            c[i] = alpha / norms[i];
        }
        const double start = norm_of(c);
        if (start < tol)
        {
            std::fill(c.begin(), c.end(), 0.0);
            c[valid.front()] = 1.0 / norms[valid.front()];
        }
        else
        {
            for (double& x : c)
            {
                x /= start;
            }
        }

        for (std::size_t iter = 0; iter < max_iter; ++iter)
        {
            std::vector<double> tangent(k, 0.0);
            for (std::size_t i : valid)
            {
                double dot = 0.0;  // <mean, u_i>
                for (std::size_t j = 0; j < k; ++j)
                {
                    dot += c[j] * g(j, i);
                }
                dot = std::clamp(dot / norms[i], -1.0, 1.0);
                const double theta = std::acos(dot);
                if (theta < tol)
                {
                    continue;
                }
                const double f = alpha * theta / std::sin(theta);
                tangent[i] += f / norms[i];
                for (std::size_t j = 0; j < k; ++j)
                {
                    tangent[j] -= f * dot * c[j];
                }
            }
            const double step = norm_of(tangent);
            if (step < tol)
            {
                break;
            }
            for (std::size_t j = 0; j < k; ++j)
            {
                c[j] = std::cos(step) * c[j] + std::sin(step) * tangent[j] / step;
            }
            const double length = norm_of(c);
            if (length > tol)
            {
                for (double& x : c)
                {
                    x /= length;
                }
            }
        }

        double scale = 0.0;  // uniform weights over every input, zero norms included
        for (std::size_t i = 0; i < k; ++i)
        {
            scale += norms[i] / static_cast<double>(k);
        }
        for (double& x : c)
        {
            x *= scale;
        }
        return c;
    }

    template <class E>
    any_expression karcher(const expression_list<E>& points, std::size_t max_iter, double tol)
    {
        if (points.empty())
        {
            throw parameter_error("", "models", "karcher needs at least one model");
        }
        if (!(tol > 0.0))
        {
            throw parameter_error(points[0].name(), "tol", "must be positive, got " + std::to_string(tol));
        }
        if (points.size() == 1)
        {
            return points[0];
        }
        return xmerge::gram_combination(points, [max_iter, tol](const gram_matrix& g) { return xmerge::karcher_coefficients(g, max_iter, tol); });
    }

    template <class T>
    method_info karcher_method()
    {
        using P = detail::karcher_parameters;
        const auto options = option_set<P>()
                                 .global(&P::max_iter, "max_iter", "maximum number of gradient steps")
                                 .global(&P::tol, "tol", "convergence and zero-norm tolerance");
        return xmerge::make_method("karcher", "Riemannian mean of the models on the hypersphere", false, options,
                           [](const method_inputs& in, const P& p) -> any_expression
                           {
                               expression_list<input_node> points;
                               if (in.base)
                               {
                                   points.push_back(*in.base);
                               }
                               for (const auto& x : in.models)
                               {
                                   points.push_back(x);
                               }
                               return xmerge::karcher(points, p.max_iter, p.tol);
                           });
    }
}

#endif
