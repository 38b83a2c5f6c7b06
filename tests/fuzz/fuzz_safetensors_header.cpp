// libFuzzer target for the safetensors header parser: any input must either
// parse into byte ranges inside the input, or throw io_error. Anything else
// (another exception, a crash, an out-of-bounds read under ASan) is a bug.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include <xmerge/io/safetensors.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    try
    {
        const auto h = xmerge::io::parse_header(data, size, "fuzz");
        std::size_t covered = 0;
        for (const auto& t : h.tensors)
        {
            if (t.begin != covered || t.end < t.begin || h.data_offset + t.end > size)
            {
                std::abort();
            }
            covered = t.end;
        }
        if (covered != h.data_size || h.data_offset + h.data_size != size)
        {
            std::abort();
        }
    }
    catch (const xmerge::io_error&)
    {
    }
    return 0;
}
