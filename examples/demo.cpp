// Merges a small synthetic model family in memory with every method of the
// registry that applies, and prints what it did and how fast.
//
//   demo [--size ELEMENTS] [--models K] [--threads T]

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <xmerge/xmerge.hpp>

namespace
{
    struct tensor_family
    {
        std::string name;
        std::vector<xmerge::bfloat16> base;
        std::vector<std::vector<xmerge::bfloat16>> models;
    };

    // A base tensor and K fine-tunes, each the base plus a small task-specific update.
    tensor_family make_family(const std::string& name, std::size_t n, std::size_t k, unsigned seed)
    {
        std::mt19937 gen(seed);
        std::normal_distribution<float> weight(0.0f, 0.02f), update(0.0f, 0.002f);
        tensor_family f{name, std::vector<xmerge::bfloat16>(n), {}};
        std::vector<float> base(n);
        for (std::size_t i = 0; i < n; ++i)
        {
            base[i] = weight(gen);
            f.base[i] = xmerge::bfloat16(base[i]);
        }
        for (std::size_t m = 0; m < k; ++m)
        {
            std::vector<xmerge::bfloat16> model(n);
            for (std::size_t i = 0; i < n; ++i)
            {
                model[i] = xmerge::bfloat16(base[i] + update(gen));
            }
            f.models.push_back(std::move(model));
        }
        return f;
    }
}

int main(int argc, char** argv)
{
    std::size_t size = 1 << 20, k = 3, threads = 0;
    for (int i = 1; i + 1 < argc; i += 2)
    {
        const std::string flag = argv[i];
        const std::size_t value = std::strtoull(argv[i + 1], nullptr, 10);
        if (flag == "--size")
        {
            size = value;
        }
        else if (flag == "--models")
        {
            k = value;
        }
        else if (flag == "--threads")
        {
            threads = value;
        }
        else
        {
            std::fprintf(stderr, "usage: demo [--size ELEMENTS] [--models K] [--threads T]\n");
            return 2;
        }
    }

    // A handful of tensors shaped like one transformer block.
    std::vector<tensor_family> tensors;
    tensors.push_back(make_family("attn.qkv.weight", 3 * size / 4, k, 1));
    tensors.push_back(make_family("attn.out.weight", size / 4, k, 2));
    tensors.push_back(make_family("mlp.up.weight", size, k, 3));
    tensors.push_back(make_family("mlp.down.weight", size, k, 4));
    tensors.push_back(make_family("norm.weight", 1024, k, 5));

    xmerge::thread_pool pool(threads);
    xmerge::eval_options options;
    options.threads = 0;
    options.exec = &pool;

    const xmerge::method_registry registry = xmerge::builtin_methods();
    std::printf("xmerge demo: %zu tensors, %zu fine-tunes of one base, bfloat16, %zu threads\n", tensors.size(), k, pool.concurrency());
    for (const std::string method : {"linear", "task_arithmetic"})
    {
        std::size_t bytes = 0;
        double seconds = 0.0, checksum = 0.0;
        for (const auto& t : tensors)
        {
            xmerge::method_inputs in;
            in.tensor = t.name;
            in.base = xmerge::input(t.base, t.name + " (base)");
            in.models = xmerge::inputs(t.models, t.name + " model ");
            xmerge::parameters p{{"weight", 1.0}};
            if (method == "task_arithmetic")
            {
                p.set("weight", 1.0 / static_cast<double>(k));
                p.set("lambda", 1.5);
            }
            std::vector<xmerge::bfloat16> out(t.base.size());
            const auto start = std::chrono::steady_clock::now();
            xmerge::evaluate(registry.build(method, in, p), xmerge::as_tensor(out), options);
            seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            bytes += (k + (method == "task_arithmetic" ? 2 : 1)) * out.size() * sizeof(xmerge::bfloat16);
            checksum += xmerge::value_of(xmerge::norm(xmerge::input(out)), options);
        }
        std::printf("  %-16s %8.1f MB in %7.2f ms  %6.2f GB/s  (sum of output norms %.4f)\n", method.c_str(), bytes / 1e6, seconds * 1e3,
                    bytes / seconds / 1e9, checksum);
    }
    return 0;
}
