/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_SEARCH_WEIGHT_MATCHING_HPP
#define XMERGE_SEARCH_WEIGHT_MATCHING_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../simd/batch.hpp"
#include "../simd/convert.hpp"
#include "../simd/kernels.hpp"
#include "linear_assignment.hpp"
#include "objective.hpp"
#include "permutation.hpp"

/**
 * @file
 * Weight matching (Ainsworth, Hayase and Srinivasa, "Git Re-Basin", ICLR
 * 2023): permute the hidden units of one network so that its weights line
 * up with another's, after which the two are often linearly connected.
 */

namespace xmerge
{
    /// How weight matching runs.
    struct weight_matching_options
    {
        /// Rounds over all groups at most.
        std::size_t max_rounds = 100;
        /// Seed of the random order of the groups in each round.
        std::uint64_t seed = 0;
    };

    /// The permutations found and how the matching went.
    struct weight_matching_result
    {
        /// One per group of the spec; apply_permutation(spec, permutations, b, out) aligns b to a.
        std::vector<permutation> permutations;
        /// sum over the tensors the spec names of <a_T, P(b)_T>: before the first round, then after each.
        std::vector<double> similarity;
        std::size_t rounds = 0;
        /// True when a round changed no permutation (a coordinate-wise maximum).
        bool converged = false;
    };

    /**
     * Finds permutations of b's grouped axes that maximize
     * sum_T <a_T, P(b)_T> over the tensors the spec names, by coordinate
     * descent: each round visits the groups in a random order and, for
     * group g of size n with the other groups' permutations held fixed,
     * solves the linear assignment problem on
     *
     *     C[i][j] = sum over g's axes (T, d) of <row i of a_T along d, row j of b_T along d>,
     *
     * with b_T's other grouped axes already permuted; a group's permutation
     * changes only when the total strictly grows. Stops after a round
     * without change or `max_rounds` rounds. Cost per group visit: the
     * products (n^2 times the other extents of each member) and one O(n^3)
     * assignment. Tensors may be float32, bfloat16 or float16 (computed in
     * float32). Throws as apply_permutation for a spec that does not fit,
     * and shape_error when a and b differ in shape.
     */
    inline weight_matching_result weight_matching(const permutation_spec& spec, const parameter_list& a, const parameter_list& b,
                                                  const weight_matching_options& options = {});

    namespace detail
    {
        struct multiply_fn
        {
            template <class T>
            T operator()(const T& x, const T& y) const noexcept
            {
                return x * y;
            }
        };

        inline std::vector<float> widened(const const_tensor_ref& t)
        {
            std::vector<float> out(t.size());
            simd::load_as_float(t.type(), t.data(), 0, t.size(), out.data());
            return out;
        }

        /// sum over the named tensors of <a_T, P(b)_T>.
        inline double matching_similarity(const resolved_spec& r, const std::vector<permutation>& perms, const parameter_list& a,
                                          const std::vector<std::vector<float>>& af, const std::vector<std::vector<float>>& bf, std::vector<float>& scratch);
    }

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        inline double matching_similarity(const resolved_spec& r, const std::vector<permutation>& perms, const parameter_list& a,
                                          const std::vector<std::vector<float>>& af, const std::vector<std::vector<float>>& bf, std::vector<float>& scratch)
        {
            double total = 0.0;
            for (std::size_t t = 0; t < a.size(); ++t)
            {
                if (af[t].empty())
                {
                    continue;
                }
                scratch.resize(af[t].size());
                gather_permuted(bf[t].data(), a[t].shape(), axis_permutations(r, perms, t), resolved_spec::npos, scratch.data());
                total += simd::sum(af[t].size(), multiply_fn{}, af[t].data(), static_cast<const float*>(scratch.data()));
            }
            return total;
        }
    }

    inline weight_matching_result weight_matching(const permutation_spec& spec, const parameter_list& a, const parameter_list& b,
                                                  const weight_matching_options& options)
    {
        if (a.size() != b.size())
        {
            throw parameter_error("", "b", "model a has " + std::to_string(a.size()) + " tensors, model b " + std::to_string(b.size()));
        }
        for (std::size_t t = 0; t < a.size(); ++t)
        {
            if (a[t].shape() != b[t].shape())
            {
                throw shape_error(a[t].name(), "b", "model a has shape " + to_string(a[t].shape()) + ", model b " + to_string(b[t].shape()));
            }
        }
        const detail::resolved_spec r = detail::resolve(spec, a);
        const std::size_t groups = r.sizes.size();

        // float32 copies of the tensors the spec names; a's with each member axis moved first.
        std::vector<std::vector<float>> af(a.size()), bf(a.size());
        std::vector<std::vector<std::vector<float>>> a_front(groups);
        for (std::size_t g = 0; g < groups; ++g)
        {
            for (const auto& [t, d] : r.members[g])
            {
                if (af[t].empty())
                {
                    af[t] = detail::widened(a[t]);
                    bf[t] = detail::widened(b[t]);
                }
                a_front[g].emplace_back(af[t].size());
                detail::gather_permuted(af[t].data(), a[t].shape(), std::vector<const std::size_t*>(a[t].dimension(), nullptr), d, a_front[g].back().data());
            }
        }

        weight_matching_result result;
        result.permutations.resize(groups);
        for (std::size_t g = 0; g < groups; ++g)
        {
            result.permutations[g].resize(r.sizes[g]);
            std::iota(result.permutations[g].begin(), result.permutations[g].end(), std::size_t{0});
        }
        std::vector<float> scratch;
        result.similarity.push_back(detail::matching_similarity(r, result.permutations, a, af, bf, scratch));

        std::mt19937_64 gen(options.seed);
        std::vector<std::size_t> order(groups);
        std::iota(order.begin(), order.end(), std::size_t{0});
        std::vector<double> cost;
        permutation candidate;
        for (std::size_t round = 0; round < options.max_rounds && !result.converged; ++round)
        {
            for (std::size_t i = groups; i > 1; --i)
            {
                std::swap(order[i - 1], order[gen() % i]);
            }
            bool changed = false;
            for (std::size_t g : order)
            {
                const std::size_t n = r.sizes[g];
                cost.assign(n * n, 0.0);
                for (std::size_t m = 0; m < r.members[g].size(); ++m)
                {
                    const auto [t, d] = r.members[g][m];
                    const std::size_t rest = n == 0 ? 0 : af[t].size() / n;
                    scratch.resize(bf[t].size());
                    detail::gather_permuted(bf[t].data(), b[t].shape(), detail::axis_permutations(r, result.permutations, t, d), d, scratch.data());
                    const float* am = a_front[g][m].data();
                    for (std::size_t i = 0; i < n; ++i)
                    {
                        for (std::size_t j = 0; j < n; ++j)
                        {
                            cost[i * n + j] += simd::sum(rest, detail::multiply_fn{}, am + i * rest, static_cast<const float*>(scratch.data() + j * rest));
                        }
                    }
                }
                candidate.resize(n);
                const double gained = linear_assignment(cost.data(), n, n, candidate.data(), assignment_goal::maximize);
                double current = 0.0;
                for (std::size_t i = 0; i < n; ++i)
                {
                    current += cost[i * n + result.permutations[g][i]];
                }
                // A relative margin keeps rounding noise from swapping equal solutions forever.
                if (gained > current + 1e-9 * std::max(1.0, std::fabs(current)))
                {
                    result.permutations[g] = candidate;
                    changed = true;
                }
            }
            ++result.rounds;
            result.similarity.push_back(detail::matching_similarity(r, result.permutations, a, af, bf, scratch));
            result.converged = !changed;
        }
        return result;
    }
}

#endif
