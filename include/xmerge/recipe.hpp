/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_RECIPE_HPP
#define XMERGE_RECIPE_HPP

/**
 * @file
 * mergekit YAML recipes: parsing and binding to a merge plan. Needs
 * yaml-cpp and nlohmann-json (link xmerge::recipe).
 */

#include "model.hpp"

#include "recipe/bind.hpp"
#include "recipe/model_card.hpp"
#include "recipe/output_files.hpp"
#include "recipe/recipe.hpp"
#include "recipe/recipe_job.hpp"
#include "recipe/vocabulary_merge.hpp"

#endif
