// libFuzzer target for recipes, end to end: the input is a recipe's YAML;
// it is parsed, bound to the small checkpoints of the mergekit conformance
// set (model paths resolve from that directory, as mergekit resolves them
// from the current one), planned and, when accepted, merged into a scratch
// directory. Any outcome but a merge or an xmerge::merge_error (another
// exception, a crash, undefined behaviour or a leak under the sanitizers, an
// output or staging directory left behind after a refusal) is a bug.
//
//   XMERGE_FUZZ_MODELS=tests/data/conformance fuzz_recipe [libFuzzer flags] CORPUS...

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include <xmerge/methods/builtin.hpp>
#include <xmerge/recipe/recipe_job.hpp>

namespace
{
    namespace fs = std::filesystem;

    fs::path g_scratch;

    void fail(const char* what)
    {
        std::fprintf(stderr, "fuzz_recipe: %s\n", what);
        std::abort();
    }
}

extern "C" int LLVMFuzzerInitialize(int*, char***)
{
    const char* models = std::getenv("XMERGE_FUZZ_MODELS");
    if (models == nullptr || ::chdir(models) != 0)
    {
        fail("set XMERGE_FUZZ_MODELS to the conformance data directory (tests/data/conformance)");
    }
    g_scratch = fs::temp_directory_path() / ("xmerge-fuzz-recipe-" + std::to_string(::getpid()));
    fs::remove_all(g_scratch);
    fs::create_directories(g_scratch);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    static const xmerge::method_registry registry = xmerge::builtin_methods();
    const fs::path recipe = g_scratch / "recipe.yml";
    const fs::path out = g_scratch / "out";
    {
        std::ofstream f(recipe, std::ios::binary | std::ios::trunc);
        f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    }
    bool merged = false;
    try
    {
        xmerge::recipe_job_options options;
        options.merge.threads = 1;
        xmerge::recipe_job job(recipe.string(), out.string(), registry, options);
        job.run();
        merged = true;
    }
    catch (const xmerge::merge_error&)
    {
    }
    // A refusal leaves nothing; a merge leaves exactly the output.
    std::size_t entries = 0;
    for (const auto& e : fs::directory_iterator(g_scratch))
    {
        (void)e;
        ++entries;
    }
    if (entries != (merged ? 2u : 1u) || fs::exists(out) != merged)
    {
        fail("the scratch directory holds something the run should not have left");
    }
    fs::remove_all(out);
    return 0;
}
