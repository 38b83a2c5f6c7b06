/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_MODEL_MOE_HPP
#define XMERGE_MODEL_MOE_HPP

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../core/evaluate.hpp"
#include "../io/checkpoint_writer.hpp"
#include "../io/companion_files.hpp"
#include "../io/model_config.hpp"
#include "../ops/input.hpp"
#include "../ops/list.hpp"
#include "../ops/weighted_sum.hpp"
#include "../simd/random.hpp"
#include "model.hpp"

/**
 * @file
 * Mixture-of-experts checkpoints to dense ones and back.
 *
 * collapse_experts() averages each layer's experts into one dense MLP
 * (uniformly, or with per-expert weights such as router usage), drops the
 * routers, and writes a dense checkpoint with its config.json rewritten.
 * upcycle_experts() goes the other way: every expert starts as a copy of
 * the dense MLP (sparse upcycling, Komatsuzaki et al. 2023) and each layer
 * gets a router. Both stream tensor by tensor into an atomically written
 * checkpoint (io::checkpoint_writer): the output directory appears
 * complete or not at all.
 */

namespace xmerge
{
    /**
     * One family of expert tensors: `expert` is a name fragment holding
     * "{e}" for the expert index (digits), `dense` what replaces it in the
     * dense model. {"block_sparse_moe.experts.{e}.w1.", "mlp.gate_proj."}
     * maps model.layers.3.block_sparse_moe.experts.5.w1.weight to
     * model.layers.3.mlp.gate_proj.weight.
     */
    struct expert_rule
    {
        std::string expert;
        std::string dense;
    };

    /// How an architecture names its experts and routers, and what its config says about them.
    struct moe_layout
    {
        std::vector<expert_rule> experts;
        /// Name fragments of router tensors (dropped by a collapse).
        std::vector<std::string> routers;
        /// Other name fragments a collapse drops (a shared expert).
        std::vector<std::string> dropped;
        /// Upcycling puts a router next to every dense tensor holding `router_anchor`, named with it replaced by `router_name`.
        std::string router_anchor;
        std::string router_name;
        /// config.json: (MoE, dense) pairs of model_type and of architectures entries.
        std::vector<std::pair<std::string, std::string>> model_types;
        std::vector<std::pair<std::string, std::string>> architectures;
        /// Keys only the MoE config has (removed by a collapse).
        std::vector<std::string> moe_keys;
        /// Where upcycling writes the expert count and the experts used per token.
        std::string expert_count_key;
        std::string experts_per_token_key;
        /// (dense key, MoE key) pairs: a collapse sets the dense key from the MoE one, upcycling the reverse.
        std::vector<std::pair<std::string, std::string>> sizes;

        /// Mixtral (block_sparse_moe.experts.{e}.w1/w2/w3 <-> Mistral's mlp.gate_proj/down_proj/up_proj).
        static moe_layout mixtral();
        /// Qwen3-MoE (mlp.experts.{e}.* <-> Qwen3's mlp.*; router mlp.gate).
        static moe_layout qwen3_moe();
        /// Qwen2-MoE, collapse only: its shared expert and shared-expert gate are dropped.
        static moe_layout qwen2_moe();
        /// Any model whose experts are named "experts.{e}." (removed from the name); config untouched but for moe_keys.
        static moe_layout generic();
    };

    /// Options of collapse_experts and upcycle_experts.
    struct moe_options
    {
        /// 0: every hardware thread.
        std::size_t threads = 0;
        /// dtype of the F32/BF16/F16 tensors written; by default each input tensor's.
        std::optional<dtype> out_dtype;
        /// Shard size, overwrite, sync, metadata of the output.
        io::checkpoint_options output;
    };

    struct collapse_options : moe_options
    {
        /// One weight per expert (e.g. how often the router picked it), normalized to sum 1; empty: uniform.
        std::vector<double> weights;
    };

    /// How upcycling initializes the routers.
    enum class router_init
    {
        /// All logits zero: every expert equally likely; top-k ties go to the lowest indices.
        zeros,
        /// Independent N(0, init_std^2) values from a counter-based generator keyed by seed and tensor name.
        normal
    };

    struct upcycle_options : moe_options
    {
        std::size_t experts = 8;
        std::size_t experts_per_token = 2;
        router_init init = router_init::normal;
        double init_std = 0.02;
        std::uint64_t seed = 0;
    };

    struct moe_summary
    {
        /// Tensors written.
        std::size_t tensors = 0;
        /// Expert count of the MoE side.
        std::size_t experts = 0;
        /// Tensors of the input not written (routers, dropped parts).
        std::size_t dropped = 0;
        /// Bytes of tensor data written.
        std::size_t bytes = 0;
    };

    /**
     * Writes the dense model whose every expert family is the weighted mean
     * of its experts, without routers. Throws io_error or shape_error (naming
     * the tensor) when a layer lacks an expert, experts differ in shape or
     * dtype, or a dense name is already taken; parameter_error for weights
     * that are not one finite non-negative number per expert with a positive
     * sum, or when no expert tensor matches the layout.
     */
    inline moe_summary collapse_experts(const model& moe, const std::string& out_dir, const moe_layout& layout, const collapse_options& options = {});

    /**
     * Writes the MoE model whose experts are copies of each dense MLP, with
     * a router of shape [experts, in_features of the anchor] per layer.
     * Throws parameter_error when the layout cannot upcycle or nothing
     * matches, for fewer than 1 expert or experts_per_token outside
     * [1, experts].
     */
    inline moe_summary upcycle_experts(const model& dense, const std::string& out_dir, const moe_layout& layout, const upcycle_options& options = {});

    namespace detail
    {
        struct expert_match
        {
            std::size_t pos = 0;
            std::size_t length = 0;
            std::size_t expert = 0;
        };

        /// The first place `name` holds rule.expert with digits for {e}.
        inline std::optional<expert_match> match_expert(const std::string& name, const std::string& pattern);
        inline bool contains_any(const std::string& name, const std::vector<std::string>& fragments);
        /// The value of element i of a counter-based N(0, 1) stream.
        inline double counter_normal(std::uint64_t key, std::size_t i);
        /**
         * config.json of the checkpoint directory `source` was opened from,
         * edited by `edit`, and its other companion files, added to the
         * writer; none for a model opened from a file or held in memory.
         */
        template <class Edit>
        void write_companions(const model& source, io::checkpoint_writer& writer, const std::optional<dtype>& out_dtype, Edit edit);
    }

    /********************
     * Implementation   *
     ********************/

    inline moe_layout moe_layout::mixtral()
    {
        moe_layout l;
        l.experts = {{"block_sparse_moe.experts.{e}.w1.", "mlp.gate_proj."},
                     {"block_sparse_moe.experts.{e}.w2.", "mlp.down_proj."},
                     {"block_sparse_moe.experts.{e}.w3.", "mlp.up_proj."}};
        l.routers = {"block_sparse_moe.gate."};
        l.router_anchor = "mlp.gate_proj.weight";
        l.router_name = "block_sparse_moe.gate.weight";
        l.model_types = {{"mixtral", "mistral"}};
        l.architectures = {{"MixtralForCausalLM", "MistralForCausalLM"}};
        l.moe_keys = {"num_local_experts", "num_experts_per_tok", "router_aux_loss_coef", "output_router_logits", "router_jitter_noise"};
        l.expert_count_key = "num_local_experts";
        l.experts_per_token_key = "num_experts_per_tok";
        return l;
    }

    inline moe_layout moe_layout::qwen3_moe()
    {
        moe_layout l;
        l.experts = {{"mlp.experts.{e}.", "mlp."}};
        l.routers = {"mlp.gate."};
        l.router_anchor = "mlp.gate_proj.weight";
        l.router_name = "mlp.gate.weight";
        l.model_types = {{"qwen3_moe", "qwen3"}};
        l.architectures = {{"Qwen3MoeForCausalLM", "Qwen3ForCausalLM"}};
        l.moe_keys = {"num_experts",   "num_experts_per_tok", "moe_intermediate_size", "decoder_sparse_step", "mlp_only_layers",
                      "norm_topk_prob", "output_router_logits", "router_aux_loss_coef"};
        l.expert_count_key = "num_experts";
        l.experts_per_token_key = "num_experts_per_tok";
        l.sizes = {{"intermediate_size", "moe_intermediate_size"}};
        return l;
    }

    inline moe_layout moe_layout::qwen2_moe()
    {
        moe_layout l = qwen3_moe();
        l.dropped = {"mlp.shared_expert.", "mlp.shared_expert_gate."};
        l.router_anchor.clear();
        l.model_types = {{"qwen2_moe", "qwen2"}};
        l.architectures = {{"Qwen2MoeForCausalLM", "Qwen2ForCausalLM"}};
        l.moe_keys.push_back("shared_expert_intermediate_size");
        return l;
    }

    inline moe_layout moe_layout::generic()
    {
        moe_layout l;
        l.experts = {{"experts.{e}.", ""}};
        l.routers = {"router.", "gate.weight"};
        l.moe_keys = {"num_experts", "num_local_experts", "num_experts_per_tok"};
        return l;
    }

    namespace detail
    {
        inline std::optional<expert_match> match_expert(const std::string& name, const std::string& pattern)
        {
            const std::size_t slot = pattern.find("{e}");
            if (slot == std::string::npos)
            {
                throw parameter_error("", "experts", "expert pattern '" + pattern + "' has no {e}");
            }
            const std::string before = pattern.substr(0, slot), after = pattern.substr(slot + 3);
            for (std::size_t pos = name.find(before); pos != std::string::npos; pos = name.find(before, pos + 1))
            {
                std::size_t q = pos + before.size(), digits = 0;
                std::size_t e = 0;
                while (q < name.size() && name[q] >= '0' && name[q] <= '9' && digits < 9)
                {
                    e = e * 10 + static_cast<std::size_t>(name[q] - '0');
                    ++q;
                    ++digits;
                }
                if (digits > 0 && name.compare(q, after.size(), after) == 0)
                {
                    return expert_match{pos, q + after.size() - pos, e};
                }
            }
            return std::nullopt;
        }

        inline bool contains_any(const std::string& name, const std::vector<std::string>& fragments)
        {
            for (const auto& f : fragments)
            {
                if (!f.empty() && name.find(f) != std::string::npos)
                {
                    return true;
                }
            }
            return false;
        }

        inline double counter_normal(std::uint64_t key, std::size_t i)
        {
            // Box-Muller on two uniforms in (0, 1] from consecutive counters.
            const double scale = 1.0 / 9007199254740992.0;
            const double u = (static_cast<double>(xmerge::simd::detail::splitmix64(key + 2 * i) >> 11) + 1.0) * scale;
            const double v = static_cast<double>(xmerge::simd::detail::splitmix64(key + 2 * i + 1) >> 11) * scale;
            return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
        }

        inline std::uint64_t name_key(std::uint64_t seed, const std::string& name)
        {
            return xmerge::simd::detail::splitmix64(seed) ^ xmerge::simd::hash_name(name);
        }

        template <class Edit>
        inline void write_companions(const model& source, io::checkpoint_writer& writer, const std::optional<dtype>& out_dtype, Edit edit)
        {
            if (source.directory().empty())
            {
                return;
            }
            const std::string& directory = source.name();
            for (const std::string& name : io::companion_files(directory))
            {
                const std::string path = (std::filesystem::path(directory) / name).string();
                if (name != "config.json")
                {
                    writer.add_file(path, name);
                    continue;
                }
                io::model_config config = io::model_config::open(path);
                if (out_dtype)
                {
                    config.set_dtype(*out_dtype);
                }
                nlohmann::ordered_json j = config.json();
                edit(j);
                writer.add_file_contents(name, j.dump(2) + "\n");
            }
        }

        inline void rename_config(nlohmann::ordered_json& j, const moe_layout& layout, bool to_dense)
        {
            for (const auto& [moe, dense] : layout.model_types)
            {
                if (j.contains("model_type") && j["model_type"] == (to_dense ? moe : dense))
                {
                    j["model_type"] = to_dense ? dense : moe;
                }
            }
            if (j.contains("architectures") && j["architectures"].is_array())
            {
                for (auto& a : j["architectures"])
                {
                    for (const auto& [moe, dense] : layout.architectures)
                    {
                        if (a == (to_dense ? moe : dense))
                        {
                            a = to_dense ? dense : moe;
                        }
                    }
                }
            }
        }

        // Output dtype of an input tensor: out_dtype for arithmetic ones.
        inline std::string output_dtype(const model_tensor& t, const moe_options& options)
        {
            return t.is_arithmetic() && options.out_dtype ? io::safetensors_name(*options.out_dtype) : t.dtype;
        }

        // Writes `t` under `name` with dtype `out`: its bytes when the dtype is kept, else converted.
        inline void write_copy(io::checkpoint_writer& writer, const std::string& name, const std::string& out, const model_tensor& t,
                               const eval_options& eval)
        {
            if (out == t.dtype)
            {
                writer.write(name, t.data, t.bytes);
            }
            else
            {
                xmerge::evaluate(input(t.ref()), writer.tensor(name), eval);
            }
            writer.finish(name);
        }

        inline eval_options moe_eval(const moe_options& options)
        {
            eval_options e;
            e.threads = options.threads;
            return e;
        }
    }

    inline moe_summary collapse_experts(const model& moe, const std::string& out_dir, const moe_layout& layout, const collapse_options& options)
    {
        // Dense name -> the tensors of its experts, indexed by expert.
        struct group
        {
            std::string name;
            const model_tensor* first = nullptr;
            std::map<std::size_t, const model_tensor*> experts;
        };
        std::vector<group> outputs;
        std::map<std::string, std::size_t> slot;
        moe_summary summary;
        std::size_t expert_count = 0;
        for (const model_tensor& t : moe.tensors())
        {
            std::string dense = t.name;
            std::optional<detail::expert_match> m;
            for (const expert_rule& rule : layout.experts)
            {
                if ((m = detail::match_expert(t.name, rule.expert)))
                {
                    dense = t.name.substr(0, m->pos) + rule.dense + t.name.substr(m->pos + m->length);
                    break;
                }
            }
            if (!m && (detail::contains_any(t.name, layout.routers) || detail::contains_any(t.name, layout.dropped)))
            {
                ++summary.dropped;
                continue;
            }
            auto [it, fresh] = slot.emplace(dense, outputs.size());
            if (fresh)
            {
                outputs.push_back({dense, &t, {}});
            }
            group& g = outputs[it->second];
            if (!m)
            {
                if (!fresh)
                {
                    throw io_error(moe.name(), t.name, "is also the dense name of an expert family; the collapse would write it twice");
                }
                continue;
            }
            if (g.experts.empty() && !fresh)
            {
                throw io_error(moe.name(), t.name, "collapses to " + dense + ", which the model already has");
            }
            if (!g.experts.emplace(m->expert, &t).second)
            {
                throw io_error(moe.name(), t.name, "is expert " + std::to_string(m->expert) + " of " + dense + " a second time");
            }
            if (t.dtype != g.first->dtype || t.shape != g.first->shape)
            {
                throw shape_error(t.name, "experts", "is " + t.dtype + " " + to_string(t.shape) + " but " + g.first->name + " is " + g.first->dtype + " "
                                                         + to_string(g.first->shape));
            }
            if (!t.is_arithmetic())
            {
                throw io_error(moe.name(), t.name, "has dtype " + t.dtype + ", which cannot be averaged");
            }
            expert_count = std::max(expert_count, m->expert + 1);
        }
        if (expert_count == 0)
        {
            throw parameter_error("", "experts", "no tensor of " + moe.name() + " matches the layout's expert patterns");
        }
        for (const group& g : outputs)
        {
            if (!g.experts.empty() && g.experts.size() != expert_count)
            {
                throw io_error(moe.name(), g.first->name, "its family " + g.name + " has " + std::to_string(g.experts.size()) + " experts, others have "
                                                              + std::to_string(expert_count));
            }
        }
        std::vector<double> weights = options.weights.empty() ? std::vector<double>(expert_count, 1.0) : options.weights;
        if (weights.size() != expert_count)
        {
            throw parameter_error("", "weights", "expected one weight per expert (" + std::to_string(expert_count) + "), got " + std::to_string(weights.size()));
        }
        double total = 0.0;
        for (double w : weights)
        {
            if (!(std::isfinite(w) && w >= 0.0))
            {
                throw parameter_error("", "weights", "expert weights must be finite and non-negative, got " + std::to_string(w));
            }
            total += w;
        }
        if (!(total > 0.0))
        {
            throw parameter_error("", "weights", "the expert weights sum to zero");
        }
        for (double& w : weights)
        {
            w /= total;
        }

        std::vector<io::tensor_info> infos;
        for (const group& g : outputs)
        {
            infos.push_back({g.name, detail::output_dtype(*g.first, options), g.first->shape, 0, 0});
        }
        io::checkpoint_writer writer(out_dir, infos, options.output);
        const eval_options eval = detail::moe_eval(options);
        for (std::size_t i = 0; i < outputs.size(); ++i)
        {
            const group& g = outputs[i];
            if (g.experts.empty())
            {
                detail::write_copy(writer, g.name, infos[i].dtype, *g.first, eval);
                moe.release(*g.first);
                continue;
            }
            expression_list<input_node> terms;
            for (const auto& [e, t] : g.experts)
            {
                terms.push_back(input(t->ref()));
            }
            xmerge::evaluate(weighted_sum(terms, weights), writer.tensor(g.name), eval);
            writer.finish(g.name);
            for (const auto& [e, t] : g.experts)
            {
                moe.release(*t);
            }
        }
        detail::write_companions(moe, writer, options.out_dtype, [&layout](nlohmann::ordered_json& j) {
            for (const auto& [dense_key, sparse_key] : layout.sizes)
            {
                if (j.contains(sparse_key))
                {
                    j[dense_key] = j[sparse_key];
                }
            }
            for (const std::string& key : layout.moe_keys)
            {
                j.erase(key);
            }
            detail::rename_config(j, layout, true);
        });
        writer.commit();
        summary.tensors = outputs.size();
        summary.experts = expert_count;
        summary.bytes = writer.total_bytes();
        return summary;
    }

    inline moe_summary upcycle_experts(const model& dense, const std::string& out_dir, const moe_layout& layout, const upcycle_options& options)
    {
        if (layout.router_anchor.empty() || layout.router_name.empty())
        {
            throw parameter_error("", "layout", "this layout names no router to create, so it cannot upcycle");
        }
        if (options.experts == 0)
        {
            throw parameter_error("", "experts", "must be at least 1");
        }
        if (options.experts_per_token == 0 || options.experts_per_token > options.experts)
        {
            throw parameter_error("", "experts_per_token", "must be in [1, " + std::to_string(options.experts) + "], got " + std::to_string(options.experts_per_token));
        }
        if (!(std::isfinite(options.init_std) && options.init_std >= 0.0))
        {
            throw parameter_error("", "init_std", "must be finite and non-negative, got " + std::to_string(options.init_std));
        }
        // An output tensor: a copy of `source`, or a router when `router` is set.
        struct output
        {
            io::tensor_info info;
            const model_tensor* source;
            bool router;
        };
        std::vector<output> outputs;
        std::size_t matched = 0;
        for (const model_tensor& t : dense.tensors())
        {
            const expert_rule* rule = nullptr;
            std::size_t pos = std::string::npos;
            for (const expert_rule& r : layout.experts)
            {
                if (r.dense.empty())
                {
                    throw parameter_error("", "layout", "expert pattern '" + r.expert + "' has no dense name fragment to upcycle from");
                }
                if ((pos = t.name.find(r.dense)) != std::string::npos)
                {
                    rule = &r;
                    break;
                }
            }
            const std::string out_dtype = detail::output_dtype(t, options);
            if (rule == nullptr)
            {
                outputs.push_back({{t.name, out_dtype, t.shape, 0, 0}, &t, false});
            }
            else
            {
                if (!t.is_arithmetic())
                {
                    throw io_error(dense.name(), t.name, "has dtype " + t.dtype + ", which upcycling does not copy into experts");
                }
                ++matched;
                const std::size_t slot = rule->expert.find("{e}");
                for (std::size_t e = 0; e < options.experts; ++e)
                {
                    std::string fragment = rule->expert;
                    fragment.replace(slot, 3, std::to_string(e));
                    outputs.push_back({{t.name.substr(0, pos) + fragment + t.name.substr(pos + rule->dense.size()), out_dtype, t.shape, 0, 0}, &t, false});
                }
            }
            const std::size_t anchor = t.name.find(layout.router_anchor);
            if (anchor != std::string::npos)
            {
                if (t.shape.size() != 2)
                {
                    throw shape_error(t.name, "router_anchor", "a router needs a 2-D anchor (out, in), got " + to_string(t.shape));
                }
                const std::string name = t.name.substr(0, anchor) + layout.router_name + t.name.substr(anchor + layout.router_anchor.size());
                outputs.push_back({{name, out_dtype, shape_type{options.experts, t.shape[1]}, 0, 0}, &t, true});
            }
        }
        if (matched == 0)
        {
            throw parameter_error("", "layout", "no tensor of " + dense.name() + " matches the layout's dense names");
        }
        std::vector<io::tensor_info> infos;
        for (const output& o : outputs)
        {
            infos.push_back(o.info);
        }
        io::checkpoint_writer writer(out_dir, infos, options.output);
        const eval_options eval = detail::moe_eval(options);
        std::vector<float> router;
        for (const output& o : outputs)
        {
            if (!o.router)
            {
                detail::write_copy(writer, o.info.name, o.info.dtype, *o.source, eval);
                continue;
            }
            router.assign(numel(o.info.shape), 0.0f);
            if (options.init == router_init::normal)
            {
                const std::uint64_t key = detail::name_key(options.seed, o.info.name);
                for (std::size_t i = 0; i < router.size(); ++i)
                {
                    router[i] = static_cast<float>(options.init_std * detail::counter_normal(key, i));
                }
            }
            xmerge::evaluate(input(as_tensor(router, o.info.shape, o.info.name)), writer.tensor(o.info.name), eval);
            writer.finish(o.info.name);
        }
        detail::write_companions(dense, writer, options.out_dtype, [&layout, &options](nlohmann::ordered_json& j) {
            for (const auto& [dense_key, sparse_key] : layout.sizes)
            {
                if (j.contains(dense_key))
                {
                    j[sparse_key] = j[dense_key];
                }
            }
            if (!layout.expert_count_key.empty())
            {
                j[layout.expert_count_key] = options.experts;
            }
            if (!layout.experts_per_token_key.empty())
            {
                j[layout.experts_per_token_key] = options.experts_per_token;
            }
            detail::rename_config(j, layout, false);
        });
        writer.commit();
        moe_summary summary;
        summary.tensors = outputs.size();
        summary.experts = options.experts;
        summary.bytes = writer.total_bytes();
        return summary;
    }
}

#endif
