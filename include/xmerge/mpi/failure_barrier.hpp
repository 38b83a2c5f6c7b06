/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MPI_FAILURE_BARRIER_HPP
#define XMERGE_MPI_FAILURE_BARRIER_HPP

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include <mpi.h>

#include "error.hpp"

/**
 * @file
 * One rank's failure made known to every rank, so that all of them stop,
 * clean up and report the same error instead of waiting for each other.
 */

namespace xmerge::mpi
{
    /**
     * Work split into phases, each ending with settle(), which every rank
     * calls: a rank whose work fails calls fail(), which also tells the
     * other ranks at once (point-to-point, on a private duplicate of the
     * communicator); they see it through failed() between steps and skip the
     * rest of the phase. settle() then throws the same mpi::error, naming
     * every failed rank and its message, on every rank.
     *
     * Inside a phase no collective may be called (a failed rank might not
     * reach it); collectives belong between settle() calls.
     */
    class failure_barrier
    {
    public:
        /// Collective (duplicates `comm`).
        explicit failure_barrier(MPI_Comm comm);
        ~failure_barrier();
        failure_barrier(const failure_barrier&) = delete;
        failure_barrier& operator=(const failure_barrier&) = delete;

        /// Records this rank's failure (the first message is kept) and notifies the other ranks.
        void fail(const std::string& message) noexcept;
        /**
         * True when this rank failed or another rank's notice has arrived;
         * never blocks. Asks MPI at most once a millisecond: a probe runs
         * MPI's progress engine, which costs tens of microseconds, too much
         * to pay per small tensor.
         */
        bool failed();
        /// Collective: returns when no rank failed in this phase, else throws mpi::error on every rank.
        void settle();

        /// The private communicator (for the collectives between phases).
        MPI_Comm communicator() const noexcept { return m_comm; }
        int rank() const noexcept { return m_rank; }
        int ranks() const noexcept { return m_ranks; }

    private:
        static constexpr int notice_tag = 7001;
        MPI_Comm m_comm = MPI_COMM_NULL;
        int m_rank = 0;
        int m_ranks = 1;
        bool m_failed_here = false;
        bool m_notified = false;
        std::chrono::steady_clock::time_point m_last_probe{};
        std::string m_message;
        std::vector<MPI_Request> m_requests;
    };

    /********************
     * Implementation   *
     ********************/

    inline failure_barrier::failure_barrier(MPI_Comm comm)
    {
        check(MPI_Comm_dup(comm, &m_comm), "MPI_Comm_dup");
        m_rank = comm_rank(m_comm);
        m_ranks = comm_size(m_comm);
    }

    inline failure_barrier::~failure_barrier()
    {
        if (!m_requests.empty())
        {
            MPI_Waitall(static_cast<int>(m_requests.size()), m_requests.data(), MPI_STATUSES_IGNORE);
        }
        MPI_Comm_free(&m_comm);
    }

    inline void failure_barrier::fail(const std::string& message) noexcept
    {
        if (m_failed_here)
        {
            return;
        }
        m_failed_here = true;
        try
        {
            m_message = message.empty() ? std::string("failed") : message;
        }
        catch (...)
        {
        }
        static const int one = 1;
        for (int p = 0; p < m_ranks; ++p)
        {
            if (p != m_rank)
            {
                MPI_Request r;
                if (MPI_Isend(&one, 1, MPI_INT, p, notice_tag, m_comm, &r) == MPI_SUCCESS)
                {
                    m_requests.push_back(r);
                }
            }
        }
    }

    inline bool failure_barrier::failed()
    {
        if (m_failed_here || m_notified)
        {
            return true;
        }
        const auto now = std::chrono::steady_clock::now();
        if (now - m_last_probe < std::chrono::milliseconds(1))
        {
            return false;
        }
        m_last_probe = now;
        int flag = 0;
        check(MPI_Iprobe(MPI_ANY_SOURCE, notice_tag, m_comm, &flag, MPI_STATUS_IGNORE), "MPI_Iprobe");
        m_notified = flag != 0;
        return m_notified;
    }

    inline void failure_barrier::settle()
    {
        const int length = m_failed_here ? static_cast<int>(m_message.size()) : 0;
        std::vector<int> lengths(static_cast<std::size_t>(m_ranks)), displs(static_cast<std::size_t>(m_ranks));
        check(MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, m_comm), "MPI_Allgather");
        std::size_t total = 0;
        for (std::size_t p = 0; p < lengths.size(); ++p)
        {
            displs[p] = detail::count(total, "failure messages");
            total += static_cast<std::size_t>(lengths[p]);
        }
        if (total == 0)
        {
            return;
        }
        std::string all(total, '\0');
        check(MPI_Allgatherv(m_message.data(), length, MPI_CHAR, &all[0], lengths.data(), displs.data(), MPI_CHAR, m_comm), "MPI_Allgatherv");
        // Every failed rank sent this rank one notice: take them, so none is left in flight.
        for (int p = 0; p < m_ranks; ++p)
        {
            if (p != m_rank && lengths[static_cast<std::size_t>(p)] > 0)
            {
                int notice = 0;
                check(MPI_Recv(&notice, 1, MPI_INT, p, notice_tag, m_comm, MPI_STATUS_IGNORE), "MPI_Recv");
            }
        }
        if (!m_requests.empty())
        {
            check(MPI_Waitall(static_cast<int>(m_requests.size()), m_requests.data(), MPI_STATUSES_IGNORE), "MPI_Waitall");
            m_requests.clear();
        }
        std::string text;
        for (std::size_t p = 0; p < lengths.size(); ++p)
        {
            if (lengths[p] > 0)
            {
                text += (text.empty() ? "" : "; ") + std::string("rank ") + std::to_string(p) + " of " + std::to_string(m_ranks) + ": "
                        + all.substr(static_cast<std::size_t>(displs[p]), static_cast<std::size_t>(lengths[p]));
            }
        }
        m_failed_here = false;
        m_notified = false;
        m_message.clear();
        throw error(text);
    }
}

#endif
