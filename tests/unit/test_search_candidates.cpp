// Evaluation-driven merges on synthetic objectives: sweeps, barriers, soups, coefficient searches.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <xmerge/search.hpp>

using namespace xmerge;

namespace
{
    // Models of named tensors held in vectors.
    struct toy_model
    {
        std::vector<std::vector<float>> tensors;
        std::vector<std::string> names;

        toy_model(std::vector<std::vector<float>> t, std::vector<std::string> n = {"w"}) : tensors(std::move(t)), names(std::move(n)) {}

        parameter_list params() const
        {
            parameter_list out;
            for (std::size_t i = 0; i < tensors.size(); ++i)
            {
                out.push_back(as_tensor(tensors[i], names[i]));
            }
            return out;
        }
    };

    toy_model scalar_model(float x) { return toy_model(std::vector<std::vector<float>>{{x}}); }

    double mean_of(const tensor_ref& t)
    {
        const float* p = t.typed_data<float>();
        double s = 0.0;
        for (std::size_t i = 0; i < t.size(); ++i)
        {
            s += p[i];
        }
        return s / static_cast<double>(t.size());
    }
}

TEST_CASE("barrier of a known curve", "[search][interpolation]")
{
    // L(a) = 1 + a + 4 a (1 - a): the chord is 1 + a, the bump peaks at 1 for a = 0.5.
    std::vector<double> alphas, loss, accuracy;
    for (int i = 0; i <= 10; ++i)
    {
        const double a = i / 10.0;
        alphas.push_back(a);
        loss.push_back(1.0 + a + 4.0 * a * (1.0 - a));
        accuracy.push_back(-loss.back());
    }
    REQUIRE(barrier(alphas, loss, curve_orientation::lower_is_better) == Approx(1.0));
    REQUIRE(barrier(alphas, accuracy) == Approx(1.0));
    // A curve below its chord (for a loss) has no barrier.
    REQUIRE(barrier(alphas, accuracy, curve_orientation::lower_is_better) == 0.0);
    // On uneven alphas the chord runs between the first and last alpha.
    REQUIRE(barrier({0.2, 0.3, 1.2}, {1.0, 3.0, 2.0}, curve_orientation::lower_is_better) == Approx(1.9));

    REQUIRE_THROWS_AS(barrier({0.0}, {1.0}), parameter_error);
    REQUIRE_THROWS_AS(barrier({0.0, 1.0}, {1.0}), parameter_error);
    REQUIRE_THROWS_AS(barrier({0.0, 0.0, 1.0}, {1.0, 1.0, 1.0}), parameter_error);
    REQUIRE_THROWS_AS(barrier({0.0, 1.0}, {1.0, std::numeric_limits<double>::quiet_NaN()}), parameter_error);
}

TEST_CASE("interpolation_sweep scores 11 points on the line and measures the barrier", "[search][interpolation]")
{
    const toy_model a({std::vector<float>(7, 0.0f)}), b({std::vector<float>(7, 1.0f)});
    parameter_buffers work(a.params());
    std::vector<double> seen;
    // Score -4 a (1 - a) where a is the candidate's mean: barrier 1.
    const objective f = [&](const std::vector<tensor_ref>& w)
    {
        const double alpha = mean_of(w[0]);
        seen.push_back(alpha);
        return std::vector<double>{-4.0 * alpha * (1.0 - alpha), alpha};
    };
    const interpolation_result r = interpolation_sweep(a.params(), b.params(), work.refs(), f);
    REQUIRE(r.points.size() == 11);
    REQUIRE(seen.size() == 11);
    for (std::size_t i = 0; i < 11; ++i)
    {
        REQUIRE(r.points[i].coefficients == std::vector<double>{i / 10.0});
        REQUIRE(seen[i] == Approx(i / 10.0).margin(1e-6));
        // The value of a vector of scores is their mean.
        REQUIRE(r.points[i].result.value == Approx((-4.0 * seen[i] * (1.0 - seen[i]) + seen[i]) / 2.0));
    }
    REQUIRE(r.detail(1) == seen);
    REQUIRE(barrier(r.alphas(), r.detail(0)) == Approx(1.0).margin(1e-6));
    REQUIRE_THROWS_AS(r.detail(2), parameter_error);
    // The best point (alpha = 1) is what the workspace holds afterwards.
    REQUIRE(mean_of(work.refs()[0]) == 1.0);

    interpolation_options few;
    few.points = 3;
    REQUIRE(interpolation_sweep(a.params(), b.params(), work.refs(), f, few).points.size() == 3);
    few.points = 1;
    REQUIRE_THROWS_AS(interpolation_sweep(a.params(), b.params(), work.refs(), f, few), parameter_error);
    few.alphas = {0.0, 0.5, 0.25};
    REQUIRE_THROWS_AS(interpolation_sweep(a.params(), b.params(), work.refs(), f, few), parameter_error);
}

TEST_CASE("line_search picks lambda on a grid and leaves the best candidate", "[search][lambda]")
{
    const toy_model base({{0.0f, 0.0f, 0.0f}}), merged({{1.0f, 2.0f, -1.0f}});
    parameter_buffers work(base.params());
    // Best at lambda = 0.7: the first element should reach 0.7.
    const objective f = [](const std::vector<tensor_ref>& w) { return -std::fabs(w[0].typed_data<float>()[0] - 0.7); };
    const search_result r = line_search(base.params(), merged.params(), default_lambda_grid(), work.refs(), f);
    REQUIRE(r.points.size() == 11);
    REQUIRE(r.best().coefficients[0] == Approx(0.7));
    const float* w = work.refs()[0].typed_data<float>();
    REQUIRE(w[1] == Approx(1.4f));
    REQUIRE(w[2] == Approx(-0.7f));
    REQUIRE_THROWS_AS(line_search(base.params(), merged.params(), {}, work.refs(), f), parameter_error);
}

TEST_CASE("greedy_soup keeps exactly the ingredients that do not lower the score", "[search][soup]")
{
    // Score -x^2. Alone: m3 (-0.77) > m0 (-1) > m1 (-1.56) > m2 (-9).
    // Soup {m3}; +m0 -> 0.9375 (worse, dropped); +m1 -> -0.1875 (better, kept); +m2 -> 0.875 (worse, dropped).
    const std::vector<toy_model> models = {scalar_model(1.0f), scalar_model(-1.25f), scalar_model(3.0f), scalar_model(0.875f)};
    std::vector<parameter_list> lists;
    for (const auto& m : models)
    {
        lists.push_back(m.params());
    }
    parameter_buffers work(lists[0]);
    const objective f = [](const std::vector<tensor_ref>& w)
    {
        const double x = w[0].typed_data<float>()[0];
        return -x * x;
    };
    const soup_result r = greedy_soup(lists, work.refs(), f);
    REQUIRE(r.ingredients.size() == 4);
    REQUIRE(r.ingredients[2].result.value == -9.0);
    REQUIRE(r.ingredients[2].coefficients == std::vector<double>{0, 0, 1, 0});
    REQUIRE(r.order == std::vector<std::size_t>{3, 0, 1, 2});
    REQUIRE(r.accepted == std::vector<bool>{false, true, false});
    REQUIRE(r.soup == std::vector<std::size_t>{3, 1});
    REQUIRE(r.trials[1].coefficients == std::vector<double>{0, 0.5, 0, 0.5});
    REQUIRE(r.final_soup.result.value == Approx(-0.1875 * 0.1875));
    REQUIRE(work.refs()[0].typed_data<float>()[0] == -0.1875f);

    const evaluated_point uniform = score_uniform_soup(lists, work.refs(), f);
    REQUIRE(uniform.coefficients == std::vector<double>(4, 0.25));
    REQUIRE(uniform.result.value == Approx(-0.90625 * 0.90625));
}

TEST_CASE("greedy_soup keeps an ingredient that leaves the score unchanged", "[search][soup]")
{
    const std::vector<toy_model> models = {scalar_model(0.5f), scalar_model(0.5f), scalar_model(0.25f)};
    std::vector<parameter_list> lists;
    for (const auto& m : models)
    {
        lists.push_back(m.params());
    }
    parameter_buffers work(lists[0]);
    const objective f = [](const std::vector<tensor_ref>& w) { return static_cast<double>(w[0].typed_data<float>()[0]); };
    const soup_result r = greedy_soup(lists, work.refs(), f);
    REQUIRE(r.order == std::vector<std::size_t>{0, 1, 2});
    REQUIRE(r.accepted == std::vector<bool>{true, false});
    REQUIRE(r.soup == std::vector<std::size_t>{0, 1});
    // The rejected last trial was overwritten by the final soup.
    REQUIRE(work.refs()[0].typed_data<float>()[0] == 0.5f);
}

TEST_CASE("coefficient_search finds per-model task arithmetic coefficients within its budget", "[search][coefficients]")
{
    // base 0, model k = unit vector e_k: the candidate is the coefficient vector itself.
    const toy_model base({{0.0f, 0.0f, 0.0f}});
    const std::vector<toy_model> models = {toy_model({{1.0f, 0.0f, 0.0f}}), toy_model({{0.0f, 1.0f, 0.0f}}), toy_model({{0.0f, 0.0f, 1.0f}})};
    std::vector<parameter_list> lists;
    for (const auto& m : models)
    {
        lists.push_back(m.params());
    }
    const parameter_list base_params = base.params();
    parameter_buffers work(base_params);
    const std::vector<double> target = {0.3, 0.55, 0.8};
    std::size_t calls = 0;
    const objective f = [&](const std::vector<tensor_ref>& w)
    {
        ++calls;
        const float* x = w[0].typed_data<float>();
        double s = 0.0;
        for (std::size_t k = 0; k < 3; ++k)
        {
            s -= (x[k] - target[k]) * (x[k] - target[k]);
        }
        return s;
    };
    coefficient_search_options o;
    o.initial = {0.5, 0.5, 0.5};
    o.budget = 80;
    o.random_points = 10;
    o.seed = 11;
    const search_result r = coefficient_search(task_arithmetic_builder(lists, base_params), work.refs(), f, o);
    REQUIRE(calls == r.points.size());
    REQUIRE(r.points.size() <= o.budget);
    REQUIRE(r.points[0].coefficients == o.initial);
    for (const auto& p : r.points)
    {
        REQUIRE(p.result.value <= r.best().result.value);
        for (double c : p.coefficients)
        {
            REQUIRE(c >= 0.0);
            REQUIRE(c <= 1.0);
        }
    }
    for (std::size_t k = 0; k < 3; ++k)
    {
        REQUIRE(r.best().coefficients[k] == Approx(target[k]).margin(0.02));
        REQUIRE(work.refs()[0].typed_data<float>()[k] == Approx(r.best().coefficients[k]).margin(1e-6));
    }
    // The same seed gives the same points.
    const search_result again = coefficient_search(task_arithmetic_builder(lists, base_params), work.refs(), f, o);
    REQUIRE(again.points.size() == r.points.size());
    REQUIRE(again.points.back().coefficients == r.points.back().coefficients);

    o.budget = 5;
    REQUIRE(coefficient_search(task_arithmetic_builder(lists, base_params), work.refs(), f, o).points.size() == 5);
    o.initial = {0.5, 2.0, 0.5};
    REQUIRE_THROWS_AS(coefficient_search(task_arithmetic_builder(lists, base_params), work.refs(), f, o), parameter_error);
    o.initial = {};
    REQUIRE_THROWS_AS(coefficient_search(task_arithmetic_builder(lists, base_params), work.refs(), f, o), parameter_error);
}

TEST_CASE("layer groups give one coefficient per layer and model", "[search][coefficients]")
{
    const toy_model base({{0.0f, 0.0f}, {0.0f}, {0.0f, 0.0f}}, {"fc1.weight", "fc1.bias", "fc2.weight"});
    const toy_model model({{1.0f, 1.0f}, {1.0f}, {1.0f, 1.0f}}, {"fc1.weight", "fc1.bias", "fc2.weight"});
    const parameter_list base_params = base.params();
    std::vector<std::string> names;
    const auto groups = layer_groups(base_params, &names);
    REQUIRE(groups == std::vector<std::size_t>{0, 0, 1});
    REQUIRE(names == std::vector<std::string>{"fc1", "fc2"});

    const std::vector<parameter_list> lists = {model.params()};
    const candidate_builder build = task_arithmetic_builder(lists, base_params, groups);
    parameter_buffers work(base_params);
    const search_result r = grid_search([&](std::size_t t, const std::vector<double>& c) { return build(t, {c[0], 1.0 - c[0]}); }, {0.25, 0.75}, work.refs(),
                                        [](const std::vector<tensor_ref>& w) { return static_cast<double>(w[2].typed_data<float>()[0]); });
    REQUIRE(r.best_index == 0);
    REQUIRE(work.refs()[0].typed_data<float>()[0] == 0.25f);
    REQUIRE(work.refs()[1].typed_data<float>()[0] == 0.25f);
    REQUIRE(work.refs()[2].typed_data<float>()[1] == 0.75f);
    REQUIRE_THROWS_AS(build(0, {0.5}), parameter_error);
}

TEST_CASE("searches refuse a workspace that aliases a model and scores that are not finite", "[search][errors]")
{
    toy_model a({{1.0f, 2.0f}}), b({{3.0f, 4.0f}});
    const std::vector<tensor_ref> aliasing = {as_tensor(a.tensors[0], "w")};
    const objective f = [] { return 1.0; };
    REQUIRE_THROWS_AS(interpolation_sweep(a.params(), b.params(), aliasing, f), layout_error);
    REQUIRE(a.tensors[0] == std::vector<float>{1.0f, 2.0f});

    parameter_buffers work(a.params());
    const objective nan = [] { return std::numeric_limits<double>::quiet_NaN(); };
    REQUIRE_THROWS_WITH(interpolation_sweep(a.params(), b.params(), work.refs(), nan), Catch::Contains("coefficients [0.000000]"));

    const toy_model other({{1.0f, 2.0f, 3.0f}});
    REQUIRE_THROWS_AS(interpolation_sweep(a.params(), other.params(), work.refs(), f), shape_error);
    REQUIRE_THROWS_AS(greedy_soup({}, work.refs(), f), parameter_error);

    const candidate_builder reads_workspace = [&](std::size_t t, const std::vector<double>&) -> any_expression { return input(work.refs()[t]); };
    REQUIRE_THROWS_AS(grid_search(reads_workspace, {1.0}, work.refs(), f), layout_error);
}
