// RegMean and RegMean++ on a small multi-layer perceptron.
//
// Three models share a base MLP (24 -> 32 -> 32 -> 8, ReLU) and were each
// moved away from it for their own task; each task's inputs live near its
// own 6-dimensional subspace. A merged model should reproduce every model
// on that model's data. RegMean merges each Linear weight so that, on every
// model's recorded layer inputs, the merged layer's outputs are as close as
// possible to that model's (a least-squares solve with Gram matrices
// X^T X / n); biases are averaged.
//
// RegMean computes the Gram matrices of every layer from each model's own
// forward pass. RegMean++ merges layer by layer instead: the inputs of
// layer l are produced by the layers already merged, which is what the
// merged model will actually feed layer l.
//
// What to check in the output: both RegMean variants reproduce the models
// far better than averaging; their first layers are identical (both see the
// raw inputs); and the merged first layer zeroes the gradient of the summed
// regression loss of that layer.

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <xmerge/linalg.hpp>

namespace
{
    struct layer
    {
        std::size_t in, out;
        std::vector<float> weight;  // [out, in]
        std::vector<float> bias;    // [out]
    };

    using mlp = std::vector<layer>;

    // rows x in activations through one layer, ReLU on all but the last
    std::vector<float> forward_layer(const layer& l, const std::vector<float>& x, std::size_t rows, bool relu)
    {
        std::vector<float> y(rows * l.out);
        for (std::size_t r = 0; r < rows; ++r)
        {
            for (std::size_t o = 0; o < l.out; ++o)
            {
                float v = l.bias[o];
                for (std::size_t i = 0; i < l.in; ++i)
                {
                    v += l.weight[o * l.in + i] * x[r * l.in + i];
                }
                y[r * l.out + o] = relu && v < 0.0f ? 0.0f : v;
            }
        }
        return y;
    }

    std::vector<float> forward(const mlp& net, std::vector<float> x, std::size_t rows)
    {
        for (std::size_t l = 0; l < net.size(); ++l)
        {
            x = forward_layer(net[l], x, rows, l + 1 < net.size());
        }
        return x;
    }

    double mean_squared_difference(const std::vector<float>& a, const std::vector<float>& b)
    {
        double s = 0.0;
        for (std::size_t i = 0; i < a.size(); ++i)
        {
            s += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
        }
        return s / static_cast<double>(a.size());
    }

    xmerge::dense_matrix<float> gram_of(const std::vector<float>& x, std::size_t rows, std::size_t in)
    {
        xmerge::gram_accumulator acc(in);
        acc.add(xmerge::as_tensor(x, xmerge::shape_type{rows, in}));
        return acc.gram();
    }

    // Merges layer l of the models: RegMean for the weight, the mean for the bias.
    layer merge_layer(const std::vector<mlp>& models, std::size_t l, const std::vector<xmerge::dense_matrix<float>>& grams)
    {
        const std::size_t in = models[0][l].in, out = models[0][l].out;
        xmerge::expression_list<xmerge::input_node> weights, biases, gram_inputs;
        for (std::size_t k = 0; k < models.size(); ++k)
        {
            weights.push_back(xmerge::input(xmerge::as_tensor(models[k][l].weight, xmerge::shape_type{out, in}, "weight")));
            biases.push_back(xmerge::input(models[k][l].bias, "bias"));
            gram_inputs.push_back(xmerge::input(grams[k]));
        }
        layer merged{in, out, {}, {}};
        // A ReLU unit that no task ever activates would leave a zero row in every
        // Gram matrix of the next layer; the ridge keeps the solve defined then.
        xmerge::evaluate(xmerge::regmean(weights, gram_inputs, {/*reduce_non_diagonal_ratio=*/0.95, /*ridge=*/1e-6}), merged.weight);
        xmerge::evaluate(xmerge::regmean(biases, {}), merged.bias);  // no Gram matrix: the mean
        return merged;
    }
}

int main()
{
    const std::vector<std::size_t> widths{24, 32, 32, 8};
    const std::size_t tasks = 3, rows = 512, subspace = 6;
    std::mt19937 gen(2024);
    std::normal_distribution<float> normal(0.0f, 1.0f);

    // The base model and three fine-tuned copies.
    mlp base;
    for (std::size_t l = 0; l + 1 < widths.size(); ++l)
    {
        layer L{widths[l], widths[l + 1], std::vector<float>(widths[l] * widths[l + 1]), std::vector<float>(widths[l + 1])};
        for (auto& w : L.weight)
        {
            w = normal(gen) / std::sqrt(static_cast<float>(L.in));
        }
        for (auto& b : L.bias)
        {
            b = 0.1f * normal(gen);
        }
        base.push_back(L);
    }
    std::vector<mlp> models(tasks, base);
    for (auto& m : models)
    {
        for (auto& L : m)
        {
            for (auto& w : L.weight)
            {
                w += 0.6f * normal(gen) / std::sqrt(static_cast<float>(L.in));
            }
            for (auto& b : L.bias)
            {
                b += 0.05f * normal(gen);
            }
        }
    }

    // Each task's inputs: a random 6-dimensional subspace plus a little noise.
    std::vector<std::vector<float>> data(tasks);
    for (auto& x : data)
    {
        std::vector<float> basis(subspace * widths[0]);
        for (auto& v : basis)
        {
            v = normal(gen);
        }
        x.assign(rows * widths[0], 0.0f);
        for (std::size_t r = 0; r < rows; ++r)
        {
            for (std::size_t s = 0; s < subspace; ++s)
            {
                const float z = normal(gen);
                for (std::size_t i = 0; i < widths[0]; ++i)
                {
                    x[r * widths[0] + i] += z * basis[s * widths[0] + i] / std::sqrt(static_cast<float>(subspace));
                }
            }
            for (std::size_t i = 0; i < widths[0]; ++i)
            {
                x[r * widths[0] + i] += 0.05f * normal(gen);
            }
        }
    }
    const std::size_t layers = base.size();

    // Plain average of every parameter.
    mlp average = base;
    for (std::size_t l = 0; l < layers; ++l)
    {
        xmerge::expression_list<xmerge::input_node> w, b;
        for (const auto& m : models)
        {
            w.push_back(xmerge::input(m[l].weight, "weight"));
            b.push_back(xmerge::input(m[l].bias, "bias"));
        }
        xmerge::evaluate(xmerge::uniform_soup(w), average[l].weight);
        xmerge::evaluate(xmerge::uniform_soup(b), average[l].bias);
    }

    // RegMean: Gram matrices of every layer from each model's own activations.
    mlp regmean;
    {
        std::vector<std::vector<xmerge::dense_matrix<float>>> grams(layers);
        for (std::size_t k = 0; k < tasks; ++k)
        {
            std::vector<float> h = data[k];
            for (std::size_t l = 0; l < layers; ++l)
            {
                grams[l].push_back(gram_of(h, rows, models[k][l].in));
                h = forward_layer(models[k][l], h, rows, l + 1 < layers);
            }
        }
        for (std::size_t l = 0; l < layers; ++l)
        {
            regmean.push_back(merge_layer(models, l, grams[l]));
        }
    }

    // RegMean++: layer l's Gram matrices from the inputs the merged layers produce.
    mlp regmean_pp;
    {
        std::vector<std::vector<float>> h = data;  // each task's inputs to the current layer
        for (std::size_t l = 0; l < layers; ++l)
        {
            std::vector<xmerge::dense_matrix<float>> grams;
            for (std::size_t k = 0; k < tasks; ++k)
            {
                grams.push_back(gram_of(h[k], rows, widths[l]));
            }
            regmean_pp.push_back(merge_layer(models, l, grams));
            for (std::size_t k = 0; k < tasks; ++k)
            {
                h[k] = forward_layer(regmean_pp[l], h[k], rows, l + 1 < layers);
            }
        }
    }

    std::printf("Merging 3 models of a 24-32-32-8 MLP, %zu examples per task.\n", rows);
    std::printf("Mean squared difference from each model's outputs on its own task's inputs:\n\n");
    std::printf("%-12s %10s %10s %10s %10s\n", "merge", "task 0", "task 1", "task 2", "mean");
    const std::pair<const char*, const mlp*> merges[] = {{"base", &base}, {"average", &average}, {"RegMean", &regmean}, {"RegMean++", &regmean_pp}};
    for (const auto& [name, net] : merges)
    {
        double total = 0.0;
        std::printf("%-12s", name);
        for (std::size_t k = 0; k < tasks; ++k)
        {
            const double e = mean_squared_difference(forward(*net, data[k], rows), forward(models[k], data[k], rows));
            total += e;
            std::printf(" %10.5f", e);
        }
        std::printf(" %10.5f\n", total / static_cast<double>(tasks));
    }

    double first_layer_difference = 0.0;
    for (std::size_t i = 0; i < regmean[0].weight.size(); ++i)
    {
        first_layer_difference = std::max(first_layer_difference, std::fabs(static_cast<double>(regmean[0].weight[i]) - regmean_pp[0].weight[i]));
    }
    std::printf("\nLargest difference between the first layers of RegMean and RegMean++: %g\n", first_layer_difference);

    // The first layer minimizes sum_k ||X_k W^T - X_k W_k^T||^2 / n (for a = 1): its gradient
    // sum_k (W - W_k) G_k vanishes. Merge it again with a = 1 and measure.
    {
        std::vector<xmerge::dense_matrix<float>> grams;
        for (std::size_t k = 0; k < tasks; ++k)
        {
            grams.push_back(gram_of(data[k], rows, widths[0]));
        }
        xmerge::expression_list<xmerge::input_node> weights, gram_inputs;
        for (std::size_t k = 0; k < tasks; ++k)
        {
            weights.push_back(xmerge::input(xmerge::as_tensor(models[k][0].weight, xmerge::shape_type{widths[1], widths[0]}, "weight")));
            gram_inputs.push_back(xmerge::input(grams[k]));
        }
        std::vector<float> w;
        xmerge::evaluate(xmerge::regmean(weights, gram_inputs, {1.0, 0.0, xmerge::linalg_precision::float64}), w);
        double gradient = 0.0, scale = 0.0;
        for (std::size_t o = 0; o < widths[1]; ++o)
        {
            for (std::size_t j = 0; j < widths[0]; ++j)
            {
                double g = 0.0, s = 0.0;
                for (std::size_t k = 0; k < tasks; ++k)
                {
                    for (std::size_t i = 0; i < widths[0]; ++i)
                    {
                        const double d = static_cast<double>(w[o * widths[0] + i]) - models[k][0].weight[o * widths[0] + i];
                        g += d * grams[k](i, j);
                        s += std::fabs(static_cast<double>(models[k][0].weight[o * widths[0] + i]) * grams[k](i, j));
                    }
                }
                gradient += g * g;
                scale += s * s;
            }
        }
        const double relative = std::sqrt(gradient / scale);
        std::printf("Relative gradient of the first layer's regression loss at the RegMean solution: %.2e\n", relative);
        if (!(relative < 1e-5))
        {
            std::fprintf(stderr, "RegMean did not reach the least-squares optimum\n");
            return 1;
        }
    }
    return 0;
}
