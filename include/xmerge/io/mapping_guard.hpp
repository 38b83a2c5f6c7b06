/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_IO_MAPPING_GUARD_HPP
#define XMERGE_IO_MAPPING_GUARD_HPP

#include <atomic>
#include <cstddef>
#include <cstdint>

#if defined(__linux__) || defined(__APPLE__)
#include <csignal>
#include <sys/mman.h>
#include <unistd.h>
#define XMERGE_HAS_MAPPING_GUARD 1
#else
#define XMERGE_HAS_MAPPING_GUARD 0
#endif

/**
 * @file
 * Reads of a file mapping that survive the file shrinking underneath.
 *
 * Touching a page of a mapped file beyond the file's current end raises
 * SIGBUS, which kills the process. Ranges registered here are guarded: a
 * SIGBUS handler (installed once, chaining to any previous one for other
 * addresses) maps zero pages over the rest of the faulting range, so the
 * read completes with zeros, and records the fault. The owner checks
 * fault_offset() after reading and turns it into an error naming the file
 * and tensor. Reads cost nothing more than before; only a fault does work.
 */

namespace xmerge::io::detail
{
    /// Registers [base, base + size); returns a slot for the others, or -1 when none is free (then unguarded).
    inline int guard_mapping(const void* base, std::size_t size) noexcept;
    /// Stops guarding a slot (before the range is unmapped).
    inline void unguard_mapping(int slot) noexcept;
    /// Offset in the range of its first faulting read, or -1 when none faulted.
    inline long long mapping_fault_offset(int slot) noexcept;

    /********************
     * Implementation   *
     ********************/

    struct guarded_range
    {
        std::atomic<std::uintptr_t> begin{0};
        std::atomic<std::uintptr_t> end{0};
        std::atomic<long long> fault{-1};
        std::atomic<bool> used{false};
    };

    constexpr int guarded_range_slots = 4096;

    inline guarded_range* guarded_ranges() noexcept
    {
        static guarded_range slots[guarded_range_slots];
        return slots;
    }

#if XMERGE_HAS_MAPPING_GUARD
    inline struct sigaction& previous_sigbus() noexcept
    {
        static struct sigaction previous;
        return previous;
    }

    inline void xmerge_sigbus_handler(int sig, siginfo_t* info, void* context)
    {
        const auto address = reinterpret_cast<std::uintptr_t>(info->si_addr);
        guarded_range* slots = guarded_ranges();
        for (int i = 0; i < guarded_range_slots; ++i)
        {
            const std::uintptr_t begin = slots[i].begin.load(std::memory_order_acquire);
            const std::uintptr_t end = slots[i].end.load(std::memory_order_acquire);
            if (begin != 0 && address >= begin && address < end)
            {
                const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
                const std::uintptr_t first = address / page * page;
                // Zeros from the faulting page on: the interrupted read completes, the owner reports.
                if (::mmap(reinterpret_cast<void*>(first), end - first, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED)
                {
                    long long expected = -1;
                    slots[i].fault.compare_exchange_strong(expected, static_cast<long long>(address - begin));
                    return;
                }
                break;
            }
        }
        // Not ours: what would have happened without this handler.
        const struct sigaction& prev = previous_sigbus();
        if ((prev.sa_flags & SA_SIGINFO) && prev.sa_sigaction != nullptr)
        {
            prev.sa_sigaction(sig, info, context);
            return;
        }
        if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN && prev.sa_handler != nullptr)
        {
            prev.sa_handler(sig);
            return;
        }
        ::signal(SIGBUS, SIG_DFL);  // the faulting access repeats and ends the process as usual
    }

    inline void install_sigbus_handler() noexcept
    {
        static const bool installed = []
        {
            struct sigaction action = {};
            action.sa_sigaction = xmerge_sigbus_handler;
            action.sa_flags = SA_SIGINFO | SA_NODEFER;
            sigemptyset(&action.sa_mask);
            return ::sigaction(SIGBUS, &action, &previous_sigbus()) == 0;
        }();
        (void)installed;
    }
#endif

    inline int guard_mapping(const void* base, std::size_t size) noexcept
    {
#if XMERGE_HAS_MAPPING_GUARD
        if (base == nullptr || size == 0)
        {
            return -1;
        }
        install_sigbus_handler();
        guarded_range* slots = guarded_ranges();
        for (int i = 0; i < guarded_range_slots; ++i)
        {
            bool expected = false;
            if (slots[i].used.compare_exchange_strong(expected, true))
            {
                slots[i].fault.store(-1);
                slots[i].end.store(reinterpret_cast<std::uintptr_t>(base) + size, std::memory_order_release);
                slots[i].begin.store(reinterpret_cast<std::uintptr_t>(base), std::memory_order_release);
                return i;
            }
        }
#else
        (void)base;
        (void)size;
#endif
        return -1;
    }

    inline void unguard_mapping(int slot) noexcept
    {
        if (slot < 0)
        {
            return;
        }
        guarded_range& r = guarded_ranges()[slot];
        r.begin.store(0, std::memory_order_release);
        r.end.store(0, std::memory_order_release);
        r.used.store(false, std::memory_order_release);
    }

    inline long long mapping_fault_offset(int slot) noexcept
    {
        return slot < 0 ? -1 : guarded_ranges()[slot].fault.load(std::memory_order_acquire);
    }
}

#endif
