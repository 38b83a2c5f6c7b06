/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_CORE_XTENSOR_COMPAT_HPP
#define XMERGE_CORE_XTENSOR_COMPAT_HPP

// xtensor 0.26 moved its headers into subfolders; this is the only place that
// knows both layouts. The engine needs only xarray (shapes, expressions, the
// result of materialize()); XMERGE_XTENSOR_TENSOR_HEADER names the header of
// xt::xtensor for the parts that use it.
#if __has_include(<xtensor/containers/xstorage.hpp>)
#include <xtensor/containers/xarray.hpp>
#include <xtensor/containers/xstorage.hpp>
#include <xtensor/core/xexpression.hpp>
#define XMERGE_XTENSOR_TENSOR_HEADER <xtensor/containers/xtensor.hpp>
#else
#include <xtensor/xarray.hpp>
#include <xtensor/xexpression.hpp>
#include <xtensor/xstorage.hpp>
#define XMERGE_XTENSOR_TENSOR_HEADER <xtensor/xtensor.hpp>
#endif

#endif
