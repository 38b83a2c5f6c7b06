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

// XMERGE_LAMBDA_INLINE keeps per-dtype lambdas inside the caller's batch loop.
#if defined(__GNUC__) || defined(__clang__)
#define XMERGE_FORCE_INLINE inline __attribute__((always_inline))
#define XMERGE_LAMBDA_INLINE __attribute__((always_inline))
#define XMERGE_RESTRICT __restrict__
#else
#define XMERGE_FORCE_INLINE inline
#define XMERGE_LAMBDA_INLINE
#define XMERGE_RESTRICT
#endif

/// GCC 12 reports the deliberately undefined pass-through operands inside its
/// own AVX-512 intrinsics as uninitialized once they are inlined (GCC bug
/// 105593, fixed in GCC 13). Headers that inline intrinsics wrap their code in
/// these so that users compiling with -Wall -Werror are not affected.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#define XMERGE_INTRINSICS_BEGIN \
    _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wuninitialized\"") _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")
#define XMERGE_INTRINSICS_END _Pragma("GCC diagnostic pop")
#else
#define XMERGE_INTRINSICS_BEGIN
#define XMERGE_INTRINSICS_END
#endif

#endif
