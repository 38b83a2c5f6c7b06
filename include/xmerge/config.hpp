/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_CONFIG_HPP
#define XMERGE_CONFIG_HPP

#define XMERGE_VERSION_MAJOR 0
#define XMERGE_VERSION_MINOR 1
#define XMERGE_VERSION_PATCH 0

/// Elements evaluated per step of the fused pass (float32 scratch per node).
#ifndef XMERGE_DEFAULT_CHUNK_SIZE
#define XMERGE_DEFAULT_CHUNK_SIZE 2048
#endif

/// Chunks per parallel task. Tasks are the unit of work stealing and of
/// deterministic reduction: partial results are kept per task and combined in
/// task order, so the thread count never changes a result.
#ifndef XMERGE_DEFAULT_CHUNKS_PER_TASK
#define XMERGE_DEFAULT_CHUNKS_PER_TASK 16
#endif

#if defined(__GNUC__) || defined(__clang__)
#define XMERGE_FORCE_INLINE inline __attribute__((always_inline))
#define XMERGE_RESTRICT __restrict__
#else
#define XMERGE_FORCE_INLINE inline
#define XMERGE_RESTRICT
#endif

#endif
