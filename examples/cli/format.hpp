// Human-readable sizes, rates and durations for the command line.
#ifndef XMERGE_CLI_FORMAT_HPP
#define XMERGE_CLI_FORMAT_HPP

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>

namespace xmerge_cli
{
    /**
     * Text from a file (tensor names, metadata, messages quoting them) made
     * safe for a terminal: control characters (C0, DEL and C1 as UTF-8) are
     * written as \xNN or \u00NN, so no escape sequence reaches it. Line
     * breaks are kept only with `keep_newlines`.
     */
    inline std::string printable(const std::string& text, bool keep_newlines = false)
    {
        std::string out;
        out.reserve(text.size());
        char buf[8];
        for (std::size_t i = 0; i < text.size(); ++i)
        {
            const auto c = static_cast<unsigned char>(text[i]);
            const auto next = i + 1 < text.size() ? static_cast<unsigned char>(text[i + 1]) : 0u;
            if ((c < 0x20 && !(keep_newlines && c == '\n')) || c == 0x7f)
            {
                std::snprintf(buf, sizeof buf, "\\x%02x", c);
                out += buf;
            }
            else if (c == 0xc2 && next >= 0x80 && next <= 0x9f)
            {
                std::snprintf(buf, sizeof buf, "\\u%04x", next);
                out += buf;
                ++i;
            }
            else
            {
                out += static_cast<char>(c);
            }
        }
        return out;
    }

    /// Prints "xmerge: note: NOTE" on stderr, escaped for the terminal (see printable).
    inline void print_note(const std::string& note)
    {
        std::fprintf(stderr, "xmerge: note: %s\n", xmerge_cli::printable(note).c_str());
    }

    /// A thread count option: digits only, at most 4096 (0: every hardware thread).
    inline std::string check_threads(const std::string& text)
    {
        if (text.empty() || text.size() > 4 || text.find_first_not_of("0123456789") != std::string::npos || std::stoul(text) > 4096)
        {
            return "must be a number of threads from 0 (every hardware thread) to 4096, got '" + text + "'";
        }
        return {};
    }

    inline std::string bytes(double n)
    {
        const char* units[] = {"B", "kB", "MB", "GB", "TB"};
        int u = 0;
        while (n >= 1000.0 && u < 4)
        {
            n /= 1000.0;
            ++u;
        }
        char buf[32];
        std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", n, units[u]);
        return buf;
    }

    inline std::string rate(double bytes_per_second)
    {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.2f GB/s", bytes_per_second / 1e9);
        return buf;
    }

    /// "5GB", "500MB", "2GiB", "1e9", "123456": a byte count (decimal or binary units).
    inline std::uint64_t parse_size(const std::string& text)
    {
        std::size_t used = 0;
        double value = 0.0;
        try
        {
            value = std::stod(text, &used);
        }
        catch (const std::exception&)
        {
            throw std::invalid_argument("'" + text + "' is not a size (e.g. 5GB, 500MB, 2GiB)");
        }
        std::string unit = text.substr(used);
        for (auto& c : unit)
        {
            c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        }
        double scale = 1.0;
        if (unit.empty() || unit == "B")
        {
            scale = 1.0;
        }
        else if (unit == "K" || unit == "KB")
        {
            scale = 1e3;
        }
        else if (unit == "M" || unit == "MB")
        {
            scale = 1e6;
        }
        else if (unit == "G" || unit == "GB")
        {
            scale = 1e9;
        }
        else if (unit == "T" || unit == "TB")
        {
            scale = 1e12;
        }
        else if (unit == "KIB")
        {
            scale = 1024.0;
        }
        else if (unit == "MIB")
        {
            scale = 1024.0 * 1024.0;
        }
        else if (unit == "GIB")
        {
            scale = 1024.0 * 1024.0 * 1024.0;
        }
        else
        {
            throw std::invalid_argument("'" + text + "': unknown size unit '" + unit + "'");
        }
        const double total = value * scale;
        if (!(total >= 1.0) || total > 1e18)
        {
            throw std::invalid_argument("'" + text + "' is not a positive size");
        }
        return static_cast<std::uint64_t>(total);
    }
}

#endif
