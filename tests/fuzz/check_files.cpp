// Opens safetensors files the way a merge does (memory-mapped) and checks
// the outcome:
//
//   xmerge_check_files valid DIR       every file must open, and every tensor be readable
//   xmerge_check_files malformed DIR   every file listed in DIR/expected.tsv must fail with
//                                      io_error containing the listed text
//
// Prints one line per file, then "N passed, M failed".

#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <xmerge/io/safetensors.hpp>

namespace
{
    struct counts
    {
        int passed = 0;
        int failed = 0;
    };

    void report(counts& c, bool ok, const std::string& name, const std::string& detail)
    {
        (ok ? c.passed : c.failed)++;
        std::printf("%s %s%s%s\n", ok ? "PASS" : "FAIL", name.c_str(), detail.empty() ? "" : ": ", detail.c_str());
    }

    void check_valid(const std::filesystem::path& dir, counts& c)
    {
        for (const auto& e : std::filesystem::directory_iterator(dir))
        {
            const std::string name = e.path().filename().string();
            try
            {
                const xmerge::io::safetensors_file f(e.path().string());
                unsigned sum = 0;
                for (const auto& t : f.tensors())
                {
                    const std::uint8_t* p = f.raw(t.name);
                    for (std::size_t i = 0; i < t.bytes(); ++i)
                    {
                        sum += p[i];  // touches every byte: ASan or a fault would catch a bad range
                    }
                }
                report(c, true, name, std::to_string(f.tensors().size()) + " tensors, checksum " + std::to_string(sum));
            }
            catch (const std::exception& ex)
            {
                report(c, false, name, ex.what());
            }
        }
    }

    void check_malformed(const std::filesystem::path& dir, counts& c)
    {
        std::ifstream list(dir / "expected.tsv");
        if (!list)
        {
            report(c, false, (dir / "expected.tsv").string(), "cannot open");
            return;
        }
        std::string line;
        while (std::getline(list, line))
        {
            if (line.empty() || line[0] == '#')
            {
                continue;
            }
            const auto tab = line.find('\t');
            const std::string name = line.substr(0, tab), expected = tab == std::string::npos ? "" : line.substr(tab + 1);
            try
            {
                const xmerge::io::safetensors_file f((dir / name).string());
                report(c, false, name, "opened without an error");
            }
            catch (const xmerge::io_error& e)
            {
                const std::string what = e.what();
                const bool ok = what.find(expected) != std::string::npos && what.find(name) != std::string::npos;
                report(c, ok, name, ok ? what : "got '" + what + "', expected it to contain '" + expected + "' and the file name");
            }
            catch (const std::exception& e)
            {
                report(c, false, name, std::string("not an io_error: ") + e.what());
            }
        }
    }
}

int main(int argc, char** argv)
{
    if (argc != 3 || (std::strcmp(argv[1], "valid") != 0 && std::strcmp(argv[1], "malformed") != 0))
    {
        std::fprintf(stderr, "usage: xmerge_check_files valid|malformed DIR\n");
        return 2;
    }
    counts c;
    if (std::strcmp(argv[1], "valid") == 0)
    {
        check_valid(argv[2], c);
    }
    else
    {
        check_malformed(argv[2], c);
    }
    std::printf("%d passed, %d failed\n", c.passed, c.failed);
    return c.failed == 0 && c.passed > 0 ? 0 : 1;
}
