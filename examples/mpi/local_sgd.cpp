// Local SGD across MPI ranks: every rank trains the same softmax classifier
// on its own data shard (each shard favours a few classes) and every k steps
// the ranks replace their parameters by the mean over all ranks
// (xmerge::mpi::average). An exponential moving average of the averaged
// model is kept sharded across the ranks (each holds 1/N of it) and gathered
// at the end.
//
//   mpirun -np 4 mpi_local_sgd [--steps 400] [--every 10] [--bf16] [--check]
//
// --check replays the whole run (all N workers, the averages, the EMA) in
// this one process and compares it with what the ranks computed.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <mpi.h>

#include <xmerge/mpi/average.hpp>
#include <xmerge/mpi/sharded_ema.hpp>
#include <xmerge/online/ema.hpp>

namespace
{
    constexpr std::size_t features = 32;
    constexpr std::size_t classes = 10;
    constexpr std::size_t batch = 16;
    constexpr float learning_rate = 0.05f;
    constexpr double ema_beta = 0.9;

    struct sample
    {
        float x[features];
        std::size_t label;
    };

    // Class centres shared by every shard.
    std::vector<float> centres()
    {
        std::mt19937 gen(2024);
        std::normal_distribution<float> normal(0.0f, 1.0f);
        std::vector<float> c(classes * features);
        for (auto& v : c)
        {
            v = normal(gen);
        }
        return c;
    }

    // The data stream of one shard: with several workers, 70% of the labels come from the shard's own classes.
    class shard
    {
    public:
        shard(int worker, int workers) : m_gen(static_cast<unsigned>(100 + worker)), m_worker(worker), m_workers(workers), m_centres(centres()) {}

        sample next()
        {
            sample s;
            std::uniform_int_distribution<std::size_t> any(0, classes - 1);
            std::uniform_real_distribution<float> coin(0.0f, 1.0f);
            std::size_t label = any(m_gen);
            if (m_workers > 1 && coin(m_gen) < 0.7f)
            {
                while (label % static_cast<std::size_t>(m_workers) != static_cast<std::size_t>(m_worker))
                {
                    label = (label + 1) % classes;
                }
            }
            s.label = label;
            std::normal_distribution<float> noise(0.0f, 1.5f);
            for (std::size_t j = 0; j < features; ++j)
            {
                s.x[j] = m_centres[label * features + j] + noise(m_gen);
            }
            return s;
        }

    private:
        std::mt19937 m_gen;
        int m_worker;
        int m_workers;
        std::vector<float> m_centres;
    };

    // Softmax regression: weight [classes, features] and bias [classes].
    struct classifier
    {
        std::vector<float> weight = std::vector<float>(classes * features, 0.0f);
        std::vector<float> bias = std::vector<float>(classes, 0.0f);

        std::vector<xmerge::tensor_ref> tensors()
        {
            return {xmerge::tensor_ref(weight.data(), xmerge::dtype::float32, {classes, features}, "weight"),
                    xmerge::tensor_ref(bias.data(), xmerge::dtype::float32, {classes}, "bias")};
        }
        std::vector<xmerge::const_tensor_ref> const_tensors()
        {
            const auto t = tensors();
            return {t.begin(), t.end()};
        }

        void logits(const sample& s, float* out) const
        {
            for (std::size_t c = 0; c < classes; ++c)
            {
                float z = bias[c];
                for (std::size_t j = 0; j < features; ++j)
                {
                    z += weight[c * features + j] * s.x[j];
                }
                out[c] = z;
            }
        }

        // One SGD step on a mini-batch of the cross-entropy loss.
        void step(shard& data)
        {
            std::vector<float> gw(weight.size(), 0.0f), gb(bias.size(), 0.0f);
            float z[classes];
            for (std::size_t n = 0; n < batch; ++n)
            {
                const sample s = data.next();
                logits(s, z);
                const float top = *std::max_element(z, z + classes);
                float total = 0.0f;
                for (float& v : z)
                {
                    v = std::exp(v - top);
                    total += v;
                }
                for (std::size_t c = 0; c < classes; ++c)
                {
                    const float g = z[c] / total - (c == s.label ? 1.0f : 0.0f);
                    gb[c] += g;
                    for (std::size_t j = 0; j < features; ++j)
                    {
                        gw[c * features + j] += g * s.x[j];
                    }
                }
            }
            const float scale = learning_rate / static_cast<float>(batch);
            for (std::size_t i = 0; i < weight.size(); ++i)
            {
                weight[i] -= scale * gw[i];
            }
            for (std::size_t c = 0; c < classes; ++c)
            {
                bias[c] -= scale * gb[c];
            }
        }

        double accuracy(const std::vector<sample>& test) const
        {
            std::size_t right = 0;
            float z[classes];
            for (const auto& s : test)
            {
                logits(s, z);
                right += static_cast<std::size_t>(std::max_element(z, z + classes) - z) == s.label;
            }
            return static_cast<double>(right) / static_cast<double>(test.size());
        }
    };

    // A held-out set with uniform labels.
    std::vector<sample> test_set()
    {
        std::vector<sample> test;
        shard uniform(-1, 1);  // one worker: uniform labels, a seed no training shard uses
        for (int i = 0; i < 2000; ++i)
        {
            test.push_back(uniform.next());
        }
        return test;
    }

    struct run_options
    {
        int steps = 400;
        int every = 10;
        bool bf16 = false;
        bool check = false;
    };

    // The same training, all workers in this process; the mean is summed in worker order.
    void replay(const run_options& o, int workers, classifier& mean, classifier& ema_model)
    {
        std::vector<classifier> models(static_cast<std::size_t>(workers));
        std::vector<shard> shards;
        for (int w = 0; w < workers; ++w)
        {
            shards.emplace_back(w, workers);
        }
        xmerge::ema ema(ema_model.tensors(), ema_beta);
        ema.reset(models[0].const_tensors());
        for (int step = 1; step <= o.steps; ++step)
        {
            for (int w = 0; w < workers; ++w)
            {
                models[static_cast<std::size_t>(w)].step(shards[static_cast<std::size_t>(w)]);
            }
            if (step % o.every == 0)
            {
                // bfloat16 on the wire: each worker's values are rounded, summed in float32, and the sum rounded.
                const auto wire = [&](float v) { return o.bf16 ? xmerge::bf16_bits_to_float(xmerge::float_to_bf16_bits(v)) : v; };
                classifier sum;
                const float c = 1.0f / static_cast<float>(workers);
                for (auto& m : models)
                {
                    for (std::size_t i = 0; i < sum.weight.size(); ++i)
                    {
                        sum.weight[i] += c * wire(m.weight[i]);
                    }
                    for (std::size_t i = 0; i < sum.bias.size(); ++i)
                    {
                        sum.bias[i] += c * wire(m.bias[i]);
                    }
                }
                for (float& v : sum.weight)
                {
                    v = wire(v);
                }
                for (float& v : sum.bias)
                {
                    v = wire(v);
                }
                for (auto& m : models)
                {
                    m = sum;
                }
                ema.update(models[0].const_tensors());
            }
        }
        mean = models[0];
    }

    double largest_difference(const classifier& a, const classifier& b)
    {
        double d = 0.0;
        for (std::size_t i = 0; i < a.weight.size(); ++i)
        {
            d = std::max(d, std::fabs(static_cast<double>(a.weight[i]) - b.weight[i]));
        }
        for (std::size_t i = 0; i < a.bias.size(); ++i)
        {
            d = std::max(d, std::fabs(static_cast<double>(a.bias[i]) - b.bias[i]));
        }
        return d;
    }
}

int main(int argc, char** argv)
{
    MPI_Init(&argc, &argv);
    int rank = 0, ranks = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);

    run_options o;
    for (int i = 1; i < argc; ++i)
    {
        const std::string a = argv[i];
        if (a == "--steps" && i + 1 < argc)
        {
            o.steps = std::atoi(argv[++i]);
        }
        else if (a == "--every" && i + 1 < argc)
        {
            o.every = std::max(1, std::atoi(argv[++i]));
        }
        else if (a == "--bf16")
        {
            o.bf16 = true;
        }
        else if (a == "--check")
        {
            o.check = true;
        }
    }

    int status = 0;
    try
    {
        const std::vector<sample> test = test_set();
        classifier model;
        shard data(rank, ranks);
        xmerge::mpi::average_options avg;
        avg.wire = o.bf16 ? xmerge::mpi::wire_format::bfloat16 : xmerge::mpi::wire_format::float32;
        xmerge::mpi::sharded_ema ema(model.const_tensors(), ema_beta, MPI_COMM_WORLD);
        double local_accuracy = 0.0;
        for (int step = 1; step <= o.steps; ++step)
        {
            model.step(data);
            if (step % o.every == 0)
            {
                local_accuracy = model.accuracy(test);
                xmerge::mpi::average(model.tensors(), MPI_COMM_WORLD, avg);
                ema.update(model.const_tensors());  // the ranks now hold the same parameters
            }
            if (rank == 0 && step % (o.steps / 4 > 0 ? o.steps / 4 : 1) == 0)
            {
                std::printf("step %4d  rank 0 before averaging %.3f  averaged %.3f\n", step, local_accuracy, model.accuracy(test));
            }
        }
        classifier averaged_ema;
        ema.gather(averaged_ema.tensors());
        if (rank == 0)
        {
            std::printf("%d ranks, averaging every %d steps (%s): averaged model %.3f, EMA of it %.3f on held-out data\n", ranks, o.every,
                        o.bf16 ? "bfloat16 wire" : "float32 wire", model.accuracy(test), averaged_ema.accuracy(test));
        }
        if (o.check)
        {
            classifier mean, ema_model;
            replay(o, ranks, mean, ema_model);
            // MPI may sum the float32 wire in another order than the replay: allow float32 rounding, grown over the run.
            const double tolerance = 1e-4;
            const double d_model = largest_difference(mean, model), d_ema = largest_difference(ema_model, averaged_ema);
            if (rank == 0)
            {
                std::printf("check against one process: largest difference %.3g (parameters), %.3g (EMA), tolerance %.3g\n", d_model, d_ema, tolerance);
            }
            if (!(d_model <= tolerance && d_ema <= tolerance))
            {
                std::fprintf(stderr, "rank %d: the distributed run differs from the single-process replay\n", rank);
                status = 1;
            }
        }
    }
    catch (const std::exception& e)
    {
        std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    int worst = 0;
    MPI_Allreduce(&status, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return worst;
}
