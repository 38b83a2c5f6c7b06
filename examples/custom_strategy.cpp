// Composing a merge strategy of your own from xmerge's parts.
//
// The strategy: task arithmetic whose merged task vector is clipped element
// by element to +-c and then rescaled to the mean norm of the individual task
// vectors, so that adding tasks does not inflate the update. It needs three
// kinds of part: a custom element-wise function (clipping), per-tensor
// statistics (norms, computed before the element-wise pass), and a weighted
// sum over a run-time number of models. Nothing is computed until evaluate().

#include <cstdio>
#include <random>
#include <vector>

#include <xmerge/xmerge.hpp>

namespace
{
    std::vector<float> random_tensor(std::size_t n, unsigned seed, float center, float spread)
    {
        std::mt19937 gen(seed);
        std::normal_distribution<float> dist(center, spread);
        std::vector<float> v(n);
        for (auto& x : v)
        {
            x = dist(gen);
        }
        return v;
    }

    /// The strategy, generic over the expression types of its inputs.
    template <class Models, class Base>
    xmerge::any_expression clipped_norm_matched_sum(const Models& models, const Base& base, double clip)
    {
        const auto deltas = xmerge::task_vectors(models, base);

        // Custom element-wise part: works on SIMD batches and on plain floats.
        const auto clipped = xmerge::map([](auto d, auto c) { return xmerge::simd::min(xmerge::simd::max(d, -c), c); },
                                         xmerge::sum(deltas), clip);

        // Statistics: the mean norm of the task vectors, and the norm of the clipped sum.
        // A run-time number of terms: any_scalar keeps the type fixed as the sum grows.
        const double inv_k = 1.0 / static_cast<double>(deltas.size());
        xmerge::any_scalar mean_norm = xmerge::norm(deltas[0]) * inv_k;
        for (std::size_t k = 1; k < deltas.size(); ++k)
        {
            mean_norm = mean_norm + xmerge::norm(deltas[k]) * inv_k;
        }
        const auto scale = xmerge::apply([](double target, double actual) { return actual > 0.0 ? target / actual : 0.0; },
                                         mean_norm, xmerge::norm(clipped));

        // Erasing the type keeps the strategy's interface simple.
        return base + scale * clipped;
    }
}

int main()
{
    const std::size_t n = 1 << 20;
    const auto base = random_tensor(n, 1, 0.0f, 1.0f);
    std::vector<std::vector<float>> finetunes;
    for (unsigned k = 0; k < 3; ++k)
    {
        auto m = base;
        const auto delta = random_tensor(n, 10 + k, 0.0f, 0.01f);
        for (std::size_t i = 0; i < n; ++i)
        {
            m[i] += delta[i];
        }
        finetunes.push_back(std::move(m));
    }

    const auto base_leaf = xmerge::input(base, "base");
    const auto models = xmerge::inputs(finetunes);
    const auto merged = clipped_norm_matched_sum(models, base_leaf, 0.02);

    xmerge::thread_pool pool;  // every hardware thread
    xmerge::eval_options options;
    options.threads = 0;
    options.exec = &pool;

    std::vector<float> out;
    xmerge::evaluate(merged, out, options);

    // Check the defining property: the merged update has the mean task-vector norm.
    const auto update = xmerge::input(out, "merged") - base_leaf;
    double mean = 0.0;
    for (const auto& m : models)
    {
        mean += xmerge::value_of(xmerge::norm(m - base_leaf), options) / static_cast<double>(models.size());
    }
    const double got = xmerge::value_of(xmerge::norm(update), options);
    std::printf("mean task-vector norm %.6f, merged update norm %.6f\n", mean, got);
    return std::abs(got - mean) <= 1e-4 * mean ? 0 : 1;
}
