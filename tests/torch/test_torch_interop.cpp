// LibTorch tensors and modules as xmerge tensors: references, merges into
// modules, online averagers updating parameters in place, statistics.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <xmerge/interop/torch.hpp>
#include <xmerge/online/checkpoint_average.hpp>
#include <xmerge/online/diagonal_fisher.hpp>
#include <xmerge/online/ema.hpp>
#include <xmerge/online/swa.hpp>
#include <xmerge/ops/input.hpp>
#include <xmerge/ops/lerp.hpp>
#include <xmerge/search/interpolation.hpp>
#include <xmerge/search/workspace.hpp>
#if XMERGE_WITH_LINALG
#include <xmerge/linalg/gram.hpp>
#endif
#if XMERGE_TEST_WITH_IO
#include <xmerge/interop/torch_model.hpp>
#endif

using namespace xmerge;

namespace
{
    struct net_impl : torch::nn::Module
    {
        net_impl() : fc(register_module("fc", torch::nn::Linear(5, 3))), bn(register_module("bn", torch::nn::BatchNorm1d(3))) {}
        torch::Tensor forward(const torch::Tensor& x) { return bn(fc(x)); }
        torch::nn::Linear fc;
        torch::nn::BatchNorm1d bn;
    };
    TORCH_MODULE_IMPL(net, net_impl);

    net make_net(std::uint64_t seed)
    {
        torch::manual_seed(seed);
        return net();
    }

    bool same(const torch::Tensor& a, const torch::Tensor& b, double tol = 1e-6)
    {
        return a.sizes() == b.sizes() && torch::allclose(a.to(torch::kFloat), b.to(torch::kFloat), tol, tol);
    }
}

TEST_CASE("as_tensor references a torch tensor's memory", "[torch]")
{
    torch::set_num_threads(1);
    for (auto type : {torch::kFloat, torch::kBFloat16, torch::kHalf})
    {
        const torch::Tensor t = torch::randn({4, 6}).to(type);
        const tensor_ref r = as_tensor(t, "w");
        REQUIRE(r.data() == t.data_ptr());
        REQUIRE(r.shape() == shape_type{4, 6});
        REQUIRE(r.name() == "w");
        REQUIRE(to_torch_dtype(r.type()) == type);
    }
    REQUIRE(as_tensor(torch::zeros({})).shape() == shape_type{});
}

TEST_CASE("as_tensor refuses tensors it cannot reference, naming them", "[torch]")
{
    REQUIRE_THROWS_WITH(as_tensor(torch::zeros({3}, torch::kLong), "steps"), Catch::Contains("steps") && Catch::Contains("not supported"));
    REQUIRE_THROWS_AS(as_tensor(torch::zeros({3}, torch::kDouble)), layout_error);
    REQUIRE_THROWS_WITH(as_tensor(torch::zeros({3, 4}).t(), "w"), Catch::Contains("not contiguous"));
    REQUIRE_THROWS_AS(as_tensor(torch::Tensor()), layout_error);
    REQUIRE_THROWS_AS(as_tensor(torch::eye(3).to_sparse()), layout_error);
}

TEST_CASE("a module's parameters and buffers by name", "[torch]")
{
    net n = make_net(1);
    const auto params = parameters_of(*n);
    REQUIRE(params.size() == 4);
    REQUIRE(params[0].name() == "fc.weight");
    REQUIRE(params[0].shape() == shape_type{3, 5});
    REQUIRE(params[3].name() == "bn.bias");
    // Buffers: the running statistics, not the integer batch counter.
    const auto all = writable_parameters_of(*n, true);
    REQUIRE(all.size() == 6);
    REQUIRE(all[4].name() == "bn.running_mean");
    REQUIRE(all[5].name() == "bn.running_var");
}

TEST_CASE("merges evaluate straight into a module's parameters", "[torch]")
{
    net a = make_net(1), b = make_net(2), out = make_net(3);
    const auto pa = parameters_of(*a), pb = parameters_of(*b);
    const auto po = writable_parameters_of(*out);
    for (std::size_t i = 0; i < po.size(); ++i)
    {
        evaluate(lerp(input(pa[i]), input(pb[i]), 0.25), po[i]);
    }
    REQUIRE(same(out->fc->weight, 0.75 * a->fc->weight + 0.25 * b->fc->weight));
    REQUIRE(same(out->bn->bias, 0.75 * a->bn->bias + 0.25 * b->bn->bias));
    // A new tensor holding an expression, in any supported dtype.
    const torch::Tensor half = to_torch(input(pa[0]) - input(pb[0]), torch::kHalf);
    REQUIRE(half.scalar_type() == torch::kHalf);
    REQUIRE(same(half, a->fc->weight - b->fc->weight, 1e-2));
    REQUIRE_THROWS_AS(to_torch(input(pa[0]), torch::kLong), layout_error);
}

TEST_CASE("an interpolation sweep with a module as the workspace", "[torch]")
{
    net a = make_net(1), b = make_net(2), work = make_net(3);
    a->eval();
    b->eval();
    work->eval();
    const torch::Tensor x = torch::randn({16, 5});
    std::vector<double> seen;
    const objective f = [&]
    {
        torch::NoGradGuard no_grad;
        seen.push_back(work->fc->weight[0][0].item<double>());
        return -work->forward(x).pow(2).mean().item<double>();
    };
    const interpolation_result r = interpolation_sweep(parameters_of(*a), parameters_of(*b), writable_parameters_of(*work), f);
    REQUIRE(r.points.size() == 11);
    REQUIRE(seen.front() == Approx(a->fc->weight[0][0].item<double>()));
    REQUIRE(seen.back() == Approx(b->fc->weight[0][0].item<double>()));
    REQUIRE(r.barrier >= 0.0);
    REQUIRE(a->fc->weight.sizes() == torch::IntArrayRef({3, 5}));
}

TEST_CASE("online averagers update a module's parameters in place", "[torch]")
{
    net model = make_net(1), averaged = make_net(2), swa_net = make_net(3), checkpoints = make_net(4);
    const torch::Tensor before = averaged->fc->weight.clone();
    ema e(writable_parameters_of(*averaged), 0.9);
    e.update(parameters_of(*model));
    REQUIRE(same(averaged->fc->weight, 0.9 * before + 0.1 * model->fc->weight));

    swa s(writable_parameters_of(*swa_net));
    const torch::Tensor first = make_net(5)->fc->weight.clone();
    s.update(parameters_of(*make_net(5)));
    s.update(parameters_of(*model));
    REQUIRE(same(swa_net->fc->weight, (first + model->fc->weight) / 2));

    checkpoint_average avg(writable_parameters_of(*checkpoints));
    avg.add(parameters_of(*model), 1.0);
    avg.add(parameters_of(*make_net(5)), 3.0);
    REQUIRE(same(checkpoints->fc->weight, 0.25 * model->fc->weight + 0.75 * first));
}

TEST_CASE("a diagonal Fisher from a module's gradients", "[torch]")
{
    net n = make_net(1);
    n->train();
    std::vector<torch::Tensor> buffers;
    std::vector<tensor_ref> refs;
    for (const auto& p : n->parameters())
    {
        buffers.push_back(torch::empty_like(p));
    }
    for (std::size_t i = 0; i < buffers.size(); ++i)
    {
        refs.push_back(as_tensor(buffers[i], "fisher." + std::to_string(i)));
    }
    diagonal_fisher fisher(refs);
    REQUIRE_THROWS_WITH(fisher.add(gradients_of(*n)), Catch::Contains("fc.weight") && Catch::Contains("no gradient"));
    std::vector<torch::Tensor> squares(buffers.size());
    for (int step = 0; step < 3; ++step)
    {
        n->zero_grad();
        n->forward(torch::randn({8, 5})).pow(2).sum().backward();
        fisher.add(gradients_of(*n));
        const auto params = n->parameters();
        for (std::size_t i = 0; i < params.size(); ++i)
        {
            const torch::Tensor g2 = params[i].grad().pow(2);
            squares[i] = step == 0 ? g2 : squares[i] + g2;
        }
    }
    fisher.finish();
    for (std::size_t i = 0; i < buffers.size(); ++i)
    {
        REQUIRE(same(buffers[i], squares[i] / 3, 1e-5));
    }
}

#if XMERGE_WITH_LINALG
TEST_CASE("a Gram matrix of a layer's inputs from torch activations", "[torch]")
{
    const torch::Tensor x = torch::randn({32, 7});
    gram_accumulator acc(7, "fc");
    acc.add(as_tensor(x.slice(0, 0, 20).contiguous()));
    acc.add(as_tensor(x.slice(0, 20, 32).contiguous()));
    const auto g = acc.gram();
    const torch::Tensor expected = x.t().mm(x) / 32;
    for (std::int64_t i = 0; i < 7; ++i)
    {
        for (std::int64_t j = 0; j < 7; ++j)
        {
            REQUIRE(g(static_cast<std::size_t>(i), static_cast<std::size_t>(j)) == Approx(expected[i][j].item<double>()).margin(1e-5));
        }
    }
}
#endif

#if XMERGE_TEST_WITH_IO
TEST_CASE("a module as a model, and a model loaded into a module", "[torch]")
{
    net a = make_net(1), b = make_net(2);
    const model m = model_of(*a, "a");
    REQUIRE(m.size() == 6);
    REQUIRE(m.contains("bn.running_var"));
    REQUIRE_FALSE(m.contains("bn.num_batches_tracked"));
    load_into(*b, m);
    REQUIRE(same(b->fc->weight, a->fc->weight, 0.0));
    REQUIRE(same(b->bn->running_var, a->bn->running_var, 0.0));

    // A tensor the source lacks: nothing is written.
    net c = make_net(3);
    const torch::Tensor before = c->fc->weight.clone();
    model partial("partial");
    const auto pa = parameters_of(*a);
    partial.add(pa[0].name(), pa[0]);
    REQUIRE_THROWS_WITH(load_into(*c, partial), Catch::Contains("fc.bias"));
    REQUIRE(same(c->fc->weight, before, 0.0));
    model wrong("wrong");
    std::vector<float> small(3);
    for (const auto& p : parameters_of(*a, true))
    {
        if (p.name() == "fc.weight")
        {
            wrong.add(p.name(), as_tensor(small, "fc.weight"));
        }
        else
        {
            wrong.add(p.name(), p);
        }
    }
    REQUIRE_THROWS_AS(load_into(*c, wrong), shape_error);
    REQUIRE(same(c->fc->weight, before, 0.0));
}
#endif
