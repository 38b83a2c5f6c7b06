/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_SLERP_HPP
#define XMERGE_METHODS_SLERP_HPP

#include <cmath>
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
     * Spherical linear interpolation of two flattened tensors (mergekit
     * `slerp`): with theta the angle between v0 and v1,
     *
     *     result = sin((1 - t) theta) / sin(theta) * v0 + sin(t theta) / sin(theta) * v1,
     *
     * and the plain lerp (1 - t) v0 + t v1 when |cos theta| > 0.9995. The raw
     * tensors are interpolated (their norms are not preserved). t = 0 and
     * t = 1 return the endpoints. Cost: one pass for the two norms and the
     * dot product, one element-wise pass.
     */
    template <class A, class B>
    any_expression slerp(const A& v0, const B& v1, double t);

    /// The SLERP coefficients (s0, s1) of two vectors from their Gram matrix.
    inline std::vector<double> slerp_coefficients(const gram_matrix& g, double t);

    namespace detail
    {
        struct slerp_parameters
        {
            double t = 0.0;
        };
    }

    /// `slerp` for the method registry: the base and exactly one model; `t` required.
    template <class = void>
    method_info slerp_method();

    /********************
     * Implementation   *
     ********************/

    inline std::vector<double> slerp_coefficients(const gram_matrix& g, double t)
    {
        constexpr double eps = 1e-8;
        const double n0 = std::sqrt(g(0, 0));
        const double n1 = std::sqrt(g(1, 1));
        // vectors with a norm at or below eps are used as they are, as mergekit does
        const double dot = g(0, 1) / ((n0 > eps ? n0 : 1.0) * (n1 > eps ? n1 : 1.0));
        if (std::fabs(dot) > 0.9995)
        {
            return {1.0 - t, t};
        }
        const double theta = std::acos(dot);
        const double s = std::sin(theta);
        return {std::sin(theta - theta * t) / s, std::sin(theta * t) / s};
    }

    template <class A, class B>
    inline any_expression slerp(const A& v0, const B& v1, double t)
    {
        if (!std::isfinite(t))
        {
            throw parameter_error(v0.name(), "t", "must be finite, got " + std::to_string(t));
        }
        expression_list<input_node> pair;
        if constexpr (std::is_same<A, input_node>::value && std::is_same<B, input_node>::value)
        {
            pair.push_back(v0);
            pair.push_back(v1);
            return xmerge::gram_combination(pair, [t](const gram_matrix& g) { return xmerge::slerp_coefficients(g, t); });
        }
        else
        {
            expression_list<any_expression> any_pair;
            any_pair.push_back(v0);
            any_pair.push_back(v1);
            return xmerge::gram_combination(any_pair, [t](const gram_matrix& g) { return xmerge::slerp_coefficients(g, t); });
        }
    }

    template <class T>
    method_info slerp_method()
    {
        using P = detail::slerp_parameters;
        const auto options = option_set<P>().required(&P::t, "t", "interpolation factor: 0 is the base, 1 the model");
        return xmerge::make_method("slerp", "spherical interpolation between the base and one model", true, options,
                           [](const method_inputs& in, const P& p) -> any_expression
                           {
                               if (in.models.size() != 1)
                               {
                                   throw parameter_error(in.tensor, "models", "slerp interpolates the base with exactly one model, got " + std::to_string(in.models.size()));
                               }
                               return xmerge::slerp(*in.base, in.models[0], p.t);
                           });
    }
}

#endif
