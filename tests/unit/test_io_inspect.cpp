// inspect_models: task-vector norms, cosines and sign conflicts per tensor,
// per layer and in total, against a direct computation; the same figures for
// any thread count; tensors that cannot be compared are listed.

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <xmerge/model/inspect.hpp>
#include <xmerge/model/model.hpp>

#include "test_support.hpp"

namespace
{
    struct models
    {
        std::vector<std::string> names = {"model.embed_tokens.weight", "model.layers.0.mlp.weight", "model.layers.0.attn.weight", "model.layers.1.mlp.weight",
                                          "lm_head.weight"};
        std::vector<std::vector<std::vector<float>>> values;  // [model][tensor]; model 0 is the base
        std::vector<xmerge::model> m;
        std::vector<std::int64_t> ids = {0, 1, 2};

        explicit models(std::size_t n)
        {
            for (std::size_t k = 0; k < 4; ++k)
            {
                values.emplace_back();
                for (std::size_t t = 0; t < names.size(); ++t)
                {
                    auto v = xmerge_test::random_floats(n, static_cast<std::uint32_t>(1000 * k + t));
                    if (k > 0)
                    {
                        // Fine-tunes: the base plus a small change, zero on every fifth entry.
                        for (std::size_t i = 0; i < n; ++i)
                        {
                            v[i] = i % 5 == 0 ? values[0][t][i] : values[0][t][i] + 0.01f * v[i];
                        }
                    }
                    values.back().push_back(std::move(v));
                }
            }
            for (std::size_t k = 0; k < 4; ++k)
            {
                m.emplace_back("m" + std::to_string(k));
                for (std::size_t t = 0; t < names.size(); ++t)
                {
                    m[k].add(names[t], xmerge::as_tensor(values[k][t], {n}, names[t]));
                }
            }
            m[0].add_raw("position_ids", "I64", {3}, ids.data());
        }

        // Direct sums over the given tensors, for models i, j (1-based).
        void direct(const std::vector<std::size_t>& tensors, std::size_t i, std::size_t j, double& norm_i, double& cosine, double& conflict) const
        {
            double ii = 0, jj = 0, ij = 0;
            std::size_t both = 0, opposite = 0;
            for (std::size_t t : tensors)
            {
                for (std::size_t e = 0; e < values[0][t].size(); ++e)
                {
                    const double di = static_cast<double>(values[i][t][e]) - values[0][t][e];
                    const double dj = static_cast<double>(values[j][t][e]) - values[0][t][e];
                    ii += di * di;
                    jj += dj * dj;
                    ij += di * dj;
                    if (di != 0 && dj != 0)
                    {
                        ++both;
                        opposite += (di > 0) != (dj > 0);
                    }
                }
            }
            norm_i = std::sqrt(ii);
            cosine = ij / std::sqrt(ii * jj);
            conflict = static_cast<double>(opposite) / static_cast<double>(both);
        }
    };
}

TEST_CASE("inspect_models: figures per tensor, per layer and in total", "[io][inspect]")
{
    // Sizes around the chunk length, and one that spans several chunks.
    for (std::size_t n : {std::size_t(1000), std::size_t((1 << 16) + 3)})
    {
        const models f(n);
        const xmerge::model_inspection r = xmerge::inspect_models(f.m[0], {&f.m[1], &f.m[2], &f.m[3]});
        REQUIRE(r.pairs.size() == 3);
        CHECK(r.pairs[2] == std::make_pair(std::size_t(1), std::size_t(2)));
        REQUIRE(r.tensors.size() == 5);
        REQUIRE(r.skipped.size() == 1);
        CHECK_THAT(r.skipped[0], Catch::Contains("position_ids"));

        double norm = 0, cosine = 0, conflict = 0;
        f.direct({1}, 1, 3, norm, cosine, conflict);
        const auto& t = r.tensors[1].sums;
        CHECK(r.tensors[1].layer == 0u);
        CHECK(r.tensors[1].stack == "model.layers");
        // The same sums in another order (and fused multiply-adds in a -march=native build).
        CHECK(t.norm(0) == Approx(norm).epsilon(1e-11));
        CHECK(t.cosine(1) == Approx(cosine).epsilon(1e-9));
        CHECK(t.sign_conflict(1) == conflict);
        CHECK(t.elements == n);

        // Layer 0 holds two tensors; "other" the embedding and the head, last.
        REQUIRE(r.layers.size() == 3);
        CHECK(r.layers[0].label == "model.layers.0");
        CHECK(r.layers[2].label == "other");
        f.direct({1, 2}, 2, 3, norm, cosine, conflict);
        CHECK(r.layers[0].sums.cosine(2) == Approx(cosine).epsilon(1e-9));
        CHECK(r.layers[0].sums.sign_conflict(2) == conflict);
        f.direct({0, 1, 2, 3, 4}, 1, 2, norm, cosine, conflict);
        CHECK(r.total.cosine(0) == Approx(cosine).epsilon(1e-9));
        CHECK(r.total.elements == 5 * n);
        double base = 0;
        for (const auto& v : f.values[0])
        {
            for (float x : v)
            {
                base += static_cast<double>(x) * x;
            }
        }
        CHECK(r.total.norm_ratio(0) == Approx(norm / std::sqrt(base)).epsilon(1e-11));

        // Chunks are summed in a fixed order: the thread count changes no bit.
        xmerge::inspect_options one;
        one.threads = 1;
        xmerge::inspect_options four;
        four.threads = 4;
        const auto a = xmerge::inspect_models(f.m[0], {&f.m[1], &f.m[2], &f.m[3]}, one);
        const auto b = xmerge::inspect_models(f.m[0], {&f.m[1], &f.m[2], &f.m[3]}, four);
        CHECK(a.total.dots == b.total.dots);
        CHECK(a.total.squares == b.total.squares);
        CHECK(a.total.conflicts == b.total.conflicts);
    }
}

TEST_CASE("inspect_models: a model identical to the base, missing tensors, no model", "[io][inspect]")
{
    const models f(64);
    xmerge::model partial("partial");
    partial.add(f.names[0], xmerge::as_tensor(f.values[1][0], {64}, f.names[0]));
    const auto r = xmerge::inspect_models(f.m[0], {&f.m[0], &partial});
    REQUIRE(r.tensors.size() == 1);
    CHECK(r.tensors[0].sums.norm(0) == 0.0);
    CHECK(r.tensors[0].sums.cosine(0) == 0.0);       // a zero task vector
    CHECK(r.tensors[0].sums.sign_conflict(0) == 0.0);
    CHECK(r.skipped.size() == 5);
    CHECK_THROWS_AS(xmerge::inspect_models(f.m[0], {}), xmerge::parameter_error);
}
