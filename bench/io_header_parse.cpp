// Parsing safetensors headers of 10 k, 100 k and 1 M tensors: parse_header
// (validation included) next to nlohmann::json::accept on the same text,
// which only scans the JSON and is the floor any parse pays.
#include <cstdint>
#include <string>

#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>

#include <xmerge/io/safetensors.hpp>

namespace
{
    // A file image of `count` F32 tensors of 4 elements, named like a transformer's.
    const std::string& image(std::size_t count)
    {
        static std::string cached;
        static std::size_t cached_count = 0;
        if (cached_count != count)
        {
            std::string header = "{\"__metadata__\":{\"format\":\"pt\"}";
            for (std::size_t i = 0; i < count; ++i)
            {
                header += ",\"model.layers." + std::to_string(i / 10) + ".mlp.proj_" + std::to_string(i % 10) + ".weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":["
                          + std::to_string(16 * i) + "," + std::to_string(16 * i + 16) + "]}";
            }
            header += "}";
            cached.assign(8, '\0');
            for (int b = 0; b < 8; ++b)
            {
                cached[static_cast<std::size_t>(b)] = static_cast<char>((header.size() >> (8 * b)) & 0xff);
            }
            cached += header + std::string(16 * count, '\0');
            cached_count = count;
        }
        return cached;
    }

    void header_counters(benchmark::State& state, std::size_t count)
    {
        state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * count));
        state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * (image(count).size() - 16 * count)));
    }

    void BM_parse_header(benchmark::State& state)
    {
        const auto count = static_cast<std::size_t>(state.range(0));
        const std::string& bytes = image(count);
        for (auto _ : state)
        {
            auto h = xmerge::io::parse_header(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), "bench.safetensors");
            benchmark::DoNotOptimize(h.tensors.data());
        }
        header_counters(state, count);
    }

    void BM_json_accept(benchmark::State& state)
    {
        const auto count = static_cast<std::size_t>(state.range(0));
        const std::string& bytes = image(count);
        const char* text = bytes.data() + 8;
        const std::size_t n = bytes.size() - 8 - 16 * count;
        for (auto _ : state)
        {
            benchmark::DoNotOptimize(nlohmann::json::accept(text, text + n));
        }
        header_counters(state, count);
    }
}

BENCHMARK(BM_json_accept)->Arg(10000)->Arg(100000)->Arg(1000000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_parse_header)->Arg(10000)->Arg(100000)->Arg(1000000)->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
