/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_ONLINE_HPP
#define XMERGE_ONLINE_HPP

/**
 * @file
 * Averaging inside a training loop: EMA, SWA, weighted checkpoint averages
 * and diagonal Fisher accumulation, all in place.
 */

#include "core.hpp"

#include "online/checkpoint_average.hpp"
#include "online/diagonal_fisher.hpp"
#include "online/ema.hpp"
#include "online/running_average.hpp"
#include "online/swa.hpp"

#endif
