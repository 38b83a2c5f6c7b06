/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_CORE_HPP
#define XMERGE_CORE_HPP

/**
 * @file
 * Nodes and evaluation: tensor references and dtypes, leaves, element-wise
 * arithmetic and map, lists of terms and the list node, weighted sums,
 * reductions, shared sub-expressions, type erasure and whole-tensor
 * computations, evaluated with evaluate() and value_of().
 */

#include "config.hpp"

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/evaluate.hpp"
#include "core/expression.hpp"
#include "core/half.hpp"
#include "core/parallel.hpp"
#include "core/tensor_ref.hpp"

#include "simd/batch.hpp"
#include "simd/convert.hpp"
#include "simd/kernels.hpp"

#include "ops/any.hpp"
#include "ops/arithmetic.hpp"
#include "ops/computed.hpp"
#include "ops/input.hpp"
#include "ops/lerp.hpp"
#include "ops/list.hpp"
#include "ops/list_node.hpp"
#include "ops/map.hpp"
#include "ops/reduce.hpp"
#include "ops/scalar.hpp"
#include "ops/shared.hpp"
#include "ops/task_vector.hpp"
#include "ops/weighted_sum.hpp"

#endif
