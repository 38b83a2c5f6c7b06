/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_OPS_HPP
#define XMERGE_OPS_HPP

/**
 * @file
 * Every part merges are built from: core.hpp, plus magnitude selections,
 * random masks, sign election, per-element maxima and variances, rescaling,
 * and Gram-matrix combinations.
 */

#include "core.hpp"

#include "ops/emr_election.hpp"
#include "ops/gram.hpp"
#include "ops/max_magnitude.hpp"
#include "ops/order_statistics.hpp"
#include "ops/overlap_mean.hpp"
#include "ops/random_mask.hpp"
#include "ops/rank_mask.hpp"
#include "ops/rank_probability.hpp"
#include "ops/rescale.hpp"
#include "ops/sign_election.hpp"
#include "ops/tall_mask.hpp"
#include "ops/variance.hpp"

#endif
