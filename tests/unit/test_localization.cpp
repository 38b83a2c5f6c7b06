// TALL masks, consensus merging and EMR-merging against double oracles
// written from the papers' formulas, on float32 and bfloat16 inputs, odd
// sizes, with 1 and 2 threads; the per-task registry outputs.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include <xmerge/methods.hpp>

#include "test_support.hpp"
#include "registry_support.hpp"

using namespace xmerge;

namespace
{
    struct task_set
    {
        xmerge_test::buffer base;
        std::vector<xmerge_test::buffer> models;

        task_set(dtype type, std::size_t n, std::size_t k, std::uint32_t seed) : base(type, xmerge_test::random_floats(n, seed), "w")
        {
            for (std::size_t i = 0; i < k; ++i)
            {
                auto v = base.values();
                const auto d = xmerge_test::random_floats(n, seed + 1 + static_cast<std::uint32_t>(i), -0.1f, 0.1f);
                for (std::size_t j = 0; j < n; ++j)
                {
                    v[j] += d[j];
                }
                models.emplace_back(type, v, "m" + std::to_string(i));
            }
        }

        expression_list<input_node> leaves() const
        {
            expression_list<input_node> l;
            for (const auto& m : models)
            {
                l.push_back(m.leaf());
            }
            return l;
        }

        // task vectors as the float32 subtraction the engine does, widened to double
        std::vector<std::vector<double>> deltas() const
        {
            const auto b = base.values();
            std::vector<std::vector<double>> out;
            for (const auto& m : models)
            {
                const auto v = m.values();
                std::vector<double> d(v.size());
                for (std::size_t j = 0; j < v.size(); ++j)
                {
                    d[j] = static_cast<double>(v[j] - b[j]);
                }
                out.push_back(std::move(d));
            }
            return out;
        }
    };

    std::vector<float> run(const any_expression& e, std::size_t threads)
    {
        eval_options o;
        o.threads = threads;
        std::vector<float> out;
        evaluate(e, out, o);
        return out;
    }

    // Margin below which float32 and double may decide a comparison differently.
    bool near_tie(double a, double b)
    {
        return std::fabs(a - b) <= 1e-5 * (std::fabs(a) + std::fabs(b)) + 1e-12;
    }
}

TEST_CASE("TALL masks and per-task models follow the formula for every dtype, size and thread count", "[localization][tall_mask]")
{
    const std::size_t w = simd::lanes;
    for (dtype type : {dtype::float32, dtype::bfloat16})
    {
        for (std::size_t k : {std::size_t{3}, std::size_t{17}})  // 17: more tasks than the per-batch cache
        {
            for (std::size_t n : {std::size_t{1}, w + 1, std::size_t{2049}})
            {
                CAPTURE(name_of(type), k, n);
                const task_set s(type, n, k, 11);
                std::vector<double> lambdas(k);
                for (std::size_t t = 0; t < k; ++t)
                {
                    lambdas[t] = 0.2 + 0.1 * static_cast<double>(t % 5);
                }
                const auto d = s.deltas();
                const auto b = s.base.values();
                const auto models = tall_mask_models(s.leaves(), s.base.leaf(), lambdas);
                REQUIRE(models.size() == k);
                for (std::size_t t : {std::size_t{0}, k - 1})
                {
                    const auto got = run(models[t], 1);
                    REQUIRE(xmerge_test::same_bits(got, run(models[t], 2)));
                    const auto mask = run(any_expression(tall_mask(task_vectors(s.leaves(), s.base.leaf()), t, lambdas)), 2);
                    for (std::size_t j = 0; j < n; ++j)
                    {
                        double sum = 0.0;
                        for (std::size_t i = 0; i < k; ++i)
                        {
                            sum += d[i][j];
                        }
                        const double lhs = std::fabs(d[t][j]), rhs = lambdas[t] * std::fabs(sum - d[t][j]);
                        if (near_tie(lhs, rhs))
                        {
                            continue;
                        }
                        const bool keep = lhs > rhs;
                        REQUIRE(mask[j] == (keep ? 1.0f : 0.0f));
                        REQUIRE(got[j] == Approx(b[j] + (keep ? sum : 0.0)).epsilon(1e-5).margin(1e-6));
                    }
                }
            }
        }
    }
}

TEST_CASE("Consensus merging: k = 0 is task arithmetic, k > K is the base, k = 2 counts the masks", "[localization][consensus]")
{
    const std::size_t k = 4, n = 1003;
    const task_set s(dtype::float32, n, k, 21);
    // lambda = 1: a task claims about a third of the entries, and k = 2 keeps about half.
    const std::vector<double> lambdas(k, 1.0);
    const auto d = s.deltas();
    const auto b = s.base.values();

    const auto all = run(any_expression(consensus_merge(s.leaves(), s.base.leaf(), lambdas, 0, 0.7)), 1);
    const auto ta = run(any_expression(task_arithmetic(s.leaves(), s.base.leaf(), std::vector<double>(k, 1.0), {0.7, false})), 1);
    for (std::size_t j = 0; j < n; ++j)
    {
        REQUIRE(all[j] == Approx(ta[j]).epsilon(1e-6).margin(1e-7));
    }
    const auto none = run(any_expression(consensus_merge(s.leaves(), s.base.leaf(), lambdas, k + 1, 0.7)), 2);
    REQUIRE(xmerge_test::same_bits(none, b));

    const auto mask = run(any_expression(consensus_mask(task_vectors(s.leaves(), s.base.leaf()), lambdas, 2)), 2);
    const auto merged = run(any_expression(consensus_merge(s.leaves(), s.base.leaf(), lambdas, 2, 0.7)), 2);
    std::size_t kept = 0;
    for (std::size_t j = 0; j < n; ++j)
    {
        double sum = 0.0;
        for (std::size_t i = 0; i < k; ++i)
        {
            sum += d[i][j];
        }
        int count = 0;
        bool tie = false;
        for (std::size_t i = 0; i < k; ++i)
        {
            const double lhs = std::fabs(d[i][j]), rhs = 1.0 * std::fabs(sum - d[i][j]);
            tie = tie || near_tie(lhs, rhs);
            count += lhs > rhs ? 1 : 0;
        }
        if (tie)
        {
            continue;
        }
        REQUIRE(mask[j] == (count >= 2 ? 1.0f : 0.0f));
        REQUIRE(merged[j] == Approx(b[j] + (count >= 2 ? 0.7 * sum : 0.0)).epsilon(1e-5).margin(1e-6));
        kept += count >= 2 ? 1 : 0;
    }
    // the inputs exercise both branches
    REQUIRE(kept > n / 10);
    REQUIRE(kept < n - n / 10);
}

TEST_CASE("EMR elects -1 on an exact zero sum and keeps only the negative task there", "[localization][emr]")
{
    // tau_1 = -tau_0 on even entries (exact in float32), independent elsewhere
    const std::size_t n = 2 * simd::lanes + 3;
    const auto b = xmerge_test::random_floats(n, 5);
    auto x0 = b, x1 = b;
    const auto d0 = xmerge_test::random_floats(n, 6, -0.25f, 0.25f);
    const auto d1 = xmerge_test::random_floats(n, 7, -0.25f, 0.25f);
    std::vector<float> base_grid(n), x0v(n), x1v(n);
    for (std::size_t j = 0; j < n; ++j)
    {
        // values on a 2^-12 grid so that every difference is exact
        base_grid[j] = std::ldexp(std::round(std::ldexp(b[j], 12)), -12);
        const float a = std::ldexp(std::round(std::ldexp(d0[j], 12)), -12);
        const float c = j % 2 == 0 ? -a : std::ldexp(std::round(std::ldexp(d1[j], 12)), -12);
        x0v[j] = base_grid[j] + a;
        x1v[j] = base_grid[j] + c;
    }
    const auto base = input(as_tensor(base_grid, {n}, "w"));
    expression_list<input_node> models;
    models.push_back(input(as_tensor(x0v, {n}, "m0")));
    models.push_back(input(as_tensor(x1v, {n}, "m1")));
    const auto deltas = task_vectors(models, base);
    const auto unified = run(any_expression(emr_election(deltas, emr_value::unified)), 2);
    const auto mask0 = run(any_expression(emr_election(deltas, emr_value::mask, 0)), 1);
    const auto mask1 = run(any_expression(emr_election(deltas, emr_value::mask, 1)), 2);
    for (std::size_t j = 0; j < n; j += 2)
    {
        const float a = x0v[j] - base_grid[j];
        if (a == 0.0f)
        {
            continue;
        }
        CAPTURE(j, a);
        REQUIRE(unified[j] == -std::fabs(a));
        REQUIRE(mask0[j] == (a < 0.0f ? 1.0f : 0.0f));
        REQUIRE(mask1[j] == (a > 0.0f ? 1.0f : 0.0f));
    }
}

TEST_CASE("EMR models and rescalers follow the formula; the rescaler is a whole-model ratio", "[localization][emr]")
{
    for (dtype type : {dtype::float32, dtype::bfloat16})
    {
        CAPTURE(name_of(type));
        const std::size_t k = 3, n = 777;
        const task_set s(type, n, k, 31), s2(type, 40, k, 41);
        const auto d = s.deltas();
        const auto b = s.base.values();

        // oracle of one tensor
        std::vector<double> uni(n), task_abs(k, 0.0), elected_abs(k, 0.0);
        std::vector<std::vector<int>> masks(k, std::vector<int>(n));
        for (std::size_t j = 0; j < n; ++j)
        {
            double sum = 0.0;
            for (std::size_t i = 0; i < k; ++i)
            {
                sum += d[i][j];
            }
            const double flag = sum > 0.0 ? 1.0 : -1.0;
            double largest = 0.0;
            for (std::size_t i = 0; i < k; ++i)
            {
                masks[i][j] = d[i][j] * flag > 0.0 ? 1 : 0;
                largest = std::max(largest, masks[i][j] ? std::fabs(d[i][j]) : 0.0);
            }
            uni[j] = flag * largest;
            for (std::size_t i = 0; i < k; ++i)
            {
                task_abs[i] += std::fabs(d[i][j]) / static_cast<double>(n);
                elected_abs[i] += std::fabs(uni[j] * masks[i][j]) / static_cast<double>(n);
            }
        }
        const auto m1 = emr_tensor_magnitudes(s.leaves(), s.base.leaf());
        for (std::size_t i = 0; i < k; ++i)
        {
            REQUIRE(m1.task[i] == Approx(task_abs[i]).epsilon(1e-6));
            REQUIRE(m1.elected[i] == Approx(elected_abs[i]).epsilon(1e-6));
        }
        // whole model: ratio of the sums over tensors, not the product of per-tensor ratios
        const auto m2 = emr_tensor_magnitudes(s2.leaves(), s2.base.leaf());
        const auto whole = emr_rescalers({m1, m2});
        for (std::size_t i = 0; i < k; ++i)
        {
            REQUIRE(whole[i] == Approx((m1.task[i] + m2.task[i]) / (m1.elected[i] + m2.elected[i])).epsilon(1e-12));
        }

        const auto rescalers = emr_rescalers({m1});
        const auto models = emr_models(s.leaves(), s.base.leaf(), rescalers);
        for (std::size_t i = 0; i < k; ++i)
        {
            const auto got = run(models[i], 1);
            REQUIRE(xmerge_test::same_bits(got, run(models[i], 2)));
            for (std::size_t j = 0; j < n; ++j)
            {
                REQUIRE(got[j] == Approx(b[j] + rescalers[i] * uni[j] * masks[i][j]).epsilon(1e-5).margin(1e-6));
            }
        }
    }
}

TEST_CASE("Per-task methods: build() gives the model 'task' selects, build_outputs() all of them", "[localization][registry]")
{
    const std::size_t k = 3, n = 101;
    const task_set s(dtype::float32, n, k, 51);
    const auto& registry = xmerge_test::builtin_registry();
    method_inputs in;
    in.tensor = "w";
    in.base = s.base.leaf();
    in.models = s.leaves();
    for (const std::string method : {"tall_mask", "emr"})
    {
        CAPTURE(method);
        const auto outputs = registry.build_outputs(method, in, {});
        for (std::size_t t = 0; t < k; ++t)
        {
            const auto it = std::find_if(outputs.begin(), outputs.end(), [&](const method_output& o) { return o.name == "model." + std::to_string(t); });
            REQUIRE(it != outputs.end());
            const auto one = registry.build(method, in, {{"task", static_cast<double>(t)}});
            REQUIRE(xmerge_test::same_bits(run(one, 1), run(it->value, 2)));
        }
        REQUIRE_THROWS_AS(registry.build(method, in, {}), parameter_error);
        REQUIRE_THROWS_AS(registry.build(method, in, {{"task", 3.0}}), parameter_error);
    }
    // a single-result method gives one output, "merged"
    const auto single = registry.build_outputs("consensus_task_arithmetic", in, {});
    REQUIRE(single.size() == 1);
    REQUIRE(single[0].name == "merged");
    REQUIRE_THROWS_AS(registry.build("tall_mask", in, {{"tall_mask_lambda", -1.0}, {"task", 0.0}}), parameter_error);
}
