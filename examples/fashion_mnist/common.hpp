// Fashion-MNIST experiments: data, tasks, the network, training and evaluation.
#ifndef XMERGE_EXAMPLES_FASHION_MNIST_COMMON_HPP
#define XMERGE_EXAMPLES_FASHION_MNIST_COMMON_HPP

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/torch.h>

#include <xmerge/interop/torch.hpp>
#include <xmerge/online/diagonal_fisher.hpp>
#include <xmerge/search.hpp>

#include "idx.hpp"

namespace fmnist
{
    /// Sizes, schedules and seeds of a run.
    struct settings
    {
        std::string data_dir = "/usr/share/datasets/fashion-mnist";
        std::string out_dir = ".";
        /// The first train_size training images train, the last val_size validate.
        std::int64_t train_size = 50000;
        std::int64_t val_size = 5000;
        std::int64_t test_size = 10000;
        std::int64_t hidden = 512;
        int base_epochs = 3;
        int finetune_epochs = 2;
        int scratch_epochs = 6;
        std::int64_t batch = 128;
        double base_lr = 0.05;
        double finetune_lr = 0.01;
        /// torch's intra-op threads (results are reproducible for a fixed count).
        int threads = 1;
        std::uint64_t seed = 0;
        bool quick = false;
    };

    /// The reduced run of the tests: a data subset, a narrower network, fewer steps.
    inline settings quick_settings(settings s)
    {
        s.train_size = 12000;
        s.val_size = 2000;
        s.test_size = 2000;
        s.hidden = 128;
        s.base_epochs = 3;
        s.finetune_epochs = 2;
        s.scratch_epochs = 4;
        s.quick = true;
        return s;
    }

    /// --data DIR, --out DIR, --threads N, --seed N, --quick; XMERGE_FASHION_MNIST overrides the data folder.
    inline settings parse_args(int argc, char** argv)
    {
        settings s;
        if (const char* env = std::getenv("XMERGE_FASHION_MNIST"))
        {
            s.data_dir = env;
        }
        bool quick = false;
        for (int i = 1; i < argc; ++i)
        {
            const std::string a = argv[i];
            auto value = [&]() -> std::string
            {
                if (i + 1 >= argc)
                {
                    throw std::invalid_argument(a + " needs a value");
                }
                return argv[++i];
            };
            if (a == "--data")
                s.data_dir = value();
            else if (a == "--out")
                s.out_dir = value();
            else if (a == "--threads")
                s.threads = std::stoi(value());
            else if (a == "--seed")
                s.seed = std::stoull(value());
            else if (a == "--quick")
                quick = true;
            else
                throw std::invalid_argument("unknown option " + a + " (known: --data DIR --out DIR --threads N --seed N --quick)");
        }
        return quick ? quick_settings(s) : s;
    }

    /// Applies the run-wide torch settings: thread count and determinism.
    inline void setup_torch(const settings& s)
    {
        torch::set_num_threads(s.threads);
        torch::manual_seed(s.seed);
    }

    struct dataset;
    inline dataset load_dataset(const settings& s);

    /// An experiment's main: parses the options, sets torch up, loads the data, runs `body(settings, dataset)`; reports errors.
    template <class F>
    int run_experiment(const char* name, int argc, char** argv, F&& body)
    {
        try
        {
            const settings s = parse_args(argc, argv);
            setup_torch(s);
            body(s, load_dataset(s));
            return 0;
        }
        catch (const std::exception& e)
        {
            std::cerr << name << ": " << e.what() << "\n";
            return 1;
        }
    }

    struct split
    {
        torch::Tensor x;  // float [N, 784] in [0, 1]
        torch::Tensor y;  // int64 [N]
    };

    struct dataset
    {
        split train, val, test;
    };

    inline dataset load_dataset(const settings& s)
    {
        const torch::Tensor train_images = read_idx_images(s.data_dir + "/train-images-idx3-ubyte.gz");
        const torch::Tensor train_labels = read_idx_labels(s.data_dir + "/train-labels-idx1-ubyte.gz");
        const torch::Tensor test_images = read_idx_images(s.data_dir + "/t10k-images-idx3-ubyte.gz");
        const torch::Tensor test_labels = read_idx_labels(s.data_dir + "/t10k-labels-idx1-ubyte.gz");
        const std::int64_t n = train_images.size(0);
        if (s.train_size + s.val_size > n || s.test_size > test_images.size(0))
        {
            throw std::invalid_argument("the data set is smaller than the requested splits");
        }
        dataset d;
        d.train = {train_images.slice(0, 0, s.train_size), train_labels.slice(0, 0, s.train_size)};
        d.val = {train_images.slice(0, n - s.val_size, n), train_labels.slice(0, n - s.val_size, n)};
        d.test = {test_images.slice(0, 0, s.test_size), test_labels.slice(0, 0, s.test_size)};
        return d;
    }

    /// A fixed input transformation defining a task.
    struct task
    {
        std::string name;
        std::function<torch::Tensor(const torch::Tensor&)> apply;
    };

    /// The plain images: the task the base network is trained on.
    inline task plain_task()
    {
        return {"plain", [](const torch::Tensor& x) { return x; }};
    }

    /// The four tasks the base is fine-tuned on.
    inline std::vector<task> transformed_tasks(std::uint64_t seed)
    {
        auto images = [](const torch::Tensor& x) { return x.view({-1, 28, 28}); };
        at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed + 1234);
        const torch::Tensor pixels = torch::randperm(784, gen);
        return {
            {"rot90", [=](const torch::Tensor& x) { return torch::rot90(images(x), 1, {1, 2}).reshape({-1, 784}); }},
            {"hflip", [=](const torch::Tensor& x) { return torch::flip(images(x), {2}).reshape({-1, 784}); }},
            {"invert", [](const torch::Tensor& x) { return 1.0 - x; }},
            {"permute", [=](const torch::Tensor& x) { return x.index_select(1, pixels); }},
        };
    }

    /// Gaussian pixel noise of standard deviation `sigma`, clamped to [0, 1]: a shifted test set.
    inline torch::Tensor noisy(const torch::Tensor& x, double sigma, std::uint64_t seed)
    {
        at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
        return (x + sigma * torch::randn(x.sizes(), gen)).clamp(0.0, 1.0);
    }

    /// 784 -> hidden -> hidden -> 10 with ReLU; layers fc0, fc1, fc2.
    struct mlp_impl : torch::nn::Module
    {
        explicit mlp_impl(std::int64_t hidden)
            : fc0(register_module("fc0", torch::nn::Linear(784, hidden)))
            , fc1(register_module("fc1", torch::nn::Linear(hidden, hidden)))
            , fc2(register_module("fc2", torch::nn::Linear(hidden, 10)))
        {
        }

        torch::Tensor forward(const torch::Tensor& x)
        {
            return fc2(torch::relu(fc1(torch::relu(fc0(x)))));
        }

        /// The inputs of fc0, fc1 and fc2 for x (what RegMean's Gram matrices are made of).
        std::vector<torch::Tensor> layer_inputs(const torch::Tensor& x)
        {
            const torch::Tensor h0 = torch::relu(fc0(x));
            const torch::Tensor h1 = torch::relu(fc1(h0));
            return {x, h0, h1};
        }

        torch::nn::Linear fc0, fc1, fc2;
    };
    TORCH_MODULE_IMPL(mlp, mlp_impl);

    inline const std::vector<std::string>& mlp_layers()
    {
        static const std::vector<std::string> layers = {"fc0", "fc1", "fc2"};
        return layers;
    }

    /// A network initialised from `seed`.
    inline mlp make_mlp(const settings& s, std::uint64_t seed)
    {
        torch::manual_seed(seed);
        return mlp(s.hidden);
    }

    /// A copy of `from` (same width).
    inline mlp copy_mlp(const settings& s, const mlp& from)
    {
        mlp to(s.hidden);
        torch::NoGradGuard no_grad;
        auto dst = to->parameters();
        auto src = from->parameters();
        for (std::size_t i = 0; i < dst.size(); ++i)
        {
            dst[i].copy_(src[i]);
        }
        return to;
    }

    /// How one network is trained: SGD with momentum 0.9 and a constant rate.
    struct train_options
    {
        int epochs = 1;
        double lr = 0.01;
        std::int64_t batch = 128;
        /// Order of the examples.
        std::uint64_t seed = 0;
        /// Input transformation of each batch (the task, an augmentation); step counts batches.
        std::function<torch::Tensor(const torch::Tensor& x, std::int64_t step)> transform;
        /// When set, the squared batch gradients of the last epoch accumulate here.
        xmerge::diagonal_fisher* fisher = nullptr;
    };

    inline void train(mlp& net, const split& data, const train_options& o)
    {
        net->train();
        torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(o.lr).momentum(0.9));
        at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
        const std::int64_t n = data.x.size(0);
        std::int64_t step = 0;
        for (int epoch = 0; epoch < o.epochs; ++epoch)
        {
            const torch::Tensor order = torch::randperm(n, gen);
            for (std::int64_t b = 0; b + o.batch <= n; b += o.batch, ++step)
            {
                const torch::Tensor idx = order.slice(0, b, b + o.batch);
                torch::Tensor x = data.x.index_select(0, idx);
                if (o.transform)
                {
                    x = o.transform(x, step);
                }
                const torch::Tensor loss = torch::nll_loss(torch::log_softmax(net->forward(x), 1), data.y.index_select(0, idx));
                opt.zero_grad();
                loss.backward();
                if (o.fisher && epoch + 1 == o.epochs)
                {
                    // The gradient of a mean over B examples, squared and scaled by B: the batch estimate of the Fisher.
                    o.fisher->add(xmerge::gradients_of(*net), static_cast<std::size_t>(o.batch), static_cast<double>(o.batch));
                }
                opt.step();
            }
        }
        net->eval();
    }

    struct metrics
    {
        double accuracy = 0.0;
        double loss = 0.0;
    };

    /// Accuracy and mean cross-entropy of `net` on (x, y).
    inline metrics evaluate(mlp& net, const torch::Tensor& x, const torch::Tensor& y)
    {
        torch::NoGradGuard no_grad;
        double correct = 0.0, loss = 0.0;
        const std::int64_t n = x.size(0);
        for (std::int64_t b = 0; b < n; b += 2000)
        {
            const std::int64_t e = std::min(n, b + 2000);
            const torch::Tensor logits = net->forward(x.slice(0, b, e));
            const torch::Tensor labels = y.slice(0, b, e);
            correct += logits.argmax(1).eq(labels).sum().item<double>();
            loss += torch::nll_loss(torch::log_softmax(logits, 1), labels, {}, at::Reduction::Sum).item<double>();
        }
        return {correct / static_cast<double>(n), loss / static_cast<double>(n)};
    }

    /// A task's inputs of a split, transformed once.
    struct task_split
    {
        std::string task;
        torch::Tensor x;
        torch::Tensor y;
    };

    inline std::vector<task_split> transform_split(const split& s, const std::vector<task>& tasks)
    {
        std::vector<task_split> out;
        for (const auto& t : tasks)
        {
            out.push_back({t.name, t.apply(s.x).contiguous(), s.y});
        }
        return out;
    }

    /// Accuracy on each task's split.
    inline std::vector<double> accuracies(mlp& net, const std::vector<task_split>& splits)
    {
        std::vector<double> out;
        for (const auto& s : splits)
        {
            out.push_back(evaluate(net, s.x, s.y).accuracy);
        }
        return out;
    }

    inline double mean(const std::vector<double>& v)
    {
        double s = 0.0;
        for (double x : v)
        {
            s += x;
        }
        return v.empty() ? 0.0 : s / static_cast<double>(v.size());
    }

    /// A CSV file under the output folder.
    class csv
    {
    public:
        csv(const settings& s, const std::string& name, const std::string& header) : m_path(s.out_dir + "/" + name), m_out(m_path)
        {
            if (!m_out)
            {
                throw std::runtime_error("cannot write " + m_path);
            }
            m_out << header << "\n";
        }

        template <class... T>
        void row(const T&... fields)
        {
            std::ostringstream line;
            line << std::setprecision(6);
            std::size_t i = 0;
            ((line << (i++ ? "," : "") << fields), ...);
            m_out << line.str() << "\n";
            m_out.flush();
        }

        const std::string& path() const { return m_path; }

    private:
        std::string m_path;
        std::ofstream m_out;
    };

    /// Seconds since construction.
    class stopwatch
    {
    public:
        double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - m_start).count(); }

    private:
        std::chrono::steady_clock::time_point m_start = std::chrono::steady_clock::now();
    };

    inline void log(const std::string& line)
    {
        std::cout << line << std::endl;
    }

    inline std::string percent(double x)
    {
        std::ostringstream s;
        s << std::fixed << std::setprecision(2) << 100.0 * x;
        return s.str();
    }
}

#endif
