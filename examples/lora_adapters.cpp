// Low-rank adapters end to end: two fine-tunes of a small model are turned
// into PEFT adapters by truncated SVD, folded back, merged as a TIES soup
// into a new adapter, and folded again.
//
//     lora_adapters [OUT_DIR]
//
// Without OUT_DIR everything goes to a temporary directory that is removed
// at the end. Exits non-zero when a fold misses the fine-tune by more than
// the singular values the extraction dropped allow.
#include <cmath>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <xmerge/io/checkpoint_writer.hpp>
#include <xmerge/lora/extract_model.hpp>
#include <xmerge/lora/fold_model.hpp>
#include <xmerge/lora/soup.hpp>

namespace fs = std::filesystem;

namespace
{
    // A Llama-shaped toy: embeddings, two layers of attention and MLP projections, norms.
    struct toy_model
    {
        std::deque<std::vector<float>> memory;
        xmerge::model m{"toy"};

        void add(const std::string& name, xmerge::shape_type shape, std::vector<float> values)
        {
            memory.push_back(std::move(values));
            m.add(name, xmerge::as_tensor(memory.back().data(), shape, name));
        }
    };

    std::vector<float> gaussian(std::size_t n, float scale, std::mt19937& gen)
    {
        std::normal_distribution<float> d(0.0f, scale);
        std::vector<float> v(n);
        for (auto& x : v)
        {
            x = d(gen);
        }
        return v;
    }

    toy_model make_base(std::mt19937& gen)
    {
        toy_model b;
        b.add("model.embed_tokens.weight", {100, 64}, gaussian(6400, 0.02f, gen));
        for (int layer = 0; layer < 2; ++layer)
        {
            const std::string p = "model.layers." + std::to_string(layer) + ".";
            for (const char* proj : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"})
            {
                b.add(p + proj + ".weight", {64, 64}, gaussian(64 * 64, 0.05f, gen));
            }
            b.add(p + "mlp.up_proj.weight", {128, 64}, gaussian(128 * 64, 0.05f, gen));
            b.add(p + "mlp.down_proj.weight", {64, 128}, gaussian(128 * 64, 0.05f, gen));
            b.add(p + "input_layernorm.weight", {64}, std::vector<float>(64, 1.0f));
        }
        b.add("model.norm.weight", {64}, std::vector<float>(64, 1.0f));
        return b;
    }

    // A fine-tune: a rank-8 update of every projection plus a little full-rank noise, and a changed final norm.
    toy_model fine_tune(const xmerge::model& base, std::mt19937& gen)
    {
        toy_model f;
        for (const auto& t : base.tensors())
        {
            std::vector<float> v(static_cast<const float*>(t.ref().data()), static_cast<const float*>(t.ref().data()) + t.ref().size());
            if (t.shape.size() == 2 && t.name.find("embed") == std::string::npos)
            {
                const std::size_t out = t.shape[0], in = t.shape[1], r = 8;
                const auto b = gaussian(out * r, 0.05f, gen), a = gaussian(r * in, 0.05f, gen), noise = gaussian(out * in, 1e-4f, gen);
                for (std::size_t i = 0; i < out; ++i)
                {
                    for (std::size_t j = 0; j < in; ++j)
                    {
                        float d = noise[i * in + j];
                        for (std::size_t k = 0; k < r; ++k)
                        {
                            d += b[i * r + k] * a[k * in + j];
                        }
                        v[i * in + j] += d;
                    }
                }
            }
            else if (t.name == "model.norm.weight")
            {
                for (auto& x : v)
                {
                    x *= 1.1f;
                }
            }
            f.add(t.name, t.shape, std::move(v));
        }
        return f;
    }

    // Largest |folded - target| over a model, relative to the largest |target - base|.
    double relative_error(const xmerge::model& folded, const xmerge::model& target, const xmerge::model& base)
    {
        double err = 0.0, scale = 0.0;
        for (const auto& t : target.tensors())
        {
            const auto* x = static_cast<const float*>(t.ref().data());
            const auto* y = static_cast<const float*>(folded.at(t.name).ref().data());
            const auto* b = static_cast<const float*>(base.at(t.name).ref().data());
            for (std::size_t i = 0; i < t.ref().size(); ++i)
            {
                err = std::max(err, static_cast<double>(std::fabs(x[i] - y[i])));
                scale = std::max(scale, static_cast<double>(std::fabs(x[i] - b[i])));
            }
        }
        return err / scale;
    }

    void save(const xmerge::model& m, const std::string& dir)
    {
        std::vector<xmerge::const_tensor_ref> refs;
        for (const auto& t : m.tensors())
        {
            refs.push_back(t.ref());
        }
        fs::create_directories(dir);
        xmerge::io::save_safetensors(dir + "/model.safetensors", refs);
    }
}

int main(int argc, char** argv)
{
    const bool keep = argc > 1;
    const fs::path out = keep ? fs::path(argv[1]) : fs::temp_directory_path() / ("xmerge-lora-example-" + std::to_string(std::random_device{}()));
    fs::create_directories(out);
    int status = 0;
    try
    {
        std::mt19937 gen(7);
        const toy_model base = make_base(gen);
        const toy_model math = fine_tune(base.m, gen), code = fine_tune(base.m, gen);
        save(base.m, (out / "base").string());

        // 1. Extraction: rank-8 updates under noise; keep 99.9% of each update's energy, at most rank 16.
        xmerge::lora::extraction_options extract;
        extract.rule = xmerge::truncation::energy(0.999, 16);
        for (const auto& [name, ft] : {std::pair<const char*, const toy_model*>{"math", &math}, {"code", &code}})
        {
            const auto report = xmerge::lora::extract_adapter(base.m, ft->m, (out / (std::string(name) + "_adapter")).string(), extract);
            std::printf("%s: extracted\n", name);
            for (const auto& e : report.tensors)
            {
                if (e.what == xmerge::lora::extracted_tensor::kind::lora)
                {
                    std::printf("  %-40s rank %2zu, kept %.5f of the update's energy\n", e.name.c_str(), e.rank, e.kept_energy);
                }
                else if (e.what == xmerge::lora::extracted_tensor::kind::full)
                {
                    std::printf("  %-40s saved in full\n", e.name.c_str());
                }
            }
            // 2. Fold back: the adapter gives the fine-tune up to the dropped noise.
            const auto adapter = xmerge::lora::adapter::open((out / (std::string(name) + "_adapter")).string());
            const std::string folded_dir = (out / (std::string(name) + "_folded")).string();
            xmerge::lora::fold_adapter(base.m, adapter, folded_dir);
            const double err = relative_error(xmerge::model::open(folded_dir), ft->m, base.m);
            std::printf("  folded back: largest error %.2e of the largest update\n", err);
            status |= err > 0.05;
        }

        // 3. A TIES soup of the two adapters, as a new adapter of rank at most 16, and folded.
        const std::vector<xmerge::lora::adapter> adapters{xmerge::lora::adapter::open((out / "math_adapter").string()),
                                                          xmerge::lora::adapter::open((out / "code_adapter").string())};
        xmerge::lora::soup_options soup;
        soup.method = xmerge::lora::soup_method::ties;
        soup.densities = {0.5};
        xmerge::lora::soup_to_model(base.m, adapters, (out / "soup_folded").string(), soup);
        xmerge::lora::factor_options refactor;
        refactor.rule = xmerge::truncation::rank(16);
        const auto report = xmerge::lora::soup_to_adapter(base.m, adapters, (out / "soup_adapter").string(), soup, refactor);
        double kept = 1.0;
        for (const auto& e : report.tensors)
        {
            kept = std::min(kept, e.kept_energy);
        }
        std::printf("TIES soup: adapter of rank <= 16 keeps at least %.3f of each merged update's energy\n", kept);
        // The soup adapter folded against the soup model: within what rank 16 drops.
        xmerge::lora::fold_adapter(base.m, xmerge::lora::adapter::open((out / "soup_adapter").string()), (out / "soup_adapter_folded").string());
        const double err = relative_error(xmerge::model::open((out / "soup_adapter_folded").string()), xmerge::model::open((out / "soup_folded").string()), base.m);
        std::printf("  soup adapter folded vs soup folded: largest error %.2e of the largest update\n", err);
        status |= !(kept > 0.5);
    }
    catch (const std::exception& e)
    {
        std::fprintf(stderr, "%s\n", e.what());
        status = 1;
    }
    if (!keep)
    {
        std::error_code ec;
        fs::remove_all(out, ec);
    }
    return status;
}
