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
