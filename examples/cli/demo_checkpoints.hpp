// Synthetic checkpoints shaped like a small decoder-only transformer: a base
// model and fine-tunes that each change a different sparse set of weights a
// lot and every weight a little, the situation TIES-style merges are for.
#ifndef XMERGE_CLI_DEMO_CHECKPOINTS_HPP
#define XMERGE_CLI_DEMO_CHECKPOINTS_HPP

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include <xmerge/io/checkpoint_writer.hpp>
#include <xmerge/core/tensor_ref.hpp>
#include <xmerge/simd/convert.hpp>
#include <xmerge/simd/random.hpp>

namespace xmerge_cli
{
    struct demo_options
    {
        std::size_t models = 3;
        std::size_t layers = 4;
        std::size_t hidden = 256;
        std::size_t intermediate = 512;
        std::size_t vocab = 1024;
        xmerge::dtype type = xmerge::dtype::bfloat16;
        std::uint64_t shard_bytes = 5'000'000'000ull;
        std::uint64_t seed = 1;
        std::size_t threads = 0;
        bool overwrite = false;
    };

    namespace detail
    {
        inline std::uint64_t mix(std::uint64_t x)
        {
            x += 0x9e3779b97f4a7c15ull;
            x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
            x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
            return x ^ (x >> 31);
        }

        // Roughly normal with unit variance: the sum of three uniforms, rescaled (Irwin-Hall).
        inline float unit_noise(std::uint64_t h)
        {
            const float a = static_cast<float>(h & 0x1fffff) / 2097152.0f;
            const float b = static_cast<float>((h >> 21) & 0x1fffff) / 2097152.0f;
            const float c = static_cast<float>((h >> 42) & 0x1fffff) / 2097152.0f;
            return (a + b + c - 1.5f) * 2.0f;
        }

        struct demo_tensor
        {
            std::string name;
            xmerge::shape_type shape;
            float scale;   // spread of the base weights
            float offset;  // 1 for norm weights
        };

        inline std::vector<demo_tensor> demo_layout(const demo_options& o)
        {
            const float w = 0.02f;
            std::vector<demo_tensor> t;
            t.push_back({"model.embed_tokens.weight", {o.vocab, o.hidden}, w, 0.0f});
            for (std::size_t l = 0; l < o.layers; ++l)
            {
                const std::string p = "model.layers." + std::to_string(l) + ".";
                t.push_back({p + "input_layernorm.weight", {o.hidden}, 0.01f, 1.0f});
                for (const char* proj : {"q_proj", "k_proj", "v_proj", "o_proj"})
                {
                    t.push_back({p + "self_attn." + proj + ".weight", {o.hidden, o.hidden}, w, 0.0f});
                }
                t.push_back({p + "post_attention_layernorm.weight", {o.hidden}, 0.01f, 1.0f});
                t.push_back({p + "mlp.gate_proj.weight", {o.intermediate, o.hidden}, w, 0.0f});
                t.push_back({p + "mlp.up_proj.weight", {o.intermediate, o.hidden}, w, 0.0f});
                t.push_back({p + "mlp.down_proj.weight", {o.hidden, o.intermediate}, w, 0.0f});
            }
            t.push_back({"model.norm.weight", {o.hidden}, 0.01f, 1.0f});
            t.push_back({"lm_head.weight", {o.vocab, o.hidden}, w, 0.0f});
            return t;
        }

        // Model 0 is the base; model k > 0 adds a dense small update and a sparse large one.
        inline void fill(const demo_tensor& t, std::size_t model, std::uint64_t seed, float* out, std::size_t begin, std::size_t n)
        {
            const std::uint64_t key = mix(seed ^ xmerge::simd::hash_name(t.name));
            const std::uint64_t task = mix(key ^ (0x51ed2701ull * (model + 1)));
            for (std::size_t i = 0; i < n; ++i)
            {
                const std::uint64_t idx = begin + i;
                float v = t.offset + t.scale * unit_noise(mix(key + idx));
                if (model > 0)
                {
                    const std::uint64_t h = mix(task + idx);
                    v += 0.02f * t.scale * unit_noise(h);
                    if ((h >> 56) < 13)  // about 5% of the weights carry the task
                    {
                        v += 0.5f * t.scale * unit_noise(mix(h));
                    }
                }
                out[i] = v;
            }
        }

        inline std::string demo_config(const demo_options& o)
        {
            nlohmann::ordered_json c;
            c["architectures"] = {"LlamaForCausalLM"};
            c["model_type"] = "llama";
            c["hidden_size"] = o.hidden;
            c["intermediate_size"] = o.intermediate;
            c["num_hidden_layers"] = o.layers;
            c["num_attention_heads"] = std::max<std::size_t>(1, o.hidden / 64);
            c["num_key_value_heads"] = std::max<std::size_t>(1, o.hidden / 64);
            c["vocab_size"] = o.vocab;
            c["rms_norm_eps"] = 1e-5;
            c["tie_word_embeddings"] = false;
            c["torch_dtype"] = o.type == xmerge::dtype::float32 ? "float32" : (o.type == xmerge::dtype::bfloat16 ? "bfloat16" : "float16");
            return c.dump(2) + "\n";
        }
    }

    /// Names of the demo's fine-tunes.
    inline std::string demo_model_name(std::size_t k)
    {
        static const char* names[] = {"math", "code", "chat", "law", "bio", "poetry"};
        return k < 6 ? names[k] : "task" + std::to_string(k);
    }

    /// Writes DIR/base and DIR/<task> for each fine-tune; returns the bytes written.
    inline std::uint64_t make_demo(const std::string& dir, const demo_options& o)
    {
        const auto layout = detail::demo_layout(o);
        std::vector<xmerge::io::tensor_info> infos;
        for (const auto& t : layout)
        {
            infos.push_back({t.name, xmerge::io::safetensors_name(o.type), t.shape, 0, 0});
        }
        std::size_t threads = o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency());
        std::uint64_t total = 0;
        for (std::size_t m = 0; m <= o.models; ++m)
        {
            const std::string name = m == 0 ? "base" : demo_model_name(m - 1);
            xmerge::io::checkpoint_options co;
            co.max_shard_bytes = o.shard_bytes;
            co.overwrite = o.overwrite;
            co.metadata = {{"format", "pt"}};
            xmerge::io::checkpoint_writer w(dir + "/" + name, infos, co);
            for (const auto& t : layout)
            {
                xmerge::tensor_ref out = w.tensor(t.name);
                const std::size_t n = out.size();
                const std::size_t per = (n + threads - 1) / threads;
                std::vector<std::thread> pool;
                for (std::size_t th = 0; th < threads && th * per < n; ++th)
                {
                    pool.emplace_back([&, th]
                    {
                        std::vector<float> buf(8192);
                        const std::size_t end = std::min(n, (th + 1) * per);
                        for (std::size_t b = th * per; b < end; b += buf.size())
                        {
                            const std::size_t len = std::min(buf.size(), end - b);
                            detail::fill(t, m, o.seed, buf.data(), b, len);
                            xmerge::simd::store_from_float(out.type(), buf.data(), out.data(), b, len);
                        }
                    });
                }
                for (auto& th : pool)
                {
                    th.join();
                }
                w.finish(t.name);
            }
            w.add_file_contents("config.json", detail::demo_config(o));
            w.add_file_contents("tokenizer_config.json", "{\n  \"model_max_length\": 2048,\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\"\n}\n");
            w.add_file_contents("special_tokens_map.json", "{\n  \"bos_token\": \"<s>\",\n  \"eos_token\": \"</s>\"\n}\n");
            w.commit();
            total += w.total_bytes();
        }
        return total;
    }
}

#endif
