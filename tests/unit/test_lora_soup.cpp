// LoRA soups over the adapters peft wrote for one base (tests/data/lora):
// merged through their updates against what peft's own folded models give,
// into a folded model or a new adapter.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include <xmerge/lora/soup.hpp>

#include "test_io_support.hpp"
#include "test_support.hpp"

using namespace xmerge;

namespace
{
    const std::string data_dir = std::string(XMERGE_TEST_DATA_DIR) + "/lora/";

    struct soup_fixture
    {
        model base = model::open(data_dir + "base_llama");
        std::vector<lora::adapter> adapters;
        std::vector<model> folded;  // what peft's merge_and_unload made of each

        explicit soup_fixture(const std::vector<std::string>& names)
        {
            for (const auto& n : names)
            {
                adapters.push_back(lora::adapter::open(data_dir + n));
                folded.push_back(model::open(data_dir + n + "/expected.safetensors"));
            }
        }
    };

    void require_close(const model& got, const model& expected, double margin)
    {
        for (const model_tensor& e : expected.tensors())
        {
            CAPTURE(e.name);
            const auto g = xmerge_test::float_values(got.at(e.name)), x = xmerge_test::float_values(e);
            for (std::size_t i = 0; i < x.size(); ++i)
            {
                REQUIRE(g[i] == Approx(x[i]).margin(margin));
            }
        }
    }
}

TEST_CASE("a linear soup is the base plus the weighted updates peft's folds imply", "[lora][soup]")
{
    // LoRA, per-module patterns, rsLoRA with bias updates, DoRA, embeddings and saved modules.
    const soup_fixture f({"lora", "patterns", "rslora", "dora", "embedding_saved"});
    const std::vector<double> weights{0.3, 0.2, 0.1, 0.25, 0.15};
    lora::soup_options o;
    o.weights = weights;
    o.lambda = 1.5;
    xmerge_test::scratch_dir dir;
    merge_options threads;
    threads.threads = 2;
    const auto summary = lora::soup_to_model(f.base, f.adapters, dir / "soup", o, threads);
    CHECK(summary.tensors == f.base.size());
    const model soup = model::open(dir / "soup");
    for (const model_tensor& t : f.base.tensors())
    {
        CAPTURE(t.name);
        const auto w = xmerge_test::float_values(t), got = xmerge_test::float_values(soup.at(t.name));
        std::vector<double> expected(w.begin(), w.end());
        for (std::size_t k = 0; k < f.folded.size(); ++k)
        {
            const auto x = xmerge_test::float_values(f.folded[k].at(t.name));
            for (std::size_t i = 0; i < w.size(); ++i)
            {
                expected[i] += o.lambda * weights[k] * (static_cast<double>(x[i]) - w[i]);
            }
        }
        for (std::size_t i = 0; i < w.size(); ++i)
        {
            REQUIRE(got[i] == Approx(expected[i]).margin(1e-5));
        }
    }
}

TEST_CASE("a TIES soup over updates equals TIES over peft's folded models", "[lora][soup]")
{
    const soup_fixture f({"lora", "patterns", "dora"});
    lora::soup_options o;
    o.method = lora::soup_method::ties;
    o.weights = {1.0, 0.7, 1.2};
    o.densities = {0.6};
    xmerge_test::scratch_dir dir;
    lora::soup_to_model(f.base, f.adapters, dir / "soup", o);
    const model soup = model::open(dir / "soup");
    std::size_t compared = 0, off = 0;
    for (const model_tensor& t : f.base.tensors())
    {
        expression_list<input_node> models;
        for (const auto& m : f.folded)
        {
            models.push_back(input(m.at(t.name).ref()));
        }
        std::vector<float> expected;
        evaluate(ties(models, input(t.ref()), o.weights, o.densities), expected);
        const auto got = xmerge_test::float_values(soup.at(t.name));
        for (std::size_t i = 0; i < got.size(); ++i)
        {
            ++compared;
            // An entry at the trimming threshold may fall either side with the last bit of a fold.
            off += !(std::fabs(got[i] - expected[i]) <= 2e-5);
        }
    }
    CHECK(off <= compared / 1000);
}

TEST_CASE("a soup written as an adapter folds into the soup", "[lora][soup][adapter]")
{
    const soup_fixture f({"lora", "patterns", "rslora", "embedding_saved"});
    xmerge_test::scratch_dir dir;
    for (auto method : {lora::soup_method::linear, lora::soup_method::ties, lora::soup_method::dare_ties})
    {
        CAPTURE(static_cast<int>(method));
        lora::soup_options o;
        o.method = method;
        o.densities = {0.7};
        o.seed = 42;
        const std::string tag = std::to_string(static_cast<int>(method));
        lora::soup_to_model(f.base, f.adapters, dir / ("model" + tag), o);
        lora::factor_options exact;
        exact.rule = truncation::rank(64);  // every update is at most 20 x 30: nothing is cut
        const auto report = lora::soup_to_adapter(f.base, f.adapters, dir / ("adapter" + tag), o, exact);
        const lora::adapter merged = lora::adapter::open(dir / ("adapter" + tag));
        for (const auto& e : report.tensors)
        {
            if (e.what == lora::extracted_tensor::kind::lora)
            {
                CHECK(e.kept_energy == Approx(1.0).margin(1e-6));
            }
        }
        if (method == lora::soup_method::linear)
        {
            // The exact stacking: ranks add up (q_proj of layer 1: 4 + 6 from lora and patterns).
            CHECK(merged.find("model.layers.1.self_attn.q_proj.weight")->rank() == 10);
        }
        CHECK(merged.find_replacement("lm_head.weight") != nullptr);
        CHECK(merged.config().bias == "lora_only");  // rslora's bias updates of v_proj and up_proj
        lora::fold_adapter(f.base, merged, dir / ("folded" + tag));
        require_close(model::open(dir / ("folded" + tag)), model::open(dir / ("model" + tag)), 2e-5);
    }

    // Cut to rank 2: still an adapter, with the kept energy reported.
    lora::soup_options o;
    lora::factor_options cut;
    cut.rule = truncation::rank(2);
    const auto report = lora::soup_to_adapter(f.base, f.adapters, dir / "cut", o, cut);
    bool lossy = false;
    for (const auto& e : report.tensors)
    {
        if (e.what == lora::extracted_tensor::kind::lora)
        {
            CHECK(e.rank <= 2);
            lossy = lossy || e.kept_energy < 0.999;
        }
    }
    CHECK(lossy);
}

TEST_CASE("a DARE soup is the same for every thread count", "[lora][soup]")
{
    const soup_fixture f({"lora", "patterns"});
    lora::soup_options o;
    o.method = lora::soup_method::dare_linear;
    o.densities = {0.5};
    o.seed = 7;
    xmerge_test::scratch_dir dir;
    merge_options one, two;
    one.threads = 1;
    two.threads = 2;
    lora::soup_to_model(f.base, f.adapters, dir / "one", o, one);
    lora::soup_to_model(f.base, f.adapters, dir / "two", o, two);
    const model a = model::open(dir / "one"), b = model::open(dir / "two");
    for (const model_tensor& t : a.tensors())
    {
        REQUIRE(xmerge_test::same_bits(xmerge_test::float_values(t), xmerge_test::float_values(b.at(t.name))));
    }
    CHECK_THROWS_AS(lora::soup_to_model(f.base, {}, dir / "none", o), parameter_error);
}
