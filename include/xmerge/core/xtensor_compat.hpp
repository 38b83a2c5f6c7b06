/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_CORE_XTENSOR_COMPAT_HPP
#define XMERGE_CORE_XTENSOR_COMPAT_HPP

// xtensor 0.26 moved its headers into subfolders; this is the only place that
// knows both layouts.
#if __has_include(<xtensor/containers/xstorage.hpp>)
#include <xtensor/containers/xadapt.hpp>
#include <xtensor/containers/xarray.hpp>
#include <xtensor/containers/xstorage.hpp>
#include <xtensor/containers/xtensor.hpp>
#include <xtensor/core/xexpression.hpp>
#else
#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xexpression.hpp>
#include <xtensor/xstorage.hpp>
#include <xtensor/xtensor.hpp>
#endif

#endif
