// Runs every golden case of a cases.json through the public API and compares
// with the stored expected tensor.
//
//   xmerge_golden [DIR]     DIR, else $XMERGE_GOLDEN_DIR, else the copy in the repository
//
// Prints PASS / FAIL / SKIP per case, then "N passed, M failed[, K skipped]";
// exits non-zero when a case fails.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <xmerge/io/safetensors.hpp>
#include <xmerge/xmerge.hpp>

namespace
{
    struct tolerance
    {
        double rtol = 1e-5;
        double atol = 1e-6;
    };

    // Tolerances the golden READMEs give: spherical and SVD-based methods
    // accumulate in another order than the reference; exact selections get tighter ones.
    tolerance tolerance_for(const std::string& method)
    {
        static const std::map<std::string, tolerance> loose = {
            {"slerp", {1e-4, 1e-6}},  {"nuslerp", {1e-4, 1e-6}}, {"multislerp", {1e-4, 1e-6}}, {"karcher", {1e-4, 1e-6}},
            {"tsv_m", {1e-4, 1e-6}},  {"iso_c", {1e-4, 1e-6}},   {"iso_cts", {1e-4, 1e-6}},    {"opcm", {1e-4, 1e-6}},
            {"regmean", {1e-4, 1e-6}}, {"wudi", {1e-4, 1e-6}},      {"tsv_c", {1e-4, 1e-6}},
            {"tall_mask", {1e-6, 1e-7}}, {"emr", {1e-6, 1e-7}},
            {"ram", {1e-6, 1e-7}},    {"ramplus_tl", {1e-6, 1e-7}}, {"arcee_fusion", {1e-6, 1e-6}}};
        const auto it = loose.find(method);
        return it == loose.end() ? tolerance{} : it->second;
    }

    // Golden files spell the per-model weight list "weights"; methods take mergekit's "weight".
    std::string parameter_name(const std::string& name)
    {
        return name == "weights" ? "weight" : name;
    }

    // Values a case records for completeness that are constants of the method's
    // reference code, not parameters: the case runs only when they match.
    bool is_reference_constant(const std::string& method, const std::string& name, const nlohmann::json& v)
    {
        if (method == "wudi")
        {
            static const nlohmann::json adam = {{"optimizer", "adam"}, {"betas", {0.9, 0.999}}, {"eps", 1e-8}, {"weight_decay", 0.0},
                                                {"init", "sum_of_task_vectors"}, {"exclude", false}};
            if (adam.contains(name))
            {
                if (adam.at(name) != v)
                {
                    throw std::runtime_error("recorded " + name + " = " + v.dump() + " differs from the reference's constant " + adam.at(name).dump());
                }
                return true;
            }
        }
        return false;
    }

    // The name a method's output has for a golden tensor: "expected" is the
    // single result, "expected.<t>" task t's model, "expected_<x>" output <x>.
    std::string output_name(const std::string& golden)
    {
        if (golden == "expected")
        {
            return "merged";
        }
        if (golden.rfind("expected.", 0) == 0)
        {
            return "model." + golden.substr(9);
        }
        if (golden.rfind("expected_", 0) == 0)
        {
            return golden.substr(9);
        }
        return golden;
    }

    xmerge::parameter_value to_parameter(const std::string& name, const nlohmann::json& v)
    {
        if (v.is_boolean())
        {
            return v.get<bool>();
        }
        if (v.is_number())
        {
            return v.get<double>();
        }
        if (v.is_string())
        {
            return v.get<std::string>();
        }
        if (v.is_array())
        {
            std::vector<double> list;
            for (const auto& x : v)
            {
                list.push_back(x.get<double>());
            }
            return list;
        }
        throw std::runtime_error("parameter '" + name + "' has an unsupported JSON type");
    }

    struct outcome
    {
        bool passed = false;
        std::string detail;
    };

    outcome compare(const xmerge::any_expression& merged, const xmerge::const_tensor_ref& expected_ref, const tolerance& tol)
    {
        std::vector<float> got;
        xmerge::evaluate(merged, got);

        if (expected_ref.shape() != merged.shape())
        {
            return {false, "shape " + xmerge::to_string(merged.shape()) + ", expected " + xmerge::to_string(expected_ref.shape())};
        }
        std::vector<float> expected(expected_ref.size());
        xmerge::simd::load_as_float(expected_ref.type(), expected_ref.data(), 0, expected.size(), expected.data());

        double worst = 0.0;  // error / allowed
        std::size_t where = 0;
        for (std::size_t i = 0; i < got.size(); ++i)
        {
            const double e = expected[i];
            const double g = got[i];
            double ratio;
            if (std::isnan(e) || std::isnan(g))
            {
                ratio = std::isnan(e) && std::isnan(g) ? 0.0 : INFINITY;
            }
            else
            {
                ratio = std::fabs(g - e) / (tol.atol + tol.rtol * std::fabs(e));
            }
            if (ratio > worst)
            {
                worst = ratio;
                where = i;
            }
        }
        if (worst <= 1.0)
        {
            return {true, ""};
        }
        char buf[256];
        std::snprintf(buf, sizeof buf, "worst error at index %zu: got %.9g, expected %.9g (%.3g x the tolerance rtol %g, atol %g)", where,
                      static_cast<double>(got[where]), static_cast<double>(expected[where]), worst, tol.rtol, tol.atol);
        return {false, buf};
    }

    outcome run_case(const std::string& dir, const nlohmann::json& c, const xmerge::method_registry& registry)
    {
        const std::string method = c.at("method");
        const xmerge::io::safetensors_file file(dir + "/" + c.at("file").get<std::string>());
        const auto num_models = c.at("num_models").get<std::size_t>();

        xmerge::method_inputs in;
        in.tensor = c.at("name");
        if (c.value("has_base", false))
        {
            in.base = xmerge::input(file.tensor("base"));
        }
        for (std::size_t k = 0; k < num_models; ++k)
        {
            in.models.push_back(xmerge::input(file.tensor("model." + std::to_string(k))));
        }
        for (const std::string extra : {"fisher", "gram"})
        {
            if (file.contains(extra + ".0"))
            {
                auto& list = in.extra[extra];
                for (std::size_t k = 0; k < num_models && file.contains(extra + "." + std::to_string(k)); ++k)
                {
                    list.push_back(xmerge::input(file.tensor(extra + "." + std::to_string(k))));
                }
            }
        }
        xmerge::parameters params;
        for (const auto& [name, value] : c.at("params").items())
        {
            if (value.is_null() || is_reference_constant(method, name, value))
            {
                continue;  // an optional parameter left unset, or a constant of the reference
            }
            params.set(parameter_name(name), to_parameter(name, value));
        }

        const auto golden_outputs = c.value("outputs", std::vector<std::string>{"expected"});
        if (golden_outputs.size() == 1 && golden_outputs[0] == "expected" && !c.contains("num_outputs"))
        {
            const xmerge::any_expression merged = registry.build(method, in, params);
            return compare(merged, file.tensor("expected"), tolerance_for(method));
        }

        // Several results (one model per task, masks): build them all and evaluate them together.
        const std::vector<xmerge::method_output> outputs = registry.build_outputs(method, in, params);
        std::size_t models = 0;
        for (const auto& o : outputs)
        {
            models += o.name.rfind("model.", 0) == 0 ? 1 : 0;
        }
        if (c.contains("num_outputs") && models != c.at("num_outputs").get<std::size_t>())
        {
            return {false, "built " + std::to_string(models) + " per-task models, expected " + std::to_string(c.at("num_outputs").get<std::size_t>())};
        }
        for (const std::string& golden : golden_outputs)
        {
            const std::string wanted = output_name(golden);
            const auto it = std::find_if(outputs.begin(), outputs.end(), [&](const xmerge::method_output& o) { return o.name == wanted; });
            if (it == outputs.end())
            {
                return {false, "the method gives no output '" + wanted + "' for " + golden};
            }
            outcome r = compare(it->value, file.tensor(golden), tolerance_for(method));
            if (!r.passed)
            {
                return {false, golden + ": " + r.detail};
            }
        }
        return {true, ""};
    }
}

int main(int argc, char** argv)
{
    std::string dir = XMERGE_GOLDEN_DEFAULT_DIR;
    if (argc > 1)
    {
        dir = argv[1];
    }
    else if (const char* env = std::getenv("XMERGE_GOLDEN_DIR"))
    {
        dir = env;
    }

    nlohmann::json manifest;
    {
        std::ifstream in(dir + "/cases.json");
        if (!in)
        {
            std::fprintf(stderr, "xmerge_golden: cannot open %s/cases.json\n", dir.c_str());
            return 2;
        }
        try
        {
            in >> manifest;
        }
        catch (const std::exception& e)
        {
            std::fprintf(stderr, "xmerge_golden: %s/cases.json: %s\n", dir.c_str(), e.what());
            return 2;
        }
    }

    const xmerge::method_registry registry = xmerge::builtin_methods();
    std::size_t passed = 0, failed = 0, skipped = 0;
    for (const auto& c : manifest.at("cases"))
    {
        const std::string name = c.value("name", "?");
        const std::string method = c.value("method", "?");
        if (!registry.contains(method))
        {
            std::printf("SKIP %s: method %s not supported yet\n", name.c_str(), method.c_str());
            ++skipped;
            continue;
        }
        outcome r;
        try
        {
            r = run_case(dir, c, registry);
        }
        catch (const std::exception& e)
        {
            r = {false, e.what()};
        }
        if (r.passed)
        {
            std::printf("PASS %s\n", name.c_str());
            ++passed;
        }
        else
        {
            std::printf("FAIL %s: %s\n", name.c_str(), r.detail.c_str());
            ++failed;
        }
    }
    if (skipped)
    {
        std::printf("%zu passed, %zu failed, %zu skipped\n", passed, failed, skipped);
    }
    else
    {
        std::printf("%zu passed, %zu failed\n", passed, failed);
    }
    return failed == 0 ? 0 : 1;
}
