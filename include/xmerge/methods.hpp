/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_HPP
#define XMERGE_METHODS_HPP

/**
 * @file
 * The merge methods, the method registry with its typed parameters, and
 * builtin_methods(). Methods that need LAPACK come with xmerge/linalg.hpp.
 */

#include "ops.hpp"

#include "methods/arcee_fusion.hpp"
#include "methods/breadcrumbs.hpp"
#include "methods/builtin.hpp"
#include "methods/consensus.hpp"
#include "methods/dare.hpp"
#include "methods/della.hpp"
#include "methods/emr.hpp"
#include "methods/fisher.hpp"
#include "methods/generalized_task_arithmetic.hpp"
#include "methods/interpolate.hpp"
#include "methods/karcher.hpp"
#include "methods/linear.hpp"
#include "methods/magmax.hpp"
#include "methods/model_statistics.hpp"
#include "methods/model_stock.hpp"
#include "methods/multislerp.hpp"
#include "methods/nearswap.hpp"
#include "methods/nuslerp.hpp"
#include "methods/options.hpp"
#include "methods/pcb.hpp"
#include "methods/per_task.hpp"
#include "methods/ram.hpp"
#include "methods/ramplus_tl.hpp"
#include "methods/registry.hpp"
#include "methods/sce.hpp"
#include "methods/slerp.hpp"
#include "methods/tall_mask.hpp"
#include "methods/task_arithmetic.hpp"
#include "methods/ties.hpp"

#endif
