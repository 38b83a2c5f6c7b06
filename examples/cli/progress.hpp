// A one-line progress bar on a terminal; silent when stderr is not one.
#ifndef XMERGE_CLI_PROGRESS_HPP
#define XMERGE_CLI_PROGRESS_HPP

#include <chrono>
#include <cstdio>
#include <string>

#include <unistd.h>

#include <xmerge/model/merge_spec.hpp>

#include "format.hpp"

namespace xmerge_cli
{
    class progress_bar
    {
    public:
        explicit progress_bar(bool enabled) : m_enabled(enabled && ::isatty(STDERR_FILENO)), m_start(clock::now()) {}

        void operator()(const xmerge::merge_progress& p)
        {
            if (!m_enabled)
            {
                return;
            }
            const auto now = clock::now();
            // Redraw at most ten times a second, and always at the end.
            if (p.done != p.total && now - m_last < std::chrono::milliseconds(100))
            {
                return;
            }
            m_last = now;
            const double elapsed = std::chrono::duration<double>(now - m_start).count();
            const double fraction = p.total ? static_cast<double>(p.done) / static_cast<double>(p.total) : 1.0;
            constexpr int width = 30;
            const int filled = static_cast<int>(fraction * width);
            std::string bar(static_cast<std::size_t>(filled), '#');
            bar.append(static_cast<std::size_t>(width - filled), '.');
            std::string name = p.tensor;
            if (name.size() > 40)
            {
                name = "..." + name.substr(name.size() - 37);
            }
            const char* stage = p.phase == xmerge::merge_progress::stage::statistics ? "stats" : "merge";
            const double moved = static_cast<double>(p.bytes_read + p.bytes_written);
            std::fprintf(stderr, "\r\033[K%s [%s] %3d%% %zu/%zu  %s  %s", stage, bar.c_str(), static_cast<int>(fraction * 100.0), p.done, p.total,
                         elapsed > 0 ? rate(moved / elapsed).c_str() : "", name.c_str());
            if (p.done == p.total)
            {
                std::fputc('\n', stderr);
            }
            std::fflush(stderr);
        }

    private:
        using clock = std::chrono::steady_clock;
        bool m_enabled;
        clock::time_point m_start;
        clock::time_point m_last{};
    };
}

#endif
