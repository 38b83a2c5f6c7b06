// LoRA extraction: an exactly low-rank update is recovered at its rank (full
// and randomized SVD), energy fractions keep what they promise, and a whole
// fine-tune becomes an adapter that folds back into it.
#include <catch2/catch.hpp>

#include <cmath>
#include <deque>
#include <string>
#include <vector>

#include <xmerge/lora/extract_model.hpp>
#include <xmerge/lora/fold_model.hpp>

#include "linalg_support.hpp"
#include "test_io_support.hpp"

using namespace xmerge;

namespace
{
    /// base + (a rank-r product) as rows x cols, with the product's scale.
    struct low_rank_pair
    {
        std::size_t rows, cols;
        std::vector<float> base, finetuned;
        std::vector<double> delta;

        low_rank_pair(std::size_t m, std::size_t n, std::size_t r, std::uint32_t seed) : rows(m), cols(n), base(xmerge_test::normal_matrix(m, n, seed))
        {
            const auto left = xmerge_test::normal_matrix(m, r, seed + 1, 0.3f), right = xmerge_test::normal_matrix(r, n, seed + 2, 0.3f);
            delta = xmerge_test::matmul(left, right, m, r, n);
            finetuned.resize(m * n);
            for (std::size_t i = 0; i < delta.size(); ++i)
            {
                finetuned[i] = static_cast<float>(base[i] + delta[i]);
                delta[i] = static_cast<double>(finetuned[i]) - base[i];  // the update as stored
            }
        }

        const_tensor_ref base_ref() const { return as_tensor(base.data(), {rows, cols}, "w"); }
        const_tensor_ref finetuned_ref() const { return as_tensor(finetuned.data(), {rows, cols}, "w"); }
    };

    std::vector<double> product_of(const lora::extracted_factors& f)
    {
        const std::vector<float> b(f.left.begin(), f.left.end()), a(f.right.begin(), f.right.end());
        return xmerge_test::matmul(b, a, f.left.shape()[0], f.rank(), f.right.shape()[1]);
    }

    double max_abs(const std::vector<double>& v)
    {
        double m = 0.0;
        for (double x : v)
        {
            m = std::max(m, std::fabs(x));
        }
        return m;
    }

}

TEST_CASE("extraction recovers an exactly low-rank update at its rank", "[lora][extract]")
{
    const low_rank_pair p(70, 45, 6, 1);
    for (auto method : {lora::svd_method::full, lora::svd_method::randomized})
    {
        for (auto precision : {linalg_precision::float32, linalg_precision::float64})
        {
            CAPTURE(method == lora::svd_method::full, precision == linalg_precision::float64);
            lora::factor_options o;
            o.rule = truncation::rank(6);
            o.method = method;
            o.precision = precision;
            const auto f = lora::extract_factors(p.finetuned_ref(), p.base_ref(), o);
            REQUIRE(f.rank() == 6);
            REQUIRE(f.left.shape()[0] == 70);
            REQUIRE(f.right.shape()[1] == 45);
            const auto got = product_of(f);
            double err = 0.0;
            for (std::size_t i = 0; i < got.size(); ++i)
            {
                err = std::max(err, std::fabs(got[i] - p.delta[i]));
            }
            CHECK(err <= 1e-5 * max_abs(p.delta));
            CHECK(f.kept_fraction() == Approx(1.0).margin(1e-6));
        }
    }

    // The transposed layout factors the transposed update: B A = update^T.
    lora::factor_options o;
    o.rule = truncation::rank(6);
    const auto t = lora::extract_factors(p.finetuned_ref(), p.base_ref(), o, lora::factor_layout::in_out);
    REQUIRE(t.left.shape()[0] == 45);
    const auto got = product_of(t);
    const auto expected = xmerge_test::transpose(p.delta, 70, 45);
    for (std::size_t i = 0; i < got.size(); ++i)
    {
        REQUIRE(got[i] == Approx(expected[i]).margin(1e-5 * max_abs(p.delta)));
    }
}

TEST_CASE("an energy fraction keeps the least rank reaching it, and reports it", "[lora][extract]")
{
    const low_rank_pair p(40, 50, 10, 2);
    for (double f : {0.5, 0.9, 0.99})
    {
        lora::factor_options o;
        o.rule = truncation::energy(f);
        const auto x = lora::extract_factors(p.finetuned_ref(), p.base_ref(), o);
        CHECK(x.kept_fraction() >= f);
        const auto s = xmerge_test::singular_values(p.delta, 40, 50);
        double total = 0.0, below = 0.0;
        for (double v : s)
        {
            total += v * v;
        }
        for (std::size_t j = 0; j + 1 < x.rank(); ++j)
        {
            below += s[j] * s[j];
        }
        CHECK(below / total < f);  // one fewer would not do
        CHECK(x.kept_fraction() == Approx((below + s[x.rank() - 1] * s[x.rank() - 1]) / total).epsilon(1e-4));
    }
}

TEST_CASE("a whole fine-tune becomes an adapter that folds back into it", "[lora][extract][model]")
{
    // A base and a fine-tune with exactly low-rank weight updates, a changed
    // norm, a changed embedding, a changed bias of a LoRA layer, an unchanged weight.
    std::deque<std::vector<float>> memory;
    model base("base"), finetuned("finetuned");
    const auto add = [&](const std::string& name, shape_type shape, const std::vector<float>& b, const std::vector<float>& f)
    {
        memory.push_back(b);
        base.add(name, as_tensor(memory.back().data(), shape, name));
        memory.push_back(f);
        finetuned.add(name, as_tensor(memory.back().data(), shape, name));
    };
    const low_rank_pair q(24, 16, 3, 10), v(8, 16, 5, 20), embed(30, 16, 2, 30);
    add("model.embed_tokens.weight", {30, 16}, embed.base, embed.finetuned);
    add("model.layers.0.self_attn.q_proj.weight", {24, 16}, q.base, q.finetuned);
    add("model.layers.0.self_attn.v_proj.weight", {8, 16}, v.base, v.finetuned);
    const auto bias = xmerge_test::random_floats(8, 40);
    auto bias_ft = bias;
    bias_ft[3] += 0.5f;
    add("model.layers.0.self_attn.v_proj.bias", {8}, bias, bias_ft);
    const auto k = xmerge_test::random_floats(64, 41);
    add("model.layers.0.self_attn.k_proj.weight", {4, 16}, k, k);
    const auto norm = xmerge_test::random_floats(16, 42);
    auto norm_ft = norm;
    norm_ft[0] *= 2.0f;
    add("model.norm.weight", {16}, norm, norm_ft);

    for (bool embeddings_as_lora : {false, true})
    {
        CAPTURE(embeddings_as_lora);
        xmerge_test::scratch_dir dir;
        lora::extraction_options o;
        o.rule = truncation::energy(0.999999, 8);
        o.embeddings_as_lora = embeddings_as_lora;
        o.base_model_name_or_path = "org/base";
        const auto report = lora::extract_adapter(base, finetuned, dir / "adapter", o);
        REQUIRE(report.tensors.size() == finetuned.size());
        const auto kind = [&](const std::string& name)
        {
            for (const auto& e : report.tensors)
            {
                if (e.name == name)
                {
                    return e.what;
                }
            }
            FAIL("no report for " << name);
            return lora::extracted_tensor::kind::unchanged;
        };
        using kinds = lora::extracted_tensor::kind;
        CHECK(kind("model.layers.0.self_attn.q_proj.weight") == kinds::lora);
        CHECK(kind("model.layers.0.self_attn.v_proj.bias") == kinds::full);
        CHECK(kind("model.layers.0.self_attn.k_proj.weight") == kinds::unchanged);
        CHECK(kind("model.norm.weight") == kinds::full);
        CHECK(kind("model.embed_tokens.weight") == (embeddings_as_lora ? kinds::lora : kinds::full));
        for (const auto& e : report.tensors)
        {
            if (e.what == kinds::lora)
            {
                CHECK(e.kept_energy >= 0.999999);
            }
        }
        CHECK(report.config.bias == "lora_only");
        CHECK(report.config.modules_to_save == std::vector<std::string>(embeddings_as_lora ? std::vector<std::string>{"model.norm"}
                                                                                          : std::vector<std::string>{"model.embed_tokens", "model.norm"}));
        CHECK(report.config.base_model_name_or_path == "org/base");

        const lora::adapter a = lora::adapter::open(dir / "adapter");
        CHECK(a.find("model.layers.0.self_attn.q_proj.weight")->rank() == 3);
        CHECK(a.find("model.layers.0.self_attn.v_proj.weight")->rank() == 5);
        CHECK(a.find("model.layers.0.self_attn.k_proj.weight") == nullptr);
        if (embeddings_as_lora)
        {
            CHECK(a.find("model.embed_tokens.weight")->embedding);
        }
        lora::fold_adapter(base, a, dir / "folded");
        const model folded = model::open(dir / "folded");
        for (const model_tensor& t : finetuned.tensors())
        {
            CAPTURE(t.name);
            const auto got = xmerge_test::float_values(folded.at(t.name)), expected = xmerge_test::float_values(t);
            for (std::size_t i = 0; i < got.size(); ++i)
            {
                REQUIRE(got[i] == Approx(expected[i]).margin(2e-5));
            }
        }
    }
}

TEST_CASE("fan_in_fan_out extraction gives an adapter of [in, out] weights", "[lora][extract][model]")
{
    std::deque<std::vector<float>> memory;
    model base("base"), finetuned("finetuned");
    const low_rank_pair c(12, 36, 2, 50);  // GPT-2's c_attn: [in, out]
    memory.push_back(c.base);
    base.add("h.0.attn.c_attn.weight", as_tensor(memory.back().data(), {12, 36}));
    memory.push_back(c.finetuned);
    finetuned.add("h.0.attn.c_attn.weight", as_tensor(memory.back().data(), {12, 36}));
    xmerge_test::scratch_dir dir;
    lora::extraction_options o;
    o.rule = truncation::rank(2);
    o.fan_in_fan_out = true;
    o.out_dtype = dtype::bfloat16;
    const auto report = lora::extract_adapter(base, finetuned, dir / "adapter", o);
    CHECK(report.config.fan_in_fan_out);
    const lora::adapter a = lora::adapter::open(dir / "adapter");
    const lora::layer* l = a.find("h.0.attn.c_attn.weight");
    REQUIRE(l != nullptr);
    CHECK(l->a.shape() == shape_type{2, 12});
    CHECK(l->b.shape() == shape_type{36, 2});
    CHECK(l->a.type() == dtype::bfloat16);
    std::vector<float> folded;
    evaluate(lora::fold(base.at("h.0.attn.c_attn.weight").ref(), *l), folded);
    for (std::size_t i = 0; i < folded.size(); ++i)
    {
        REQUIRE(folded[i] == Approx(c.finetuned[i]).margin(2e-2 * max_abs(c.delta)));  // bfloat16 factors
    }
}

TEST_CASE("extraction refuses fine-tunes that do not match their base", "[lora][extract][errors]")
{
    std::vector<float> w(12, 1.0f), w2(12, 2.0f), w3(15, 2.0f);
    model base("base");
    base.add("a.weight", as_tensor(w, {4, 3}));
    xmerge_test::scratch_dir dir;
    model extra("finetuned");
    extra.add("a.weight", as_tensor(w2, {4, 3}));
    extra.add("b.weight", as_tensor(w2, {4, 3}));
    CHECK_THROWS_WITH(lora::extract_adapter(base, extra, dir / "x"), Catch::Contains("b.weight") && Catch::Contains("not in base"));
    model reshaped("finetuned");
    reshaped.add("a.weight", as_tensor(w3, {5, 3}));
    CHECK_THROWS_WITH(lora::extract_adapter(base, reshaped, dir / "x"), Catch::Contains("a.weight") && Catch::Contains("[5, 3]"));
    std::vector<float> bad = w2;
    bad[5] = std::nanf("");
    model nan("finetuned");
    nan.add("a.weight", as_tensor(bad, {4, 3}));
    CHECK_THROWS_WITH(lora::extract_adapter(base, nan, dir / "x"), Catch::Contains("not finite"));
    CHECK(dir.entries().empty());
}
