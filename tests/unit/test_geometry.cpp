// SLERP, NuSLERP, multi-SLERP, Karcher mean and Model Stock against direct
// double-precision implementations of their definitions, plus invariants.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "test_support.hpp"
#include "registry_support.hpp"

using namespace xmerge;

namespace
{
    using vec = std::vector<double>;

    double vdot(const vec& a, const vec& b)
    {
        double s = 0.0;
        for (std::size_t i = 0; i < a.size(); ++i)
        {
            s += a[i] * b[i];
        }
        return s;
    }

    vec axpy(double a, const vec& x, const vec& y)
    {
        vec r(y);
        for (std::size_t i = 0; i < x.size(); ++i)
        {
            r[i] += a * x[i];
        }
        return r;
    }

    vec to_double(const std::vector<float>& v) { return vec(v.begin(), v.end()); }

    void require_close(const std::vector<float>& got, const vec& expected, double rel)
    {
        REQUIRE(got.size() == expected.size());
        double scale = 0.0;
        for (double e : expected)
        {
            scale = std::max(scale, std::fabs(e));
        }
        for (std::size_t i = 0; i < got.size(); ++i)
        {
            REQUIRE(std::fabs(got[i] - expected[i]) <= rel * scale + 1e-6);
        }
    }

    // mergekit's Karcher iteration, on vectors
    vec karcher_oracle(const std::vector<vec>& xs, int max_iter, double tol)
    {
        const std::size_t k = xs.size();
        std::vector<double> norms(k);
        std::vector<vec> units;
        std::vector<std::size_t> valid;
        for (std::size_t i = 0; i < k; ++i)
        {
            norms[i] = std::sqrt(vdot(xs[i], xs[i]));
            units.push_back(norms[i] > 0 ? axpy(1.0 / norms[i] - 1.0, xs[i], xs[i]) : vec(xs[i].size(), 0.0));
            if (norms[i] > tol)
            {
                valid.push_back(i);
            }
        }
        const double alpha = 1.0 / static_cast<double>(valid.size());
        vec mean(xs[0].size(), 0.0);
        for (std::size_t i : valid)
        {
            mean = axpy(alpha, units[i], mean);
        }
        const double mn = std::sqrt(vdot(mean, mean));
        for (double& x : mean)
        {
            x /= mn;
        }
        for (int it = 0; it < max_iter; ++it)
        {
            vec tangent(mean.size(), 0.0);
            for (std::size_t i : valid)
            {
                const double d = std::clamp(vdot(mean, units[i]), -1.0, 1.0);
                const double theta = std::acos(d);
                if (theta < tol)
                {
                    continue;
                }
                tangent = axpy(alpha * theta / std::sin(theta), axpy(-d, mean, units[i]), tangent);
            }
            const double tn = std::sqrt(vdot(tangent, tangent));
            if (tn < tol)
            {
                break;
            }
            for (std::size_t j = 0; j < mean.size(); ++j)
            {
                mean[j] = std::cos(tn) * mean[j] + std::sin(tn) * tangent[j] / tn;
            }
            const double un = std::sqrt(vdot(mean, mean));
            for (double& x : mean)
            {
                x /= un;
            }
        }
        double scale = 0.0;
        for (double n : norms)
        {
            scale += n / static_cast<double>(k);
        }
        for (double& x : mean)
        {
            x *= scale;
        }
        return mean;
    }
}

TEST_CASE("SLERP returns its endpoints and follows the great circle", "[geometry][slerp]")
{
    const auto a = xmerge_test::random_floats(30011, 1);
    const auto b = xmerge_test::random_floats(30011, 2);
    std::vector<float> out;
    evaluate(slerp(input(a), input(b), 0.0), out);
    CHECK(xmerge_test::same_bits(out, a));
    evaluate(slerp(input(a), input(b), 1.0), out);
    CHECK(xmerge_test::same_bits(out, b));

    const vec da = to_double(a), db = to_double(b);
    const double theta = std::acos(vdot(da, db) / std::sqrt(vdot(da, da) * vdot(db, db)));
    for (double t : {0.25, 0.5, 0.8})
    {
        evaluate(slerp(input(a), input(b), t), out, {2});
        const vec expected = axpy(std::sin(t * theta) / std::sin(theta), db, axpy(std::sin((1 - t) * theta) / std::sin(theta) - 1.0, da, da));
        require_close(out, expected, 1e-5);
    }
    // equal norms are preserved along the arc
    auto c = b;
    const double scale = std::sqrt(vdot(da, da) / vdot(db, db));
    for (auto& x : c)
    {
        x = static_cast<float>(x * scale);
    }
    evaluate(slerp(input(a), input(c), 0.37), out);
    const vec dout = to_double(out);
    CHECK(std::sqrt(vdot(dout, dout)) == Approx(std::sqrt(vdot(da, da))).epsilon(1e-5));
    // nearly colinear: plain lerp
    auto near = a;
    near[0] += 1e-4f;
    evaluate(slerp(input(a), input(near), 0.5), out);
    CHECK(out[0] == Approx(0.5 * a[0] + 0.5 * near[0]));
}

TEST_CASE("NuSLERP interpolates per row, per column or flattened", "[geometry][nuslerp]")
{
    const std::size_t rows = 37, cols = 53;
    const auto base = xmerge_test::random_floats(rows * cols, 3);
    const auto x0 = xmerge_test::random_floats(rows * cols, 4);
    const auto x1 = xmerge_test::random_floats(rows * cols, 5);
    const auto ref = [&](const std::vector<float>& v, const char* name) { return input(as_tensor(v, {rows, cols}, name)); };
    expression_list<input_node> models;
    models.push_back(ref(x0, "x0"));
    models.push_back(ref(x1, "x1"));
    const std::optional<input_node> with_base = ref(base, "base");
    const double t = 0.6 / (0.4 + 0.6);
    for (int mode = 0; mode < 3; ++mode)
    {
        nuslerp_options o;
        o.flatten = mode == 0;
        o.row_wise = mode == 2;
        std::vector<float> out;
        evaluate(nuslerp(models, with_base, {0.4, 0.6}, o), out, {2});
        // oracle over the task vectors, one vector at a time
        const std::size_t count = mode == 0 ? 1 : (mode == 1 ? rows : cols);
        const std::size_t length = mode == 0 ? rows * cols : (mode == 1 ? cols : rows);
        const auto at = [&](std::size_t v, std::size_t j) { return mode == 2 ? v + j * cols : v * length + j; };
        for (std::size_t v = 0; v < count; ++v)
        {
            vec d0(length), d1(length);
            for (std::size_t j = 0; j < length; ++j)
            {
                d0[j] = static_cast<double>(x0[at(v, j)]) - base[at(v, j)];
                d1[j] = static_cast<double>(x1[at(v, j)]) - base[at(v, j)];
            }
            const double theta = std::acos(std::clamp(vdot(d0, d1) / std::sqrt(vdot(d0, d0) * vdot(d1, d1)), -1.0, 1.0));
            const double s0 = std::sin((1 - t) * theta) / std::sin(theta), s1 = std::sin(t * theta) / std::sin(theta);
            for (std::size_t j = 0; j < length; ++j)
            {
                REQUIRE(out[at(v, j)] == Approx(base[at(v, j)] + s0 * d0[j] + s1 * d1[j]).margin(2e-6));
            }
        }
    }
    expression_list<input_node> three = models;
    three.push_back(ref(base, "extra"));
    CHECK_THROWS_WITH(nuslerp(three, with_base, {1, 1, 1}), Catch::Contains("exactly two models"));
}

TEST_CASE("Model Stock recovers identical fine-tunes and follows its ratio", "[geometry][model_stock]")
{
    const std::size_t n = 20011;
    const auto base = xmerge_test::random_floats(n, 6);
    auto x = xmerge_test::random_floats(n, 7);
    const std::vector<std::vector<float>> same{x, x, x};
    std::vector<float> out;
    evaluate(model_stock(inputs(same), input(base)), out);
    for (std::size_t i = 0; i < n; ++i)
    {
        REQUIRE(out[i] == Approx(x[i]).margin(2e-6));
    }

    std::vector<std::vector<float>> models;
    for (std::uint32_t k = 0; k < 3; ++k)
    {
        auto m = xmerge_test::random_floats(n, 20 + k, -0.1f, 0.1f);
        for (std::size_t i = 0; i < n; ++i)
        {
            m[i] += base[i] + 0.05f * x[i];  // a shared direction, so the angles are acute
        }
        models.push_back(m);
    }
    evaluate(model_stock(inputs(models), input(base)), out, {2});
    std::vector<vec> d;
    for (const auto& m : models)
    {
        vec v(n);
        for (std::size_t i = 0; i < n; ++i)
        {
            v[i] = static_cast<double>(m[i]) - base[i];
        }
        d.push_back(v);
    }
    double cos = 0.0;
    for (std::size_t i = 0; i < 3; ++i)
    {
        for (std::size_t j = i + 1; j < 3; ++j)
        {
            cos += vdot(d[i], d[j]) / std::sqrt(vdot(d[i], d[i]) * vdot(d[j], d[j])) / 3.0;
        }
    }
    const double t = 3 * cos / (1 + 2 * cos);
    for (std::size_t i = 0; i < n; ++i)
    {
        const double mean = (models[0][i] + models[1][i] + static_cast<double>(models[2][i])) / 3.0;
        REQUIRE(out[i] == Approx(t * mean + (1 - t) * base[i]).margin(2e-6));
    }

    // opposite task vectors: cos = -1 makes mergekit's ratio undefined; the base is kept
    std::vector<float> up(n), down(n);
    for (std::size_t i = 0; i < n; ++i)
    {
        up[i] = base[i] + 0.5f;
        down[i] = base[i] - 0.5f;
    }
    const std::vector<std::vector<float>> opposite{up, down}, alone{up};
    evaluate(model_stock(inputs(opposite), input(base)), out);
    CHECK(xmerge_test::same_bits(out, base));
    CHECK_THROWS_AS(model_stock(inputs(alone), input(base)), parameter_error);
}

TEST_CASE("filter-wise Model Stock uses one ratio per row", "[geometry][model_stock]")
{
    const std::size_t rows = 16, cols = 300;
    const auto base = xmerge_test::random_floats(rows * cols, 8);
    std::vector<std::vector<float>> models;
    for (std::uint32_t k = 0; k < 3; ++k)
    {
        models.push_back(xmerge_test::random_floats(rows * cols, 30 + k));
    }
    expression_list<input_node> leaves;
    for (const auto& m : models)
    {
        leaves.push_back(input(as_tensor(m, {rows, cols})));
    }
    std::vector<float> out;
    evaluate(model_stock(leaves, input(as_tensor(base, {rows, cols})), true), out);
    for (std::size_t r = 0; r < rows; ++r)
    {
        std::vector<vec> d(3, vec(cols));
        for (std::size_t k = 0; k < 3; ++k)
        {
            for (std::size_t j = 0; j < cols; ++j)
            {
                d[k][j] = static_cast<double>(models[k][r * cols + j]) - base[r * cols + j];
            }
        }
        double cos = 0.0;
        for (std::size_t i = 0; i < 3; ++i)
        {
            for (std::size_t j = i + 1; j < 3; ++j)
            {
                cos += std::clamp(vdot(d[i], d[j]) / std::sqrt(vdot(d[i], d[i]) * vdot(d[j], d[j])), -1.0, 1.0) / 3.0;
            }
        }
        const double den = 1 + 2 * cos;
        const double t = den > 0 ? 3 * cos / den : 0.0;
        for (std::size_t j = 0; j < cols; ++j)
        {
            const double mean = (d[0][j] + d[1][j] + d[2][j]) / 3.0;
            REQUIRE(out[r * cols + j] == Approx(base[r * cols + j] + t * mean).margin(2e-6));
        }
    }
}

TEST_CASE("multi-SLERP matches its definition", "[geometry][multislerp]")
{
    const std::size_t n = 5003;
    const auto base = xmerge_test::random_floats(n, 9);
    std::vector<std::vector<float>> models;
    for (std::uint32_t k = 0; k < 3; ++k)
    {
        models.push_back(xmerge_test::random_floats(n, 40 + k));
    }
    std::vector<float> out;
    evaluate(multislerp(inputs(models), input(base), {1.0, 2.0, 3.0}), out, {2});
    std::vector<vec> d;
    for (const auto& m : models)
    {
        vec v(n);
        for (std::size_t i = 0; i < n; ++i)
        {
            v[i] = static_cast<double>(m[i]) - base[i];
        }
        d.push_back(v);
    }
    const double w[3] = {1.0 / 6, 2.0 / 6, 3.0 / 6};
    const double eps = 1e-8;
    vec mean(n, 0.0);
    std::vector<vec> units;
    double avg_norm = 0.0;
    for (std::size_t k = 0; k < 3; ++k)
    {
        const double norm = std::sqrt(vdot(d[k], d[k]));
        avg_norm += w[k] * norm;
        vec u(n);
        for (std::size_t i = 0; i < n; ++i)
        {
            u[i] = d[k][i] / (norm + eps);
        }
        units.push_back(u);
        mean = axpy(w[k], u, mean);
    }
    const double mn = std::sqrt(vdot(mean, mean));
    for (double& x : mean)
    {
        x /= mn;
    }
    vec tangent(n, 0.0);
    for (std::size_t k = 0; k < 3; ++k)
    {
        tangent = axpy(w[k], axpy(-vdot(units[k], mean), mean, units[k]), tangent);
    }
    const double tn = std::sqrt(vdot(tangent, tangent)) + eps;
    vec expected(n);
    for (std::size_t i = 0; i < n; ++i)
    {
        expected[i] = base[i] + (mean[i] * std::cos(tn) + tangent[i] * std::sin(tn) / tn) * avg_norm;
    }
    require_close(out, expected, 1e-5);

    // antipodal pair with equal weights: linear fallback
    std::vector<float> up(n, 1.0f), down(n, -1.0f);
    const std::vector<std::vector<float>> antipodal{up, down};
    evaluate(multislerp(inputs(antipodal), std::nullopt, {1.0, 1.0}), out);
    CHECK(out[7] == Approx(0.0).margin(1e-6));
}

TEST_CASE("the Karcher mean matches mergekit's iteration", "[geometry][karcher]")
{
    const std::size_t n = 4001;
    std::vector<std::vector<float>> xs;
    std::vector<vec> dx;
    for (std::uint32_t k = 0; k < 4; ++k)
    {
        xs.push_back(xmerge_test::random_floats(n, 50 + k, -1.0f + 0.3f * k, 1.0f));
        dx.push_back(to_double(xs.back()));
    }
    std::vector<float> out;
    evaluate(karcher(inputs(xs), 10, 1e-5), out, {2});
    require_close(out, karcher_oracle(dx, 10, 1e-5), 1e-5);
    // identical inputs are their own mean
    const std::vector<std::vector<float>> same{xs[0], xs[0], xs[0]};
    evaluate(karcher(inputs(same)), out);
    require_close(out, dx[0], 1e-6);
}

TEST_CASE("geometric methods give the same bits for any thread count", "[geometry][threads]")
{
    const std::size_t n = 300007;
    const auto base = xmerge_test::random_floats(n, 60);
    std::vector<std::vector<float>> models;
    for (std::uint32_t k = 0; k < 3; ++k)
    {
        models.push_back(xmerge_test::random_floats(n, 61 + k));
    }
    const method_registry& r = xmerge_test::builtin_registry();
    method_inputs in;
    in.tensor = "w";
    in.base = input(base);
    in.models = inputs(models);
    const std::vector<std::vector<float>> first_two{models[0], models[1]}, first_one{models[0]};
    method_inputs pair = in;
    pair.models = inputs(first_two);
    method_inputs single = in;
    single.models = inputs(first_one);
    const std::vector<std::pair<std::string, std::pair<method_inputs*, parameters>>> cases = {
        {"model_stock", {&in, {}}},
        {"multislerp", {&in, {{"weight", 1.0}}}},
        {"karcher", {&in, {}}},
        {"nuslerp", {&pair, {{"weight", 1.0}}}},
        {"slerp", {&single, {{"t", 0.3}}}},
        {"ties", {&in, {{"weight", 1.0}, {"density", 0.2}}}},
        {"dare_ties", {&in, {{"weight", 1.0}, {"density", 0.2}}}},
        {"breadcrumbs_ties", {&in, {{"weight", 1.0}, {"density", 0.5}}}},
        {"sce", {&in, {{"select_topk", 0.5}}}}};
    for (const auto& [method, c] : cases)
    {
        std::vector<float> one, two;
        evaluate(r.build(method, *c.first, c.second), one, {1});
        evaluate(r.build(method, *c.first, c.second), two, {2});
        INFO(method);
        REQUIRE(xmerge_test::same_bits(one, two));
    }
}
