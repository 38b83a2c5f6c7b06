// RegMean against a double oracle and its defining property (the gradient of
// the regression loss vanishes), its error reporting, and the Gram
// accumulator it is fed by.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "linalg_support.hpp"
#include "registry_support.hpp"

using namespace xmerge;

namespace
{
    struct regmean_problem
    {
        std::size_t out, in, k;
        std::vector<std::vector<float>> weights, grams, activations;
        std::vector<std::size_t> rows;

        regmean_problem(std::size_t out_, std::size_t in_, std::size_t k_) : out(out_), in(in_), k(k_)
        {
            for (std::size_t i = 0; i < k; ++i)
            {
                weights.push_back(xmerge_test::normal_matrix(out, in, static_cast<std::uint32_t>(100 + i), 0.1f));
                // each model sees inputs of its own scale per feature
                rows.push_back(3 * in + 7 * i);
                auto x = xmerge_test::normal_matrix(rows[i], in, static_cast<std::uint32_t>(200 + i));
                const auto scales = xmerge_test::random_floats(in, static_cast<std::uint32_t>(300 + i), 0.5f, 2.0f);
                for (std::size_t r = 0; r < rows[i]; ++r)
                {
                    for (std::size_t j = 0; j < in; ++j)
                    {
                        x[r * in + j] *= scales[j];
                    }
                }
                gram_accumulator acc(in, "layer");
                acc.add(x.data(), rows[i]);
                const auto g = acc.gram();
                grams.emplace_back(g.begin(), g.end());
                activations.push_back(std::move(x));
            }
        }

        expression_list<input_node> model_leaves() const
        {
            expression_list<input_node> l;
            for (std::size_t i = 0; i < k; ++i)
            {
                l.push_back(input(as_tensor(weights[i], {out, in}, "model." + std::to_string(i))));
            }
            return l;
        }

        expression_list<input_node> gram_leaves() const
        {
            expression_list<input_node> l;
            for (std::size_t i = 0; i < k; ++i)
            {
                l.push_back(input(as_tensor(grams[i], {in, in}, "gram." + std::to_string(i))));
            }
            return l;
        }

        // result^T = (sum G~)^-1 sum G~ W^T in double
        std::vector<double> oracle(double a) const
        {
            std::vector<double> s(in * in, 0.0), b(in * out, 0.0);
            for (std::size_t i = 0; i < k; ++i)
            {
                std::vector<double> g(grams[i].begin(), grams[i].end());
                for (std::size_t r = 0; r < in; ++r)
                {
                    for (std::size_t c = 0; c < in; ++c)
                    {
                        if (r != c)
                        {
                            g[r * in + c] *= a;
                        }
                    }
                }
                const auto gw = xmerge_test::matmul(g, xmerge_test::transpose(weights[i], out, in), in, in, out);
                for (std::size_t e = 0; e < s.size(); ++e)
                {
                    s[e] += g[e];
                }
                for (std::size_t e = 0; e < b.size(); ++e)
                {
                    b[e] += gw[e];
                }
            }
            return xmerge_test::transpose(xmerge_test::solve(s, b, in, out), in, out);
        }
    };
}

TEST_CASE("RegMean matches a double oracle for every shrinkage ratio", "[linalg][regmean]")
{
    const regmean_problem p(24, 40, 3);
    for (double a : {1.0, 0.9, 0.3, 0.0})
    {
        const auto expected = p.oracle(a);
        for (auto precision : {linalg_precision::float32, linalg_precision::float64})
        {
            std::vector<float> got;
            evaluate(regmean(p.model_leaves(), p.gram_leaves(), {a, 0.0, precision}), got);
            REQUIRE(got.size() == expected.size());
            const double tol = precision == linalg_precision::float64 ? 1e-6 : 2e-4;
            for (std::size_t e = 0; e < got.size(); ++e)
            {
                REQUIRE(got[e] == Approx(expected[e]).margin(tol * 0.1).epsilon(tol));
            }
        }
    }
}

TEST_CASE("RegMean zeroes the gradient of the summed regression loss", "[linalg][regmean][invariant]")
{
    // d/dW sum_i ||X_i W^T - X_i W_i^T||^2 / n_i = 2 sum_i (W - W_i) G_i
    const regmean_problem p(16, 32, 4);
    for (auto precision : {linalg_precision::float32, linalg_precision::float64})
    {
        std::vector<float> w;
        evaluate(regmean(p.model_leaves(), p.gram_leaves(), {1.0, 0.0, precision}), w);
        std::vector<double> grad(p.out * p.in, 0.0), scale(p.out * p.in, 0.0);
        for (std::size_t i = 0; i < p.k; ++i)
        {
            std::vector<double> diff(p.out * p.in);
            for (std::size_t e = 0; e < diff.size(); ++e)
            {
                diff[e] = static_cast<double>(w[e]) - p.weights[i][e];
            }
            const auto dg = xmerge_test::matmul(diff, p.grams[i], p.out, p.in, p.in);
            const auto wg = xmerge_test::matmul(p.weights[i], p.grams[i], p.out, p.in, p.in);
            for (std::size_t e = 0; e < grad.size(); ++e)
            {
                grad[e] += dg[e];
                scale[e] += std::fabs(wg[e]);
            }
        }
        // float32 results carry a rounding of W, which the loss magnifies by cond(sum G)
        const double limit = precision == linalg_precision::float64 ? 1e-6 : 1e-4;
        CHECK(xmerge_test::frobenius(grad) <= limit * xmerge_test::frobenius(scale));
    }
}

TEST_CASE("RegMean with equal Gram matrices is the plain average", "[linalg][regmean][invariant]")
{
    regmean_problem p(20, 28, 3);
    p.grams[1] = p.grams[0];
    p.grams[2] = p.grams[0];
    std::vector<float> got;
    evaluate(regmean(p.model_leaves(), p.gram_leaves(), {0.7, 0.0, linalg_precision::float32}), got);
    for (std::size_t e = 0; e < got.size(); ++e)
    {
        const double mean = (static_cast<double>(p.weights[0][e]) + p.weights[1][e] + p.weights[2][e]) / 3.0;
        REQUIRE(got[e] == Approx(mean).margin(2e-6));
    }
}

TEST_CASE("RegMean reads bfloat16 weights and Gram matrices", "[linalg][regmean][dtype]")
{
    const regmean_problem p(12, 20, 2);
    std::vector<xmerge_test::buffer> w, g;
    std::vector<std::vector<float>> w_rounded, g_rounded;
    expression_list<input_node> wl, gl, wr, gr;
    for (std::size_t i = 0; i < p.k; ++i)
    {
        w.emplace_back(dtype::bfloat16, p.weights[i]);
        g.emplace_back(dtype::bfloat16, p.grams[i]);
        w_rounded.push_back(w.back().values());
        g_rounded.push_back(g.back().values());
    }
    for (std::size_t i = 0; i < p.k; ++i)
    {
        wl.push_back(input(w[i].cref().reshaped({p.out, p.in})));
        gl.push_back(input(g[i].cref().reshaped({p.in, p.in})));
        wr.push_back(input(as_tensor(w_rounded[i], shape_type{p.out, p.in})));
        gr.push_back(input(as_tensor(g_rounded[i], shape_type{p.in, p.in})));
    }
    std::vector<float> from_bf16, from_f32;
    evaluate(regmean(wl, gl, {0.9}), from_bf16);
    evaluate(regmean(wr, gr, {0.9}), from_f32);
    for (std::size_t e = 0; e < from_f32.size(); ++e)
    {
        REQUIRE(from_bf16[e] == Approx(from_f32[e]).epsilon(1e-6).margin(1e-7));
    }

    // a bfloat16 output rounds the float32 solution once
    std::vector<bfloat16> out(p.out * p.in);
    evaluate(regmean(wl, gl, {0.9}), as_tensor(out, shape_type{p.out, p.in}));
    CHECK(static_cast<float>(xmerge::bf16_bits_to_float(out[3].bits)) == xmerge_test::round_to(dtype::bfloat16, from_bf16[3]));
}

TEST_CASE("RegMean averages tensors without Gram matrices", "[linalg][regmean]")
{
    const std::vector<std::vector<float>> biases{xmerge_test::random_floats(37, 1), xmerge_test::random_floats(37, 2)};
    std::vector<float> got;
    evaluate(regmean(inputs(biases), {}), got);
    CHECK(got[5] == Approx((biases[0][5] + biases[1][5]) / 2.0).margin(1e-7));

    method_inputs in;
    in.tensor = "bias";
    in.models = inputs(biases);
    evaluate(xmerge_test::builtin_registry().build("regmean", in, {}), got);
    CHECK(got[36] == Approx((biases[0][36] + biases[1][36]) / 2.0).margin(1e-7));
}

TEST_CASE("RegMean through the registry, in either precision", "[linalg][regmean][registry]")
{
    const regmean_problem p(10, 14, 2);
    method_inputs in;
    in.tensor = "fc.weight";
    in.models = p.model_leaves();
    in.extra["gram"] = p.gram_leaves();
    const method_registry& r = xmerge_test::builtin_registry();
    std::vector<float> by_name, direct;
    evaluate(r.build("regmean", in, {{"reduce_non_diagonal_ratio", 0.8}, {"precision", std::string("float64")}}), by_name);
    evaluate(regmean(in.models, in.extra["gram"], {0.8, 0.0, linalg_precision::float64}), direct);
    CHECK(xmerge_test::same_bits(by_name, direct));
    CHECK_THROWS_WITH(r.build("regmean", in, {{"precision", std::string("float16")}}), Catch::Contains("precision") && Catch::Contains("fc.weight"));
}

TEST_CASE("RegMean reports shapes, parameters and Gram matrices it cannot use", "[linalg][regmean][errors]")
{
    regmean_problem p(6, 8, 2);
    const auto models = p.model_leaves();
    const auto grams = p.gram_leaves();

    expression_list<input_node> one_gram;
    one_gram.push_back(grams[0]);
    CHECK_THROWS_WITH(regmean(models, one_gram), Catch::Contains("gram") && Catch::Contains("expected 2"));

    std::vector<float> wrong(9 * 9, 0.0f);
    expression_list<input_node> bad_shape{std::vector<input_node>{grams[0], input(as_tensor(wrong, {9, 9}, "gram.1"))}};
    CHECK_THROWS_WITH(regmean(models, bad_shape), Catch::Contains("gram.1") && Catch::Contains("[9, 9]"));

    std::vector<float> flat(48, 0.0f);
    expression_list<input_node> flat_models{std::vector<input_node>{input(as_tensor(flat, {48}, "flat.0")), input(as_tensor(flat, {48}, "flat.1"))}};
    CHECK_THROWS_WITH(regmean(flat_models, grams), Catch::Contains("2-D"));

    CHECK_THROWS_WITH(regmean(models, grams, {1.5}), Catch::Contains("reduce_non_diagonal_ratio"));
    CHECK_THROWS_WITH(regmean(models, grams, {1.0, -1.0}), Catch::Contains("ridge"));
    CHECK_THROWS_WITH(regmean(models, grams, {std::nan("")}), Catch::Contains("reduce_non_diagonal_ratio"));

    std::vector<float> out;
    // not symmetric
    auto asym = p.grams[1];
    asym[0 * 8 + 1] += 1.0f;
    expression_list<input_node> asym_grams{std::vector<input_node>{grams[0], input(as_tensor(asym, {8, 8}, "gram.1"))}};
    CHECK_THROWS_WITH(evaluate(regmean(models, asym_grams), out), Catch::Contains("gram.1") && Catch::Contains("not symmetric"));
    // negative diagonal
    auto negative = p.grams[1];
    negative[2 * 8 + 2] = -1.0f;
    expression_list<input_node> negative_grams{std::vector<input_node>{grams[0], input(as_tensor(negative, {8, 8}, "gram.1"))}};
    CHECK_THROWS_WITH(evaluate(regmean(models, negative_grams), out), Catch::Contains("gram.1") && Catch::Contains("diagonal"));
    // not finite
    auto nan_gram = p.grams[1];
    nan_gram[3 * 8 + 5] = std::nanf("");
    expression_list<input_node> nan_grams{std::vector<input_node>{grams[0], input(as_tensor(nan_gram, {8, 8}, "gram.1"))}};
    CHECK_THROWS_WITH(evaluate(regmean(models, nan_grams), out), Catch::Contains("gram.1") && Catch::Contains("not finite"));
}

TEST_CASE("RegMean throws on a singular Gram sum unless a ridge is allowed", "[linalg][regmean][errors]")
{
    // Input feature 3 is never active in any model: its row and column are zero.
    regmean_problem p(5, 8, 2);
    for (auto& x : p.activations)
    {
        for (std::size_t r = 0; r < x.size() / 8; ++r)
        {
            x[r * 8 + 3] = 0.0f;
        }
    }
    for (std::size_t i = 0; i < p.k; ++i)
    {
        gram_accumulator acc(8);
        acc.add(p.activations[i].data(), p.rows[i]);
        const auto g = acc.gram();
        p.grams[i].assign(g.begin(), g.end());
    }
    std::vector<float> out;
    CHECK_THROWS_WITH(evaluate(regmean(p.model_leaves(), p.gram_leaves()), out),
                      Catch::Contains("not positive definite") && Catch::Contains("model.0") && Catch::Contains("ridge"));

    evaluate(regmean(p.model_leaves(), p.gram_leaves(), {1.0, 1e-6}), out);
    for (std::size_t r = 0; r < p.out; ++r)
    {
        // the dead input gets no weight; the others are still solved
        CHECK(out[r * 8 + 3] == 0.0f);
        CHECK(std::isfinite(out[r * 8 + 0]));
    }
}

TEST_CASE("gram_accumulator sums X^T X over batches of any dtype and rank", "[linalg][gram]")
{
    const std::size_t in = 19;
    const auto x0 = xmerge_test::normal_matrix(50, in, 1);
    const auto x1 = xmerge_test::normal_matrix(3 * 4 * in, 1, 2);  // [3, 4, in]
    const auto x2 = xmerge_test::normal_matrix(30, in, 3);
    xmerge_test::buffer b2(dtype::bfloat16, x2);
    const auto x2_rounded = b2.values();

    gram_accumulator acc(in, "fc1");
    acc.add(as_tensor(x0, shape_type{50, in}));
    acc.add(as_tensor(x1, shape_type{3, 4, in}));
    acc.add(b2.cref().reshaped({30, in}));
    CHECK(acc.rows() == 92);

    std::vector<double> expected(in * in, 0.0);
    for (const auto* x : {&x0, &x1})
    {
        const auto xtx = xmerge_test::matmul(xmerge_test::transpose(*x, x->size() / in, in), *x, in, x->size() / in, in);
        for (std::size_t e = 0; e < expected.size(); ++e)
        {
            expected[e] += xtx[e];
        }
    }
    const auto xtx2 = xmerge_test::matmul(xmerge_test::transpose(x2_rounded, 30, in), x2_rounded, in, 30, in);
    for (std::size_t e = 0; e < expected.size(); ++e)
    {
        expected[e] += xtx2[e];
    }
    const auto sum = acc.sum();
    const auto gram = acc.gram();
    for (std::size_t i = 0; i < in; ++i)
    {
        for (std::size_t j = 0; j < in; ++j)
        {
            REQUIRE(sum(i, j) == Approx(expected[i * in + j]).margin(1e-4));
            REQUIRE(gram(i, j) == Approx(expected[i * in + j] / 92.0).margin(1e-6));
            REQUIRE(sum(i, j) == sum(j, i));
        }
    }

    std::vector<bfloat16> out(in * in);
    acc.write(as_tensor(out, shape_type{in, in}));
    CHECK(xmerge::bf16_bits_to_float(out[in + 2].bits) == xmerge_test::round_to(dtype::bfloat16, gram(1, 2)));

    acc.reset();
    CHECK(acc.rows() == 0);
    CHECK_THROWS_WITH(acc.gram(), Catch::Contains("fc1") && Catch::Contains("no rows"));
    CHECK_THROWS_WITH(acc.add(as_tensor(x0, shape_type{50, in}).reshaped({in, 50})), Catch::Contains("[..., 19]"));
    std::vector<float> small(4);
    acc.add(x0.data(), 1);
    CHECK_THROWS_AS(acc.write(as_tensor(small, shape_type{2, 2})), shape_error);
}
