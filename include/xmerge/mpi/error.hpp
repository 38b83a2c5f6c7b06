/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MPI_ERROR_HPP
#define XMERGE_MPI_ERROR_HPP

#include <climits>
#include <cstddef>
#include <stdexcept>
#include <string>

#include <mpi.h>

/**
 * @file
 * Errors of the MPI layer: a failed MPI call becomes an exception naming the
 * call and MPI's own message.
 */

namespace xmerge::mpi
{
    /// An MPI call that returned an error code (with an error handler that returns).
    class error : public std::runtime_error
    {
    public:
        using std::runtime_error::runtime_error;
    };

    /// Throws mpi::error naming `call` unless rc is MPI_SUCCESS.
    inline void check(int rc, const char* call);

    /// The rank of this process in `comm`.
    inline int comm_rank(MPI_Comm comm);
    /// The number of processes in `comm`.
    inline int comm_size(MPI_Comm comm);

    namespace detail
    {
        /// A count for an MPI call; throws when it does not fit in an int.
        inline int count(std::size_t n, const char* what);
    }

    /********************
     * Implementation   *
     ********************/

    inline void check(int rc, const char* call)
    {
        if (rc == MPI_SUCCESS)
        {
            return;
        }
        char text[MPI_MAX_ERROR_STRING] = {};
        int length = 0;
        MPI_Error_string(rc, text, &length);
        throw error(std::string(call) + " failed: " + std::string(text, static_cast<std::size_t>(length)));
    }

    inline int comm_rank(MPI_Comm comm)
    {
        int r = 0;
        check(MPI_Comm_rank(comm, &r), "MPI_Comm_rank");
        return r;
    }

    inline int comm_size(MPI_Comm comm)
    {
        int n = 0;
        check(MPI_Comm_size(comm, &n), "MPI_Comm_size");
        return n;
    }

    namespace detail
    {
        inline int count(std::size_t n, const char* what)
        {
            if (n > static_cast<std::size_t>(INT_MAX))
            {
                throw error(std::string(what) + ": " + std::to_string(n) + " elements exceed one MPI message; use smaller buckets");
            }
            return static_cast<int>(n);
        }
    }
}

#endif
