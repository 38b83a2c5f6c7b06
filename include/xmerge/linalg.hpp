/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LINALG_HPP
#define XMERGE_LINALG_HPP

/**
 * @file
 * Everything that needs BLAS and LAPACK (through xtensor-blas): Gram
 * accumulation, RegMean, SVD-based subspaces and projections, continual
 * projection merging, TSV-M, TSV-C, WUDI, Iso-C and Iso-CTS. Link xmerge::linalg.
 */

#include "xmerge.hpp"

#include "linalg/backend.hpp"
#include "linalg/dense.hpp"
#include "linalg/gram.hpp"
#include "linalg/isotropic.hpp"
#include "linalg/opcm.hpp"
#include "linalg/projection.hpp"
#include "linalg/regmean.hpp"
#include "linalg/svd.hpp"
#include "linalg/task_matrix.hpp"
#include "linalg/tsv_c.hpp"
#include "linalg/tsv_m.hpp"
#include "linalg/wudi.hpp"

#endif
