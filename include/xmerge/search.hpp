/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_SEARCH_HPP
#define XMERGE_SEARCH_HPP

/**
 * @file
 * Evaluation-driven merging: merges whose coefficients or ingredients are
 * chosen by a score the caller computes (held-out accuracy, a negated
 * loss), and weight matching. Needs only the core; include the headers
 * under search/ one by one to pay for less.
 */

#include "search/coefficient_search.hpp"
#include "search/interpolation.hpp"
#include "search/line_search.hpp"
#include "search/linear_assignment.hpp"
#include "search/objective.hpp"
#include "search/permutation.hpp"
#include "search/soup.hpp"
#include "search/weight_matching.hpp"
#include "search/workspace.hpp"

#endif
