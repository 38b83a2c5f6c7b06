/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_XMERGE_HPP
#define XMERGE_XMERGE_HPP

/**
 * @file
 * Everything that needs only xtensor and xsimd: the engine, the element-wise
 * parts, and the merge methods. I/O headers (xmerge/io/...) need
 * nlohmann-json and are included on their own.
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

#include "ops/any.hpp"
#include "ops/arithmetic.hpp"
#include "ops/computed.hpp"
#include "ops/input.hpp"
#include "ops/lerp.hpp"
#include "ops/list.hpp"
#include "ops/map.hpp"
#include "ops/reduce.hpp"
#include "ops/scalar.hpp"
#include "ops/shared.hpp"
#include "ops/task_vector.hpp"
#include "ops/weighted_sum.hpp"

#include "methods/builtin.hpp"
#include "methods/catalog_averaging.hpp"
#include "methods/catalog_data_aware.hpp"
#include "methods/catalog_sparse_geometric.hpp"
#include "methods/fisher.hpp"
#include "methods/interpolate.hpp"
#include "methods/linear.hpp"
#include "methods/model_statistics.hpp"
#include "methods/registry.hpp"
#include "methods/task_arithmetic.hpp"

#include "online/checkpoint_average.hpp"
#include "online/diagonal_fisher.hpp"
#include "online/ema.hpp"
#include "online/running_average.hpp"
#include "online/swa.hpp"

#endif
