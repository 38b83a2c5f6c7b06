// The strategy built in docs/guide-custom-strategy.md: DARE-sparsified task
// vectors, TIES sign election, scaled by a Model Stock-style angle ratio.

#include <cstdio>
#include <random>
#include <vector>

#include <xmerge/xmerge.hpp>

using namespace xmerge;

namespace
{
    std::vector<float> noise(std::size_t n, unsigned seed, float scale)
    {
        std::mt19937 gen(seed);
        std::normal_distribution<float> dist(0.0f, scale);
        std::vector<float> v(n);
        for (auto& x : v)
        {
            x = dist(gen);
        }
        return v;
    }

    any_expression dare_ties_stock(const expression_list<input_node>& models, const input_node& base, double p, std::uint64_t seed,
                                   const std::string& tensor)
    {
        const auto deltas = task_vectors(models, base);

        // 2. DARE: keep each entry with probability p, rescale by 1 / p
        const auto stream = simd::hash_name(tensor);
        std::size_t k = 0;
        const auto pruned = transform(deltas, [&](const auto& d)
                                      { return d * bernoulli_mask(d, p, simd::make_random_key(seed, stream, k++)) * (1.0 / p); });

        // 3. TIES sign election with mergekit's divisor
        election_options election;
        election.consensus = sign_consensus::sum;
        election.divisor = merge_divisor::weights;
        const auto merged_delta = elected_sum(pruned, std::vector<double>(models.size(), 1.0), election);

        // 4. scale by the Model Stock ratio of the first two task vectors' angle
        const auto cos01 = dot(deltas[0], deltas[1]) / (norm(deltas[0]) * norm(deltas[1]));
        const auto ratio = apply([](double c) { return c > 0 ? 2 * c / (1 + c) : 0.0; }, cos01);
        return base + ratio * merged_delta;
    }
}

int main()
{
    const std::size_t n = 1 << 18;
    const auto base_values = noise(n, 1, 0.02f);
    const auto shared_direction = noise(n, 2, 0.002f);
    std::vector<std::vector<float>> finetuned;
    for (unsigned m = 0; m < 3; ++m)
    {
        auto own = noise(n, 10 + m, 0.002f);
        for (std::size_t i = 0; i < n; ++i)
        {
            own[i] += base_values[i] + shared_direction[i];
        }
        finetuned.push_back(std::move(own));
    }

    const auto base = input(base_values, "layers.0.mlp.weight");
    const auto models = inputs(finetuned);
    const any_expression merged = dare_ties_stock(models, base, 0.3, 42, "layers.0.mlp.weight");

    thread_pool pool;
    eval_options options;
    options.threads = 0;
    options.exec = &pool;
    std::vector<bfloat16> output(n);
    evaluate(merged, as_tensor(output), options);

    // 6. registered, the strategy is available by name
    method_info mine;
    mine.name = "dare_ties_stock";
    mine.needs_base = true;
    mine.parameters = {{"density", parameter_scope::global, 0.3, "keep probability"}};
    mine.build = [](const method_inputs& in, const parameters& p) -> any_expression
    { return dare_ties_stock(in.models, *in.base, p.number("density"), in.seed, in.tensor); };
    method_registry methods = builtin_methods();
    methods.add(mine);

    method_inputs in;
    in.tensor = "layers.0.mlp.weight";
    in.base = base;
    in.models = models;
    in.seed = 42;
    std::vector<bfloat16> by_name(n);
    evaluate(methods.build("dare_ties_stock", in, {}), as_tensor(by_name), options);

    std::size_t same = 0;
    for (std::size_t i = 0; i < n; ++i)
    {
        same += output[i] == by_name[i];
    }
    const double update = value_of(norm(input(output) - base), options);
    std::printf("merged update norm %.5f; by name identical in %zu of %zu elements\n", update, same, n);
    return same == n && update > 0.0 ? 0 : 1;
}
