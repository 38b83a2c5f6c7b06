/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_IO_HPP
#define XMERGE_IO_HPP

/**
 * @file
 * Checkpoints on disk: safetensors reading (memory-mapped) and writing,
 * sharded indexes and crash-safe output files. Needs nlohmann-json (link
 * xmerge::io).
 */

#include "io/checkpoint_writer.hpp"
#include "io/companion_files.hpp"
#include "io/mapped_file.hpp"
#include "io/model_config.hpp"
#include "io/output_file.hpp"
#include "io/safetensors.hpp"
#include "io/safetensors_writer.hpp"
#include "io/shard_index.hpp"
#include "io/tokenizer.hpp"

#endif
