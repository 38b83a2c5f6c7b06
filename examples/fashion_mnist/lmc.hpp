// Experiment 3: linear mode connectivity before and after weight matching.
#ifndef XMERGE_EXAMPLES_FASHION_MNIST_LMC_HPP
#define XMERGE_EXAMPLES_FASHION_MNIST_LMC_HPP

#include <string>
#include <vector>

#include "common.hpp"
#include "task_models.hpp"

namespace fmnist
{
    /// Test-loss and test-accuracy barriers of the straight line between two networks.
    struct barrier_pair
    {
        std::string pair;
        double loss_barrier = 0.0;
        double accuracy_barrier = 0.0;
    };

    struct lmc_result
    {
        barrier_pair scratch_naive, scratch_matched, finetune_naive;
        std::size_t matching_rounds = 0;
        double seconds = 0.0;
    };

    /**
     * Two networks trained from scratch with different seeds (initialisation
     * and data order), and two fine-tunes of `base` on the plain images with
     * different data orders: the barrier along the line between each pair,
     * and between the scratch pair after permuting the second network's
     * hidden units onto the first's by weight matching.
     */
    inline lmc_result run_lmc(const settings& s, const dataset& d, const mlp& base)
    {
        const stopwatch clock;
        lmc_result r;
        auto scratch = [&](std::uint64_t seed)
        {
            mlp net = make_mlp(s, seed);
            train_options o;
            o.epochs = s.scratch_epochs;
            o.lr = s.base_lr;
            o.batch = s.batch;
            o.seed = seed + 100;
            train(net, d.train, o);
            return net;
        };
        mlp a = scratch(s.seed + 41), b = scratch(s.seed + 42);
        const task plain = plain_task();
        mlp f1 = finetune(s, d, base, plain, s.seed + 51, s.finetune_lr), f2 = finetune(s, d, base, plain, s.seed + 52, s.finetune_lr);

        const xmerge::permutation_spec spec = xmerge::mlp_permutation_spec(mlp_layers());
        const xmerge::weight_matching_result matched = xmerge::weight_matching(spec, xmerge::parameters_of(*a), xmerge::parameters_of(*b));
        r.matching_rounds = matched.rounds;
        mlp b_aligned = copy_mlp(s, b);
        xmerge::apply_permutation(spec, matched.permutations, xmerge::parameters_of(*b), xmerge::writable_parameters_of(*b_aligned));

        mlp work = copy_mlp(s, a);
        const std::vector<xmerge::tensor_ref> ws = xmerge::writable_parameters_of(*work);
        // The score is the negated test loss; details keep the loss and the accuracy.
        const xmerge::objective on_test = [&]
        {
            const metrics m = evaluate(work, d.test.x, d.test.y);
            return xmerge::score{-m.loss, {m.loss, m.accuracy}};
        };
        csv curves(s, "lmc_curves.csv", "pair,alpha,test_loss,test_accuracy");
        auto sweep = [&](const std::string& name, const mlp& x, const mlp& y)
        {
            const xmerge::interpolation_result line = xmerge::interpolation_sweep(xmerge::parameters_of(*x), xmerge::parameters_of(*y), ws, on_test);
            for (const auto& p : line.points)
            {
                curves.row(name, p.coefficients[0], p.result.details[0], p.result.details[1]);
            }
            const barrier_pair out{name, xmerge::barrier(line.alphas(), line.detail(0), xmerge::curve_orientation::lower_is_better),
                                   xmerge::barrier(line.alphas(), line.detail(1), xmerge::curve_orientation::higher_is_better)};
            log("lmc: " + name + ": loss barrier " + std::to_string(out.loss_barrier) + ", accuracy barrier " + percent(out.accuracy_barrier) + " points");
            return out;
        };
        r.scratch_naive = sweep("scratch_naive", a, b);
        r.scratch_matched = sweep("scratch_matched", a, b_aligned);
        r.finetune_naive = sweep("finetune_naive", f1, f2);

        csv summary(s, "lmc_summary.csv", "pair,loss_barrier,accuracy_barrier");
        for (const auto* p : {&r.scratch_naive, &r.scratch_matched, &r.finetune_naive})
        {
            summary.row(p->pair, p->loss_barrier, p->accuracy_barrier);
        }
        r.seconds = clock.seconds();
        log("lmc: weight matching converged in " + std::to_string(r.matching_rounds) + " rounds; " + std::to_string(r.seconds) + " s");
        return r;
    }
}

#endif
