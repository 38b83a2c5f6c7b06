// An exponential moving average of the weights inside a training loop that
// owns its parameters as raw float buffers (no tensor library involved).
//
// The model is a noisy linear regression trained by SGD with a large step,
// so the raw weights keep jumping around the optimum; their EMA settles
// close to it. Every step updates all parameter tensors in one call.

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <xmerge/xmerge.hpp>

int main()
{
    const std::size_t features = 64;
    std::mt19937 gen(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);

    std::vector<float> truth(features);
    for (auto& t : truth)
    {
        t = normal(gen);
    }

    // Parameters: a weight vector and a bias, as plain buffers.
    std::vector<float> weight(features, 0.0f), bias(1, 0.0f);
    std::vector<float> weight_avg = weight, bias_avg = bias;

    // The averages are updated in place; the parameters are only read.
    xmerge::ema average({xmerge::as_tensor(weight_avg, "weight_ema"), xmerge::as_tensor(bias_avg, "bias_ema")}, 0.99);
    const std::vector<xmerge::const_tensor_ref> params{xmerge::as_tensor(weight), xmerge::as_tensor(bias)};

    const auto loss = [&](const std::vector<float>& w, const std::vector<float>& b)
    {
        double err = 0.0;
        for (std::size_t j = 0; j < features; ++j)
        {
            err += std::pow(static_cast<double>(w[j]) - truth[j], 2);
        }
        return err + std::pow(static_cast<double>(b[0]) - 0.5, 2);
    };

    const float lr = 0.02f;
    std::vector<float> x(features);
    for (int step = 1; step <= 3000; ++step)
    {
        for (auto& xi : x)
        {
            xi = normal(gen);
        }
        float prediction = bias[0], target = 0.5f + normal(gen);  // noisy labels
        for (std::size_t j = 0; j < features; ++j)
        {
            prediction += weight[j] * x[j];
            target += truth[j] * x[j];
        }
        const float g = prediction - target;
        for (std::size_t j = 0; j < features; ++j)
        {
            weight[j] -= lr * g * x[j];
        }
        bias[0] -= lr * g;

        average.update(params);

        if (step % 500 == 0)
        {
            std::printf("step %4d  distance to optimum: raw %.4f  ema %.4f\n", step, loss(weight, bias), loss(weight_avg, bias_avg));
        }
    }
    return loss(weight_avg, bias_avg) < loss(weight, bias) ? 0 : 1;
}
