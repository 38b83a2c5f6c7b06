#include <benchmark/benchmark.h>

#include <xmerge/simd/batch.hpp>

int main(int argc, char** argv)
{
    benchmark::AddCustomContext("xmerge_simd_lanes", std::to_string(xmerge::simd::lanes));
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
    {
        return 1;
    }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
