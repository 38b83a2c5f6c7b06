/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_XMERGE_HPP
#define XMERGE_XMERGE_HPP

/**
 * @file
 * Everything that needs only xtensor and xsimd: the engine and its parts
 * (core.hpp, ops.hpp), the merge methods (methods.hpp) and the online
 * averagers (online.hpp). Include those instead to pay only for what you
 * use; checkpoint I/O (io.hpp, model.hpp), recipes (recipe.hpp) and the
 * LAPACK methods (linalg.hpp) are separate.
 */

#include "core.hpp"
#include "ops.hpp"
#include "methods.hpp"
#include "online.hpp"

#endif
