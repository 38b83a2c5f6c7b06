// Runs every case of the mergekit conformance set as `xmerge run` does
// (xmerge::recipe_job) and compares the output with what mergekit wrote
// (tests/data/conformance, produced once by make_conformance.py; see its
// README). Built with the compiler's default flags, whose float arithmetic
// rounds every product as torch does, so float32 merges are compared bit for bit.
//
//   xmerge_conformance DATA_DIR SCRATCH_DIR [CASE_SUBSTRING]
//
// Prints PASS / FAIL / SKIP per case and a summary; exits non-zero when a
// case fails. Cases whose method the registry lacks are skipped.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <xmerge/core/fnv1a.hpp>
#include <xmerge/io/model_config.hpp>
#include <xmerge/io/tokenizer.hpp>
#include <xmerge/methods/builtin.hpp>
#include <xmerge/model/model.hpp>
#include <xmerge/recipe/recipe_job.hpp>
#include <xmerge/simd/convert.hpp>

namespace
{
    namespace fs = std::filesystem;

    // Compared with the output of mergekit computing in bfloat16 (float16), whose
    // every operation rounds, xmerge computes in float32 and rounds once.
    struct half_tolerance
    {
        // Differences up to `ulps` units in the last place of the expected value's
        // format (of the tensor's RMS for smaller values) are rounding; a share
        // `share_beyond` of the elements may differ by more.
        double ulps;
        double share_beyond;
    };

    std::string fnv1a64(const std::uint8_t* p, std::size_t n)
    {
        xmerge::detail::fnv1a h;
        h.bytes(p, n);
        char buf[17];
        std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h.value()));
        return buf;
    }

    xmerge::shape_type shape_of(const nlohmann::json& j)
    {
        xmerge::shape_type s;
        for (const auto& d : j)
        {
            s.push_back(d.get<std::int64_t>());
        }
        return s;
    }

    std::vector<float> as_float(const xmerge::model_tensor& t)
    {
        const xmerge::const_tensor_ref r = t.ref();
        std::vector<float> v(r.size());
        xmerge::simd::load_as_float(r.type(), r.data(), 0, v.size(), v.data());
        return v;
    }

    // mergekit writes a LLaVA checkpoint's vision tower and projector under "model."
    // (transformers' in-memory names); xmerge keeps the checkpoint's names.
    const xmerge::model_tensor* find_output(const xmerge::model& out, const std::string& expected_name)
    {
        if (const auto* t = out.find(expected_name))
        {
            return t;
        }
        if (expected_name.rfind("model.vision_tower.", 0) == 0 || expected_name.rfind("model.multi_modal_projector.", 0) == 0)
        {
            return out.find(expected_name.substr(6));
        }
        return nullptr;
    }

    // Output tensors mergekit does not write: it drops the language model of a
    // LLaVA checkpoint saved in transformers' layout (mergekit 0.1.5); xmerge merges it.
    bool known_extra(const std::string& case_name, const std::string& tensor)
    {
        return case_name.rfind("vlm_", 0) == 0 && tensor.rfind("language_model.", 0) == 0;
    }

    struct result
    {
        bool passed = true;
        std::string detail;
        void fail(const std::string& why)
        {
            if (passed)
            {
                detail = why;
            }
            passed = false;
        }
    };

    std::string format(const char* fmt, double a, double b = 0, double c = 0)
    {
        char buf[256];
        std::snprintf(buf, sizeof buf, fmt, a, b, c);
        return buf;
    }

    // Root mean square of a tensor: the scale below which a difference is cancellation noise.
    double rms(const std::vector<float>& v)
    {
        double s = 0;
        for (float x : v)
        {
            s += static_cast<double>(x) * x;
        }
        return v.empty() ? 0.0 : std::sqrt(s / static_cast<double>(v.size()));
    }

    // The largest difference between x and y in units in the last place of y's format
    // (`mantissa` stored bits), values below `floor` counted as `floor`.
    double worst_ulps(const std::vector<float>& x, const std::vector<float>& y, int mantissa, double floor, std::size_t* beyond = nullptr, double limit = 0)
    {
        double worst = 0;
        for (std::size_t i = 0; i < x.size() && i < y.size(); ++i)
        {
            if (x[i] == y[i])
            {
                continue;
            }
            const double magnitude = std::max({std::fabs(static_cast<double>(y[i])), floor, 1e-30});
            const double ulp = std::ldexp(1.0, std::ilogb(magnitude) - mantissa);
            const double d = std::fabs(static_cast<double>(x[i]) - y[i]) / ulp;
            worst = std::max(worst, d);
            if (beyond && d > limit)
            {
                ++*beyond;
            }
        }
        return worst;
    }

    std::vector<float> rounded_to_bfloat16(const std::vector<float>& x)
    {
        std::vector<std::uint16_t> half(x.size());
        std::vector<float> out(x.size());
        xmerge::simd::store_from_float(xmerge::dtype::bfloat16, x.data(), half.data(), 0, x.size());
        xmerge::simd::load_as_float(xmerge::dtype::bfloat16, half.data(), 0, x.size(), out.data());
        return out;
    }

    // Every tensor's bits against mergekit's digest; where they differ, its values
    // rounded to bfloat16 against mergekit's, to within one bfloat16 unit.
    // threshold_flips: the share of a tensor's elements (at least one) allowed
    // beyond one bfloat16 unit, for methods whose mask compares a computed value with a
    // threshold taken from the same values (see README.md).
    void compare_exact(const std::string& name, const fs::path& expected_dir, const xmerge::model& out, result& r, std::string& stats,
                       double threshold_flips = 0.0)
    {
        std::ifstream in(expected_dir / "tensors.json");
        const nlohmann::json digests = nlohmann::json::parse(in);
        std::optional<xmerge::model> rounded;
        if (fs::exists(expected_dir / "model.safetensors"))
        {
            rounded = xmerge::model::open(expected_dir.string());
        }
        std::set<std::string> matched;
        std::size_t identical = 0, flipped = 0;
        double worst = 0;
        for (const auto& [tensor, e] : digests.items())
        {
            const auto* t = find_output(out, tensor);
            if (t == nullptr)
            {
                r.fail("tensor " + tensor + " missing from the output");
                continue;
            }
            matched.insert(t->name);
            if (t->dtype != e["dtype"].get<std::string>() || t->shape != shape_of(e["shape"]))
            {
                r.fail(tensor + ": " + t->dtype + " " + xmerge::to_string(t->shape) + ", mergekit wrote " + e["dtype"].get<std::string>() + " "
                       + xmerge::to_string(shape_of(e["shape"])));
                continue;
            }
            if (fnv1a64(t->data, t->bytes) == e["fnv1a64"].get<std::string>())
            {
                ++identical;
                continue;
            }
            const xmerge::model_tensor* h = rounded ? rounded->find(tensor) : nullptr;
            if (h == nullptr)
            {
                r.fail(tensor + ": bits differ from mergekit's");
                continue;
            }
            const auto y = as_float(*h);
            std::size_t beyond = 0;
            const double ulps = worst_ulps(rounded_to_bfloat16(as_float(*t)), y, 7, rms(y) / 256, &beyond, 1.0);
            worst = std::max(worst, ulps);
            flipped += beyond;
            const double allowed = threshold_flips > 0 ? std::max(1.0, threshold_flips * static_cast<double>(y.size())) : 0.0;
            if (ulps > 1.0 && static_cast<double>(beyond) > allowed)
            {
                r.fail(tensor + format(": differs from mergekit's by %.0f bfloat16 units", ulps));
            }
        }
        for (const auto& t : out.tensors())
        {
            if (!matched.count(t.name) && !known_extra(name, t.name))
            {
                r.fail("tensor " + t.name + " written, mergekit wrote none");
            }
        }
        stats = identical == digests.size() ? std::string("bit-identical")
                                            : std::to_string(digests.size() - identical) + " of " + std::to_string(digests.size())
                                                  + " tensors not bit-identical, "
                                                  + (flipped ? std::to_string(flipped) + " elements beyond one bfloat16 unit (threshold flips)"
                                                             : std::string("all within one bfloat16 unit"));
    }

    // Half-precision values: mergekit rounded at every step, xmerge once.
    void compare_half(const std::string& name, const fs::path& expected_dir, const xmerge::model& out, const half_tolerance& tol, result& r, std::string& stats)
    {
        const xmerge::model expected = xmerge::model::open(expected_dir.string());
        std::size_t total = 0, beyond = 0;
        double worst = 0;
        std::set<std::string> matched;
        for (const auto& e : expected.tensors())
        {
            const auto* t = find_output(out, e.name);
            if (t == nullptr || t->shape != e.shape || t->dtype != e.dtype)
            {
                r.fail("tensor " + e.name + (t ? " has another shape or dtype" : " missing from the output"));
                continue;
            }
            matched.insert(t->name);
            const auto y = as_float(e);
            total += y.size();
            worst = std::max(worst, worst_ulps(as_float(*t), y, e.dtype == "F16" ? 10 : 7, rms(y), &beyond, tol.ulps));
        }
        for (const auto& t : out.tensors())
        {
            if (!matched.count(t.name) && !known_extra(name, t.name))
            {
                r.fail("tensor " + t.name + " written, mergekit wrote none");
            }
        }
        const double share = total ? static_cast<double>(beyond) / static_cast<double>(total) : 0.0;
        stats = format("%.3f%% of elements differ by more than %.0f ulp (at most %.0f ulp)", 100.0 * share, tol.ulps, worst);
        if (share > tol.share_beyond)
        {
            r.fail(stats + format(" (allowed: %.3f%%)", 100.0 * tol.share_beyond));
        }
    }

    // Random methods: the share of entries left at the base value and the size of the change.
    void compare_statistics(const nlohmann::json& expected, const xmerge::model& base, const xmerge::model& out, result& r, std::string& stats)
    {
        std::uint64_t total = 0, unchanged = 0;
        double delta = 0;
        // Over the tensors mergekit wrote.
        for (const auto& name : expected["tensors"])
        {
            const auto* t = find_output(out, name.get<std::string>());
            const auto* b = t ? base.find(t->name) : nullptr;
            if (t == nullptr || b == nullptr || b->shape != t->shape)
            {
                r.fail("tensor " + name.get<std::string>() + " missing from the output or the base");
                continue;
            }
            const auto x = as_float(*t), y = as_float(*b);
            for (std::size_t i = 0; i < x.size(); ++i)
            {
                unchanged += x[i] == y[i];
                delta += (static_cast<double>(x[i]) - y[i]) * (static_cast<double>(x[i]) - y[i]);
            }
            total += x.size();
        }
        const double frac = total ? static_cast<double>(unchanged) / static_cast<double>(total) : 0.0;
        const double want_frac = expected["unchanged_fraction"].get<double>();
        const double norm = std::sqrt(delta), want_norm = expected["delta_norm"].get<double>();
        // Five binomial standard deviations of the fraction; 5% of the norm (its spread over seeds is under 1%).
        const double sigma = std::sqrt(want_frac * (1 - want_frac) / static_cast<double>(std::max<std::uint64_t>(total, 1)));
        stats = format("unchanged %.4f (mergekit %.4f), |change| %.4g", frac, want_frac, norm) + format(" (mergekit %.4g)", want_norm);
        if (std::fabs(frac - want_frac) > 5 * sigma + 1e-9 || std::fabs(norm - want_norm) > 0.05 * want_norm)
        {
            r.fail(stats);
        }
    }

    std::optional<std::string> dtype_of(const xmerge::io::model_config& c)
    {
        for (const char* key : {"dtype", "torch_dtype"})
        {
            if (c.json().contains(key) && c.json()[key].is_string())
            {
                return c.json()[key].get<std::string>();
            }
        }
        return std::nullopt;
    }

    void compare_config(const fs::path& expected_dir, const fs::path& out_dir, result& r)
    {
        if (!fs::exists(expected_dir / "config.json"))
        {
            return;
        }
        if (!fs::exists(out_dir / "config.json"))
        {
            r.fail("no config.json written");
            return;
        }
        const auto want = xmerge::io::model_config::open((expected_dir / "config.json").string());
        const auto got = xmerge::io::model_config::open((out_dir / "config.json").string());
        if (dtype_of(want) != dtype_of(got))
        {
            r.fail("config.json dtype " + dtype_of(got).value_or("none") + ", mergekit wrote " + dtype_of(want).value_or("none"));
        }
        if (want.vocab_size() != got.vocab_size())
        {
            r.fail("config.json vocab_size " + std::to_string(got.vocab_size().value_or(0)) + ", mergekit wrote " + std::to_string(want.vocab_size().value_or(0)));
        }
        for (const char* key : {"num_hidden_layers", "n_layer"})
        {
            if (want.json().contains(key) && want.json()[key] != got.json().value(key, nlohmann::ordered_json()))
            {
                r.fail(std::string("config.json ") + key + " differs from mergekit's");
            }
        }
    }

    void compare_tokenizer(const fs::path& expected_dir, const fs::path& out_dir, result& r)
    {
        if (!fs::exists(expected_dir / "tokenizer.json"))
        {
            return;
        }
        if (!xmerge::io::tokenizer_files::present(out_dir.string()))
        {
            r.fail("no tokenizer.json written");
            return;
        }
        const auto want = xmerge::io::tokenizer_files::open(expected_dir.string());
        const auto got = xmerge::io::tokenizer_files::open(out_dir.string());
        if (want.vocabulary() != got.vocabulary())
        {
            r.fail("tokenizer vocabulary: " + std::to_string(got.size()) + " tokens, mergekit's has " + std::to_string(want.size()) + " (or ids differ)");
        }
        std::map<std::int64_t, bool> special_want, special_got;
        for (const auto& [id, info] : want.added_tokens())
        {
            special_want[id] = info.value("special", false);
        }
        for (const auto& [id, info] : got.added_tokens())
        {
            special_got[id] = info.value("special", false);
        }
        if (special_want != special_got)
        {
            r.fail("added tokens or their special flags differ from mergekit's");
        }
    }

    std::string read(const fs::path& p)
    {
        std::ifstream in(p);
        std::stringstream s;
        s << in.rdbuf();
        return s.str();
    }
}

int main(int argc, char** argv)
{
    if (argc < 3)
    {
        std::fprintf(stderr, "usage: %s DATA_DIR SCRATCH_DIR [CASE_SUBSTRING]\n", argv[0]);
        return 2;
    }
    const fs::path data = fs::absolute(argv[1]);
    const fs::path scratch = fs::absolute(argv[2]);
    const std::string only = argc > 3 ? argv[3] : "";
    fs::remove_all(scratch);
    fs::create_directories(scratch);
    // Recipes name their models relative to the set's root, as mergekit resolves them from the current directory.
    fs::current_path(data);

    const nlohmann::json manifest = nlohmann::json::parse(read(data / "cases.json"));
    const xmerge::method_registry registry = xmerge::builtin_methods();
    // See README.md. Selections (trimming, sign election) may flip where mergekit's
    // half-precision arithmetic ties or reorders magnitudes.
    const half_tolerance arithmetic{8, 0.0}, selection{8, 0.01};
    const std::set<std::string> selecting = {"ties", "sce", "breadcrumbs", "breadcrumbs_ties", "dare_ties", "dare_linear", "della", "della_linear"};

    std::map<std::string, std::size_t> passed;
    std::size_t failed = 0, skipped = 0, bit_identical = 0, within_bfloat16 = 0, threshold_flips = 0;
    for (const auto& c : manifest["cases"])
    {
        const std::string name = c["name"];
        const std::string method = c["method"];
        const std::string compare = c["compare"];
        if (!only.empty() && name.find(only) == std::string::npos)
        {
            continue;
        }
        if (!registry.contains(method))
        {
            std::printf("SKIP %s: method %s is not available\n", name.c_str(), method.c_str());
            ++skipped;
            continue;
        }
        const fs::path out = scratch / name;
        result r;
        std::string stats;
        std::string refusal;
        try
        {
            xmerge::recipe_job_options o;
            o.merge.seed = 20261201;
            xmerge::recipe_job job(c["recipe"].get<std::string>(), out.string(), registry, o);
            job.run();
        }
        catch (const std::exception& e)
        {
            refusal = e.what();
        }
        if (compare == "error")
        {
            if (refusal.empty())
            {
                r.fail("xmerge accepted a configuration mergekit refuses (" + c["error"].get<std::string>() + ")");
            }
            else
            {
                stats = "refused, as by mergekit: " + refusal;
            }
        }
        else if (!refusal.empty())
        {
            r.fail("xmerge refused it: " + refusal);
        }
        else
        {
            const fs::path expected = data / "expected" / name;
            const xmerge::model output = xmerge::model::open(out.string());
            if (compare == "exact")
            {
                compare_exact(name, expected, output, r, stats, method == "arcee_fusion" ? 0.001 : 0.0);
            }
            else if (compare == "bf16" || compare == "f16")
            {
                compare_half(name, expected, output, selecting.count(method) ? selection : arithmetic, r, stats);
            }
            else if (compare == "random")
            {
                const xmerge::model base = xmerge::model::open((data / c["statistics"]["base"].get<std::string>()).string());
                compare_statistics(c["statistics"], base, output, r, stats);
            }
            compare_config(expected, out, r);
            compare_tokenizer(expected, out, r);
        }
        if (r.passed)
        {
            ++passed[compare];
            if (compare == "exact")
            {
                ++(stats == "bit-identical" ? bit_identical : stats.find("threshold flips") != std::string::npos ? threshold_flips : within_bfloat16);
            }
            std::printf("PASS %s: %s\n", name.c_str(), stats.c_str());
        }
        else
        {
            ++failed;
            std::printf("FAIL %s (%s): %s\n", name.c_str(), c["origin"].get<std::string>().c_str(), r.detail.c_str());
        }
    }
    std::size_t total_passed = 0;
    for (const auto& [_, n] : passed)
    {
        total_passed += n;
    }
    std::printf("%zu passed (float32: %zu bit-identical, %zu within one bfloat16 unit, %zu with threshold flips; half precision: %zu within tolerance; %zu by "
                "statistics; %zu refused as by mergekit), %zu failed, %zu skipped\n",
                total_passed, bit_identical, within_bfloat16, threshold_flips, passed["bf16"] + passed["f16"], passed["random"], passed["error"], failed, skipped);
    return failed == 0 ? 0 : 1;
}
