// Signals while a merge writes its output: Ctrl-C, SIGTERM and SIGHUP (a
// closed terminal or ssh session) stop the merge at the next tensor, which
// unwinds and removes the unfinished output; a second signal removes it and
// exits at once. Before any output exists, the first signal exits at once.
#ifndef XMERGE_CLI_SIGNALS_HPP
#define XMERGE_CLI_SIGNALS_HPP

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <thread>

#include <unistd.h>

#include <xmerge/io/checkpoint_writer.hpp>

namespace xmerge_cli
{
    /**
     * Handles SIGINT, SIGTERM and SIGHUP on a thread of its own, where
     * removing directories is safe: the handler only writes the signal's
     * number to a pipe (any thread may receive it, libraries' threads too).
     */
    class stop_on_signals
    {
    public:
        stop_on_signals()
        {
            if (::pipe(pipe_fds()) != 0)
            {
                return;  // signals keep their default action
            }
            std::thread(&stop_on_signals::wait).detach();
            struct sigaction action = {};
            action.sa_handler = &stop_on_signals::forward;
            sigemptyset(&action.sa_mask);
            action.sa_flags = SA_RESTART;
            for (int sig : {SIGINT, SIGTERM, SIGHUP})
            {
                ::sigaction(sig, &action, nullptr);
            }
        }
        // The waiting thread outlives this object: it only touches static state.
        ~stop_on_signals() { finished().store(true); }
        stop_on_signals(const stop_on_signals&) = delete;
        stop_on_signals& operator=(const stop_on_signals&) = delete;

        /// The first signal's number once one arrived, else 0.
        static int requested() noexcept { return received().load(); }

    private:
        static int* pipe_fds()
        {
            static int fds[2] = {-1, -1};
            return fds;
        }
        static std::atomic<int>& received()
        {
            static std::atomic<int> sig{0};
            return sig;
        }
        static std::atomic<bool>& finished()
        {
            static std::atomic<bool> done{false};
            return done;
        }

        static void forward(int sig)
        {
            const int saved = errno;
            const auto byte = static_cast<unsigned char>(sig);
            [[maybe_unused]] const auto n = ::write(pipe_fds()[1], &byte, 1);
            errno = saved;
        }

        static void wait()
        {
            for (;;)
            {
                unsigned char byte = 0;
                if (::read(pipe_fds()[0], &byte, 1) != 1)
                {
                    continue;
                }
                const int sig = byte;
                if (finished().load())
                {
                    // The merge is over: the signal does what it does by default.
                    std::signal(sig, SIG_DFL);
                    ::raise(sig);
                    continue;
                }
                int expected = 0;
                if (received().compare_exchange_strong(expected, sig) && xmerge::io::unfinished_output_count() > 0)
                {
                    std::fprintf(stderr, "\nxmerge: stopping after the current tensor and removing the unfinished output (a second signal stops at once)\n");
                    continue;
                }
                xmerge::io::abandon_unfinished_outputs();
                std::fprintf(stderr, "\nxmerge: stopped by a signal; the unfinished output was removed, nothing was written\n");
                ::_exit(128 + sig);
            }
        }
    };
}

#endif
