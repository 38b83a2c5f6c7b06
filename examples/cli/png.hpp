// A small RGB canvas with a 5x7 bitmap font, written as PNG without any
// library: zlib "stored" blocks need no compressor, and the CRC-32 and
// Adler-32 checksums are a few lines each.
#ifndef XMERGE_CLI_PNG_HPP
#define XMERGE_CLI_PNG_HPP

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace xmerge_cli
{
    struct rgb
    {
        std::uint8_t r = 255, g = 255, b = 255;
    };

    class canvas
    {
    public:
        canvas(std::size_t width, std::size_t height, rgb background = {}) : m_width(width), m_height(height), m_pixels(width * height, background) {}

        std::size_t width() const noexcept { return m_width; }
        std::size_t height() const noexcept { return m_height; }

        void fill(std::size_t x, std::size_t y, std::size_t w, std::size_t h, rgb c)
        {
            for (std::size_t j = y; j < std::min(y + h, m_height); ++j)
            {
                for (std::size_t i = x; i < std::min(x + w, m_width); ++i)
                {
                    m_pixels[j * m_width + i] = c;
                }
            }
        }

        /// Text in the 5x7 font (6 px per character), top-left at (x, y); lower case is drawn as upper case.
        void text(std::size_t x, std::size_t y, const std::string& s, rgb c = {0, 0, 0})
        {
            for (char ch : s)
            {
                const auto& g = glyph(ch);
                for (std::size_t row = 0; row < 7; ++row)
                {
                    for (std::size_t col = 0; col < 5; ++col)
                    {
                        if (g[row][col] == '#' && x + col < m_width && y + row < m_height)
                        {
                            m_pixels[(y + row) * m_width + x + col] = c;
                        }
                    }
                }
                x += 6;
            }
        }

        static std::size_t text_width(const std::string& s) { return s.size() * 6; }

        /// Writes the canvas as an 8-bit RGB PNG, each pixel `scale` x `scale`; throws std::runtime_error naming the file.
        void write_png(const std::string& path, std::size_t scale = 1) const
        {
            const std::size_t width = m_width * scale, height = m_height * scale;
            std::vector<std::uint8_t> raw;
            raw.reserve((width * 3 + 1) * height);
            for (std::size_t y = 0; y < height; ++y)
            {
                raw.push_back(0);  // filter: none
                for (std::size_t x = 0; x < width; ++x)
                {
                    const rgb& p = m_pixels[(y / scale) * m_width + x / scale];
                    raw.insert(raw.end(), {p.r, p.g, p.b});
                }
            }
            // zlib: header, stored deflate blocks of at most 65535 bytes, Adler-32.
            std::vector<std::uint8_t> z = {0x78, 0x01};
            for (std::size_t at = 0; at < raw.size() || at == 0; at += 65535)
            {
                const std::size_t n = std::min<std::size_t>(65535, raw.size() - at);
                const bool last = at + n >= raw.size();
                z.push_back(last ? 1 : 0);
                z.push_back(static_cast<std::uint8_t>(n & 0xff));
                z.push_back(static_cast<std::uint8_t>(n >> 8));
                z.push_back(static_cast<std::uint8_t>(~n & 0xff));
                z.push_back(static_cast<std::uint8_t>((~n >> 8) & 0xff));
                z.insert(z.end(), raw.begin() + static_cast<std::ptrdiff_t>(at), raw.begin() + static_cast<std::ptrdiff_t>(at + n));
                if (last)
                {
                    break;
                }
            }
            std::uint32_t a = 1, b = 0;
            for (std::uint8_t v : raw)
            {
                a = (a + v) % 65521;
                b = (b + a) % 65521;
            }
            put32(z, (b << 16) | a);

            std::vector<std::uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
            std::vector<std::uint8_t> header;
            put32(header, static_cast<std::uint32_t>(width));
            put32(header, static_cast<std::uint32_t>(height));
            header.insert(header.end(), {8, 2, 0, 0, 0});  // 8-bit RGB, deflate, no filter choice, no interlace
            chunk(png, "IHDR", header);
            chunk(png, "IDAT", z);
            chunk(png, "IEND", {});

            std::FILE* f = std::fopen(path.c_str(), "wb");
            if (f == nullptr || std::fwrite(png.data(), 1, png.size(), f) != png.size() || std::fclose(f) != 0)
            {
                throw std::runtime_error(path + ": cannot write the plot");
            }
        }

    private:
        using glyph_rows = std::array<const char*, 7>;

        static void put32(std::vector<std::uint8_t>& out, std::uint32_t v)
        {
            out.insert(out.end(), {static_cast<std::uint8_t>(v >> 24), static_cast<std::uint8_t>(v >> 16), static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)});
        }

        static void chunk(std::vector<std::uint8_t>& png, const char* type, const std::vector<std::uint8_t>& data)
        {
            put32(png, static_cast<std::uint32_t>(data.size()));
            const std::size_t start = png.size();
            png.insert(png.end(), type, type + 4);
            png.insert(png.end(), data.begin(), data.end());
            std::uint32_t crc = 0xffffffffu;
            for (std::size_t i = start; i < png.size(); ++i)
            {
                crc ^= png[i];
                for (int k = 0; k < 8; ++k)
                {
                    crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
                }
            }
            put32(png, crc ^ 0xffffffffu);
        }

        static const glyph_rows& glyph(char c)
        {
            static const std::map<char, glyph_rows> font = {
                {' ', {"     ", "     ", "     ", "     ", "     ", "     ", "     "}},
                {'0', {" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "}},
                {'1', {"  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "}},
                {'2', {" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"}},
                {'3', {"#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "}},
                {'4', {"   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "}},
                {'5', {"#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "}},
                {'6', {"  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "}},
                {'7', {"#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "}},
                {'8', {" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "}},
                {'9', {" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "}},
                {'A', {" ### ", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"}},
                {'B', {"#### ", "#   #", "#   #", "#### ", "#   #", "#   #", "#### "}},
                {'C', {" ### ", "#   #", "#    ", "#    ", "#    ", "#   #", " ### "}},
                {'D', {"#### ", "#   #", "#   #", "#   #", "#   #", "#   #", "#### "}},
                {'E', {"#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#####"}},
                {'F', {"#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#    "}},
                {'G', {" ### ", "#   #", "#    ", "# ###", "#   #", "#   #", " ####"}},
                {'H', {"#   #", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"}},
                {'I', {" ### ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "}},
                {'J', {"  ###", "   # ", "   # ", "   # ", "   # ", "#  # ", " ##  "}},
                {'K', {"#   #", "#  # ", "# #  ", "##   ", "# #  ", "#  # ", "#   #"}},
                {'L', {"#    ", "#    ", "#    ", "#    ", "#    ", "#    ", "#####"}},
                {'M', {"#   #", "## ##", "# # #", "# # #", "#   #", "#   #", "#   #"}},
                {'N', {"#   #", "#   #", "##  #", "# # #", "#  ##", "#   #", "#   #"}},
                {'O', {" ### ", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "}},
                {'P', {"#### ", "#   #", "#   #", "#### ", "#    ", "#    ", "#    "}},
                {'Q', {" ### ", "#   #", "#   #", "#   #", "# # #", "#  # ", " ## #"}},
                {'R', {"#### ", "#   #", "#   #", "#### ", "# #  ", "#  # ", "#   #"}},
                {'S', {" ####", "#    ", "#    ", " ### ", "    #", "    #", "#### "}},
                {'T', {"#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  "}},
                {'U', {"#   #", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "}},
                {'V', {"#   #", "#   #", "#   #", "#   #", "#   #", " # # ", "  #  "}},
                {'W', {"#   #", "#   #", "#   #", "# # #", "# # #", "# # #", " # # "}},
                {'X', {"#   #", "#   #", " # # ", "  #  ", " # # ", "#   #", "#   #"}},
                {'Y', {"#   #", "#   #", " # # ", "  #  ", "  #  ", "  #  ", "  #  "}},
                {'Z', {"#####", "    #", "   # ", "  #  ", " #   ", "#    ", "#####"}},
                {'.', {"     ", "     ", "     ", "     ", "     ", " ##  ", " ##  "}},
                {',', {"     ", "     ", "     ", "     ", " ##  ", "  #  ", " #   "}},
                {':', {"     ", " ##  ", " ##  ", "     ", " ##  ", " ##  ", "     "}},
                {'-', {"     ", "     ", "     ", "#####", "     ", "     ", "     "}},
                {'+', {"     ", "  #  ", "  #  ", "#####", "  #  ", "  #  ", "     "}},
                {'=', {"     ", "     ", "#####", "     ", "#####", "     ", "     "}},
                {'_', {"     ", "     ", "     ", "     ", "     ", "     ", "#####"}},
                {'/', {"     ", "    #", "   # ", "  #  ", " #   ", "#    ", "     "}},
                {'(', {"   # ", "  #  ", " #   ", " #   ", " #   ", "  #  ", "   # "}},
                {'[', {" ### ", " #   ", " #   ", " #   ", " #   ", " #   ", " ### "}},
                {']', {" ### ", "   # ", "   # ", "   # ", "   # ", "   # ", " ### "}},
                {')', {" #   ", "  #  ", "   # ", "   # ", "   # ", "  #  ", " #   "}},
                {'%', {"##   ", "##  #", "   # ", "  #  ", " #   ", "#  ##", "   ##"}},
                {'?', {" ### ", "#   #", "    #", "   # ", "  #  ", "     ", "  #  "}},
            };
            const auto it = font.find(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
            return it == font.end() ? font.at('?') : it->second;
        }

        std::size_t m_width, m_height;
        std::vector<rgb> m_pixels;
    };
}

#endif
