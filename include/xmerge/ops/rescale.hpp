/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_RESCALE_HPP
#define XMERGE_OPS_RESCALE_HPP

#include <string>

#include "../core/error.hpp"
#include "any.hpp"
#include "reduce.hpp"
#include "scalar.hpp"

namespace xmerge
{
    /// How a sparsified task vector is scaled back up.
    enum class rescale_kind
    {
        none,     ///< keep the surviving entries as they are
        density,  ///< divide by the keep probability (the DARE paper's unbiased estimate)
        l1,       ///< match the L1 norm of the original (mergekit's `rescale`)
        l2,       ///< match the L2 norm of the original
        linf      ///< match the largest magnitude of the original
    };

    /// Parses "none", "density", "l1", "l2", "linf"; throws parameter_error otherwise.
    inline rescale_kind parse_rescale_kind(const std::string& text, const std::string& tensor = {});

    /**
     * The factor that rescales `pruned` (a sparsified version of `original`):
     * 1 for none, 1 / density for density, and for a norm the ratio
     * norm(original) / norm(pruned), or 1 when either norm is below 1e-7
     * (a tensor pruned to nothing stays nothing). The norms are statistics
     * computed before the element-wise pass.
     */
    template <class Pruned, class Original>
    any_scalar rescale_factor(const Pruned& pruned, const Original& original, rescale_kind kind, double density);

    namespace detail
    {
        struct norm_ratio_fn
        {
            double operator()(double before, double after) const noexcept
            {
                return before < 1e-7 || after < 1e-7 ? 1.0 : before / after;
            }
        };
    }

    /********************
     * Implementation   *
     ********************/

    inline rescale_kind parse_rescale_kind(const std::string& text, const std::string& tensor)
    {
        if (text == "none")
        {
            return rescale_kind::none;
        }
        if (text == "density")
        {
            return rescale_kind::density;
        }
        if (text == "l1")
        {
            return rescale_kind::l1;
        }
        if (text == "l2")
        {
            return rescale_kind::l2;
        }
        if (text == "linf")
        {
            return rescale_kind::linf;
        }
        throw parameter_error(tensor, "rescale_norm", "unknown rescaling '" + text + "' (accepted: none, density, l1, l2, linf)");
    }

    template <class Pruned, class Original>
    inline any_scalar rescale_factor(const Pruned& pruned, const Original& original, rescale_kind kind, double density)
    {
        switch (kind)
        {
            case rescale_kind::none:
                return scalar_constant(1.0);
            case rescale_kind::density:
                if (!(density > 0.0))
                {
                    throw parameter_error(original.name(), "density", "must be positive to rescale by 1 / density");
                }
                return scalar_constant(1.0 / density);
            case rescale_kind::l1:
                return xmerge::apply(detail::norm_ratio_fn{}, xmerge::norm_l1(original), xmerge::norm_l1(pruned));
            case rescale_kind::l2:
                return xmerge::apply(detail::norm_ratio_fn{}, xmerge::norm(original), xmerge::norm(pruned));
            case rescale_kind::linf:
                return xmerge::apply(detail::norm_ratio_fn{}, xmerge::norm_inf(original), xmerge::norm_inf(pruned));
        }
        return scalar_constant(1.0);
    }
}

#endif
