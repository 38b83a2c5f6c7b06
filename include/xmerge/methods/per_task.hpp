/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_METHODS_PER_TASK_HPP
#define XMERGE_METHODS_PER_TASK_HPP

#include <cstddef>
#include <optional>
#include <string>

#include "../core/error.hpp"

/**
 * @file
 * What methods giving one model per task (TALL masks, EMR, TSV-C) share in
 * the registry: build_outputs() gives every result, named `model.<t>` (and
 * `mask.<t>`, ...), and build() the model of the task chosen by an optional
 * `task` parameter, so that a recipe or the command line can write the
 * model of any one task.
 */

namespace xmerge::detail
{
    /// The `task` a per-task method's build() gives; throws when unset or out of range.
    inline std::size_t selected_task(const std::optional<std::size_t>& task, std::size_t tasks, const std::string& tensor, const char* method)
    {
        if (!task)
        {
            throw parameter_error(tensor, "task", std::string(method) + " gives one model per task: set 'task' (0 to " + std::to_string(tasks - 1)
                                                      + "), or build every output with build_outputs()");
        }
        if (*task >= tasks)
        {
            throw parameter_error(tensor, "task", "is " + std::to_string(*task) + " but there are " + std::to_string(tasks) + " models");
        }
        return *task;
    }
}

#endif
