// Permutation specs, applying permutations, and weight matching.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <xmerge/search/permutation.hpp>
#include <xmerge/search/weight_matching.hpp>

#include "test_support.hpp"

using namespace xmerge;

namespace
{
    // An MLP fc0 -> relu -> fc1 -> relu -> fc2, weights [out, in].
    struct mlp
    {
        std::vector<std::size_t> widths;
        std::vector<std::vector<float>> tensors;  // fc0.weight, fc0.bias, fc1.weight, ...
        std::vector<std::string> names;

        mlp(std::vector<std::size_t> w, std::uint32_t seed) : widths(std::move(w))
        {
            for (std::size_t l = 0; l + 1 < widths.size(); ++l)
            {
                tensors.push_back(xmerge_test::random_floats(widths[l + 1] * widths[l], seed++));
                tensors.push_back(xmerge_test::random_floats(widths[l + 1], seed++));
                names.push_back("fc" + std::to_string(l) + ".weight");
                names.push_back("fc" + std::to_string(l) + ".bias");
            }
        }

        parameter_list params() const
        {
            parameter_list out;
            for (std::size_t i = 0; i < tensors.size(); ++i)
            {
                const std::size_t l = i / 2;
                shape_type shape = i % 2 == 0 ? shape_type{widths[l + 1], widths[l]} : shape_type{widths[l + 1]};
                out.push_back(as_tensor(tensors[i].data(), shape, names[i]));
            }
            return out;
        }

        std::vector<tensor_ref> refs()
        {
            std::vector<tensor_ref> out;
            for (const auto& p : params())
            {
                out.emplace_back(const_cast<void*>(p.data()), p.type(), p.shape(), p.name());
            }
            return out;
        }

        std::vector<float> forward(std::vector<float> x) const
        {
            for (std::size_t l = 0; l + 1 < widths.size(); ++l)
            {
                std::vector<float> y(widths[l + 1]);
                for (std::size_t o = 0; o < y.size(); ++o)
                {
                    double s = tensors[2 * l + 1][o];
                    for (std::size_t i = 0; i < x.size(); ++i)
                    {
                        s += static_cast<double>(tensors[2 * l][o * widths[l] + i]) * x[i];
                    }
                    y[o] = l + 2 < widths.size() ? std::max(0.0f, static_cast<float>(s)) : static_cast<float>(s);
                }
                x = std::move(y);
            }
            return x;
        }
    };

    std::vector<std::string> layer_names(std::size_t layers)
    {
        std::vector<std::string> out;
        for (std::size_t l = 0; l < layers; ++l)
        {
            out.push_back("fc" + std::to_string(l));
        }
        return out;
    }

    permutation random_permutation(std::size_t n, std::mt19937& gen)
    {
        permutation p(n);
        std::iota(p.begin(), p.end(), std::size_t{0});
        std::shuffle(p.begin(), p.end(), gen);
        return p;
    }

    permutation inverse(const permutation& p)
    {
        permutation q(p.size());
        for (std::size_t i = 0; i < p.size(); ++i)
        {
            q[p[i]] = i;
        }
        return q;
    }
}

TEST_CASE("gather_permuted reads every axis through its permutation", "[search][permutation]")
{
    const shape_type shape{3, 4, 5};
    std::vector<float> src(60);
    std::iota(src.begin(), src.end(), 0.0f);
    const permutation p0 = {2, 0, 1}, p2 = {4, 3, 0, 1, 2};
    std::vector<float> dst(60), front(60);
    detail::gather_permuted(src.data(), shape, {p0.data(), nullptr, p2.data()}, detail::resolved_spec::npos, dst.data());
    detail::gather_permuted(src.data(), shape, {p0.data(), nullptr, p2.data()}, 2, front.data());
    for (std::size_t i = 0; i < 3; ++i)
    {
        for (std::size_t j = 0; j < 4; ++j)
        {
            for (std::size_t k = 0; k < 5; ++k)
            {
                const float expected = src[p0[i] * 20 + j * 5 + p2[k]];
                REQUIRE(dst[i * 20 + j * 5 + k] == expected);
                REQUIRE(front[k * 12 + i * 4 + j] == expected);
            }
        }
    }
}

TEST_CASE("apply_permutation with the MLP spec keeps the network's function", "[search][permutation]")
{
    const mlp a({6, 8, 5, 3}, 1);
    mlp b({6, 8, 5, 3}, 100);
    std::mt19937 gen(5);
    const std::vector<permutation> perms = {random_permutation(8, gen), random_permutation(5, gen)};
    const permutation_spec spec = mlp_permutation_spec(layer_names(3));
    REQUIRE(spec.groups.size() == 2);
    REQUIRE(spec.groups[0].axes.size() == 3);
    apply_permutation(spec, perms, a.params(), b.refs());
    // fc0.weight rows follow the first permutation; fc1.weight columns too.
    REQUIRE(b.tensors[0][0] == a.tensors[0][perms[0][0] * 6]);
    REQUIRE(b.tensors[2][1] == a.tensors[2][perms[1][0] * 8 + perms[0][1]]);
    REQUIRE(b.tensors[5] == a.tensors[5]);
    const std::vector<float> x = xmerge_test::random_floats(6, 9);
    const auto ya = a.forward(x), yb = b.forward(x);
    for (std::size_t i = 0; i < ya.size(); ++i)
    {
        REQUIRE(yb[i] == Approx(ya[i]).margin(1e-5));
    }
}

TEST_CASE("apply_permutation refuses specs and permutations that do not fit", "[search][permutation]")
{
    const mlp a({4, 3, 2}, 1);
    mlp out({4, 3, 2}, 2);
    const permutation_spec spec = mlp_permutation_spec(layer_names(2));
    const std::vector<permutation> ok = {{2, 0, 1}};
    REQUIRE_THROWS_WITH(apply_permutation(spec, {{0, 0, 1}}, a.params(), out.refs()), Catch::Contains("not a permutation of 3"));
    REQUIRE_THROWS_AS(apply_permutation(spec, {{0, 1}}, a.params(), out.refs()), parameter_error);
    REQUIRE_THROWS_AS(apply_permutation(spec, {}, a.params(), out.refs()), parameter_error);

    permutation_spec missing = spec;
    missing.groups[0].axes.push_back({"fc9.weight", 0});
    REQUIRE_THROWS_WITH(apply_permutation(missing, ok, a.params(), out.refs()), Catch::Contains("fc9.weight"));
    permutation_spec axis = spec;
    axis.groups[0].axes[1].axis = 1;
    REQUIRE_THROWS_WITH(apply_permutation(axis, ok, a.params(), out.refs()), Catch::Contains("axis 1 of a tensor of shape [3]"));
    permutation_spec sizes = spec;
    sizes.groups[0].axes.push_back({"fc0.weight", 1});
    REQUIRE_THROWS_WITH(apply_permutation(sizes, ok, a.params(), out.refs()), Catch::Contains("has 4 entries"));
    permutation_spec twice = spec;
    twice.groups.push_back({"again", {{"fc0.bias", 0}}});
    REQUIRE_THROWS_WITH(apply_permutation(twice, {ok[0], ok[0]}, a.params(), out.refs()), Catch::Contains("is in groups"));

    mlp self = a;
    REQUIRE_THROWS_AS(apply_permutation(spec, ok, self.params(), self.refs()), layout_error);
}

TEST_CASE("weight matching recovers a known permutation exactly", "[search][matching]")
{
    for (const auto& widths : {std::vector<std::size_t>{5, 8, 6, 3}, std::vector<std::size_t>{20, 64, 48, 32, 10}})
    {
        const mlp a(widths, 3);
        mlp b(widths, 50);
        std::mt19937 gen(static_cast<std::uint32_t>(widths.size()));
        std::vector<permutation> hidden;
        for (std::size_t l = 1; l + 1 < widths.size(); ++l)
        {
            hidden.push_back(random_permutation(widths[l], gen));
        }
        const permutation_spec spec = mlp_permutation_spec(layer_names(widths.size() - 1));
        apply_permutation(spec, hidden, a.params(), b.refs());

        const weight_matching_result r = weight_matching(spec, a.params(), b.params());
        REQUIRE(r.converged);
        REQUIRE(r.rounds >= 1);
        for (std::size_t g = 0; g < hidden.size(); ++g)
        {
            REQUIRE(r.permutations[g] == inverse(hidden[g]));
        }
        for (std::size_t i = 1; i < r.similarity.size(); ++i)
        {
            REQUIRE(r.similarity[i] >= r.similarity[i - 1] - 1e-6 * std::fabs(r.similarity[i - 1]));
        }
        mlp aligned(widths, 77);
        apply_permutation(spec, r.permutations, b.params(), aligned.refs());
        REQUIRE(aligned.tensors == a.tensors);
    }
}

TEST_CASE("weight matching of bfloat16 models and of a noisy copy", "[search][matching]")
{
    const std::vector<std::size_t> widths = {12, 32, 16, 4};
    const mlp a(widths, 8);
    mlp b(widths, 9);
    std::mt19937 gen(4);
    const std::vector<permutation> hidden = {random_permutation(32, gen), random_permutation(16, gen)};
    const permutation_spec spec = mlp_permutation_spec(layer_names(3));
    apply_permutation(spec, hidden, a.params(), b.refs());
    // Small noise on the permuted copy: the matching still undoes the permutation.
    std::normal_distribution<float> noise(0.0f, 0.05f);
    for (auto& t : b.tensors)
    {
        for (auto& x : t)
        {
            x += noise(gen);
        }
    }
    // bfloat16 copies of both.
    std::vector<std::vector<bfloat16>> a16, b16;
    parameter_list pa, pb;
    const parameter_list fa = a.params(), fb = b.params();
    for (std::size_t t = 0; t < fa.size(); ++t)
    {
        a16.emplace_back(fa[t].size());
        b16.emplace_back(fb[t].size());
        simd::store_from_float(dtype::bfloat16, a.tensors[t].data(), a16.back().data(), 0, fa[t].size());
        simd::store_from_float(dtype::bfloat16, b.tensors[t].data(), b16.back().data(), 0, fb[t].size());
    }
    for (std::size_t t = 0; t < fa.size(); ++t)
    {
        pa.push_back(as_tensor(a16[t].data(), fa[t].shape(), fa[t].name()));
        pb.push_back(as_tensor(b16[t].data(), fb[t].shape(), fb[t].name()));
    }
    weight_matching_options o;
    o.seed = 42;
    const weight_matching_result r = weight_matching(spec, pa, pb, o);
    REQUIRE(r.permutations[0] == inverse(hidden[0]));
    REQUIRE(r.permutations[1] == inverse(hidden[1]));

    REQUIRE_THROWS_AS(weight_matching(spec, pa, parameter_list(pb.begin(), pb.end() - 1)), parameter_error);
}
