// Writes adapters with xmerge for check.py to load with the real peft:
//
//     write_adapters DATA_DIR OUT_DIR
//
// DATA_DIR is tests/data/lora. Each OUT_DIR/<case> gets base/ (the base
// model), adapter/ (written here) and folded/ (xmerge's fold of it).
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <xmerge/lora/extract_model.hpp>
#include <xmerge/lora/fold_model.hpp>
#include <xmerge/lora/soup.hpp>

namespace fs = std::filesystem;
using namespace xmerge;

int main(int argc, char** argv)
{
    if (argc != 3)
    {
        std::fprintf(stderr, "usage: write_adapters DATA_DIR OUT_DIR\n");
        return 2;
    }
    const std::string data = argv[1], out = argv[2];
    const model llama = model::open(data + "/base_llama");
    const auto finish = [&](const std::string& name, const model& base)
    {
        fs::create_directories(out + "/" + name + "/base");
        fs::copy_file(base.files()[0], out + "/" + name + "/base/model.safetensors", fs::copy_options::overwrite_existing);
        lora::fold_adapter(base, lora::adapter::open(out + "/" + name + "/adapter"), out + "/" + name + "/folded");
    };
    // Extraction with per-module ranks (energy), embeddings as LoRA, saved modules.
    {
        lora::extraction_options o;
        o.rule = truncation::energy(0.9);
        o.embeddings_as_lora = true;
        lora::extract_adapter(llama, model::open(data + "/embedding_saved/expected.safetensors"), out + "/extract_energy/adapter", o);
        finish("extract_energy", llama);
    }
    // Extraction of a fine-tune with changed biases of LoRA layers (PEFT's bias = "lora_only").
    {
        lora::extraction_options o;
        o.rule = truncation::rank(8);
        lora::extract_adapter(llama, model::open(data + "/rslora/expected.safetensors"), out + "/extract_biases/adapter", o);
        finish("extract_biases", llama);
    }
    // peft's own adapters written again: DoRA in bfloat16, fan_in_fan_out DoRA, a convolution, rsLoRA with lora_bias.
    for (const auto& [name, base] : std::vector<std::pair<std::string, std::string>>{
             {"dora", "base_llama"}, {"dora_fan_in_fan_out", "base_gpt2"}, {"conv", "base_conv"}, {"rslora", "base_llama"}, {"patterns", "base_llama"}})
    {
        lora::write_options w;
        if (name == "dora")
        {
            w.out_dtype = dtype::bfloat16;
        }
        lora::write_adapter(out + "/rewrite_" + name + "/adapter", lora::adapter::open(data + "/" + name), w);
        finish("rewrite_" + name, model::open(data + "/" + base));
    }
    // Soups as adapters: linear (exact stacking, ranks add up) and TIES (refactored to rank 6).
    {
        const std::vector<lora::adapter> adapters{lora::adapter::open(data + "/lora"), lora::adapter::open(data + "/patterns"),
                                                  lora::adapter::open(data + "/embedding_saved")};
        lora::soup_options linear;
        linear.weights = {0.5, 0.3, 0.2};
        lora::factor_options exact;
        exact.rule = truncation::rank(64);
        lora::soup_to_adapter(llama, adapters, out + "/soup_linear/adapter", linear, exact);
        finish("soup_linear", llama);
        lora::soup_options ties;
        ties.method = lora::soup_method::ties;
        ties.densities = {0.6};
        lora::factor_options cut;
        cut.rule = truncation::rank(6);
        lora::soup_to_adapter(llama, adapters, out + "/soup_ties/adapter", ties, cut);
        finish("soup_ties", llama);
    }
    std::printf("written to %s\n", out.c_str());
    return 0;
}
