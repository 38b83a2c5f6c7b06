/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MODEL_HPP
#define XMERGE_MODEL_HPP

/**
 * @file
 * Whole-model merges: models as sets of named tensors, layer ranges,
 * parameter settings per tensor, and planning and running a merge with a
 * registry method. Needs nlohmann-json (link xmerge::io).
 */

#include "io.hpp"
#include "methods.hpp"

#include "model/architecture.hpp"
#include "model/inspect.hpp"
#include "model/layers.hpp"
#include "model/merge.hpp"
#include "model/model.hpp"
#include "model/parameter_setting.hpp"
#include "model/vocabulary.hpp"

#endif
