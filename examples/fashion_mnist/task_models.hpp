// The base network and its fine-tunes on the transformed tasks.
#ifndef XMERGE_EXAMPLES_FASHION_MNIST_TASK_MODELS_HPP
#define XMERGE_EXAMPLES_FASHION_MNIST_TASK_MODELS_HPP

#include <cstdint>
#include <string>
#include <vector>

#include "common.hpp"

namespace fmnist
{
    /// A base trained on the plain images and one fine-tune of it per task.
    struct task_models
    {
        mlp base{nullptr};
        std::vector<mlp> finetuned;
        /// The base trained further on all tasks at once (the upper bound of a merge); null until trained.
        mlp multitask{nullptr};
        /// Diagonal Fishers of each fine-tune (per parameter tensor), from its last epoch's gradients.
        std::vector<std::vector<std::vector<float>>> fishers;
    };

    /// Trains the base (seed s.seed) on the plain images.
    inline mlp train_base(const settings& s, const dataset& d)
    {
        mlp base = make_mlp(s, s.seed + 1);
        train_options o;
        o.epochs = s.base_epochs;
        o.lr = s.base_lr;
        o.batch = s.batch;
        o.seed = s.seed + 2;
        train(base, d.train, o);
        return base;
    }

    /// Fine-tunes a copy of `base` on `t`; with `fisher` set, records its diagonal Fisher too.
    inline mlp finetune(const settings& s, const dataset& d, const mlp& base, const task& t, std::uint64_t seed, double lr,
                        std::vector<std::vector<float>>* fisher = nullptr)
    {
        mlp net = copy_mlp(s, base);
        train_options o;
        o.epochs = s.finetune_epochs;
        o.lr = lr;
        o.batch = s.batch;
        o.seed = seed;
        o.transform = [&t](const torch::Tensor& x, std::int64_t) { return t.apply(x); };
        std::vector<xmerge::tensor_ref> buffers;
        if (fisher)
        {
            fisher->clear();
            for (const auto& p : xmerge::parameters_of(*net))
            {
                fisher->emplace_back(p.size());
                buffers.push_back(xmerge::as_tensor(fisher->back().data(), p.shape(), p.name()));
            }
        }
        xmerge::diagonal_fisher accumulator(buffers);
        o.fisher = fisher ? &accumulator : nullptr;
        train(net, d.train, o);
        if (fisher)
        {
            accumulator.finish();
        }
        return net;
    }

    inline task_models train_task_models(const settings& s, const dataset& d, const std::vector<task>& tasks, bool fishers)
    {
        task_models m;
        m.base = train_base(s, d);
        m.fishers.resize(tasks.size());
        for (std::size_t k = 0; k < tasks.size(); ++k)
        {
            m.finetuned.push_back(finetune(s, d, m.base, tasks[k], s.seed + 10 + k, s.finetune_lr, fishers ? &m.fishers[k] : nullptr));
        }
        return m;
    }

    /// The base trained further on batches of every task in turn, as many steps as all fine-tunes together.
    inline mlp train_multitask(const settings& s, const dataset& d, const mlp& base, const std::vector<task>& tasks)
    {
        mlp joint = copy_mlp(s, base);
        train_options o;
        o.epochs = s.finetune_epochs * static_cast<int>(tasks.size());
        o.lr = s.finetune_lr;
        o.batch = s.batch;
        o.seed = s.seed + 30;
        o.transform = [&](const torch::Tensor& x, std::int64_t step) { return tasks[static_cast<std::size_t>(step) % tasks.size()].apply(x); };
        train(joint, d.train, o);
        return joint;
    }

    /// The read-only parameter lists of several networks.
    inline std::vector<xmerge::parameter_list> parameter_lists(const std::vector<mlp>& nets)
    {
        std::vector<xmerge::parameter_list> out;
        for (const auto& n : nets)
        {
            out.push_back(xmerge::parameters_of(*n));
        }
        return out;
    }
}

#endif
