// Folding LoRA updates into weights, lazily: the kernel against its scalar
// twin, every dtype against a float64 oracle, both layouts, DoRA, threads,
// in-place use, and adapters combined in one expression.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>
#include <vector>

#include <xmerge/lora/fold.hpp>
#include <xmerge/methods/task_arithmetic.hpp>

#include "test_support.hpp"

using namespace xmerge;
using xmerge_test::buffer;

namespace
{
    constexpr dtype all_dtypes[] = {dtype::float32, dtype::bfloat16, dtype::float16};

    /// A LoRA update held in buffers of one dtype, for a weight of `weight_shape`.
    struct adapter_fixture
    {
        shape_type weight_shape;
        lora::factor_layout layout;
        std::size_t rank;
        double scale;
        buffer a, b;
        std::optional<buffer> magnitude;

        adapter_fixture(shape_type w, lora::factor_layout l, std::size_t r, double s, dtype type, std::uint32_t seed, bool dora = false)
            : weight_shape(std::move(w)), layout(l), rank(r), scale(s), a(type, xmerge_test::random_floats(r * in(), seed), "x.lora_A.weight"),
              b(type, xmerge_test::random_floats(out() * r, seed + 1), "x.lora_B.weight")
        {
            if (dora)
            {
                magnitude.emplace(type, xmerge_test::random_floats(out(), seed + 2, 0.5f, 2.0f), "x.lora_magnitude_vector");
            }
        }

        std::size_t rows() const { return weight_shape[0]; }
        std::size_t cols() const { return numel(weight_shape) / weight_shape[0]; }
        std::size_t out() const { return layout == lora::factor_layout::out_in ? rows() : cols(); }
        std::size_t in() const { return layout == lora::factor_layout::out_in ? cols() : rows(); }

        lora::layer layer() const
        {
            lora::layer l;
            l.target = "x.weight";
            shape_type a_shape{rank};
            if (layout == lora::factor_layout::out_in)
            {
                a_shape.insert(a_shape.end(), weight_shape.begin() + 1, weight_shape.end());
            }
            else
            {
                a_shape.push_back(in());
            }
            shape_type b_shape{out(), rank};
            for (std::size_t d = 2; layout == lora::factor_layout::out_in && d < weight_shape.size(); ++d)
            {
                b_shape.push_back(1);
            }
            l.a = a.cref().reshaped(a_shape);
            l.b = b.cref().reshaped(b_shape);
            l.scale = scale;
            l.layout = layout;
            if (magnitude)
            {
                l.magnitude = magnitude->cref();
            }
            return l;
        }

        /// (s B A) as the stored weight's rows x cols in double, or with `magnitudes` sum_k |s B_ik A_kj|
        /// (the scale of float32 rounding in the product).
        std::vector<double> delta(bool magnitudes = false) const
        {
            const auto av = a.values(), bv = b.values();
            std::vector<double> d(rows() * cols(), 0.0);
            for (std::size_t i = 0; i < out(); ++i)
            {
                for (std::size_t j = 0; j < in(); ++j)
                {
                    double s = 0.0;
                    for (std::size_t k = 0; k < rank; ++k)
                    {
                        const double term = static_cast<double>(bv[i * rank + k]) * av[k * in() + j];
                        s += magnitudes ? std::fabs(term) : term;
                    }
                    d[layout == lora::factor_layout::out_in ? i * cols() + j : j * cols() + i] = (magnitudes ? std::fabs(scale) : scale) * s;
                }
            }
            return d;
        }

        std::vector<double> delta_magnitude() const { return delta(true); }

        /// The folded weight in double: W + delta, DoRA-rescaled when there is a magnitude.
        std::vector<double> folded(const std::vector<float>& w) const
        {
            const auto d = delta();
            std::vector<double> v(d.size());
            for (std::size_t e = 0; e < v.size(); ++e)
            {
                v[e] = w[e] + d[e];
            }
            if (!magnitude)
            {
                return v;
            }
            const auto m = magnitude->values();
            const bool per_row = layout == lora::factor_layout::out_in;
            std::vector<double> norm(out(), 0.0);
            for (std::size_t e = 0; e < v.size(); ++e)
            {
                norm[per_row ? e / cols() : e % cols()] += v[e] * v[e];
            }
            for (std::size_t e = 0; e < v.size(); ++e)
            {
                const std::size_t f = per_row ? e / cols() : e % cols();
                v[e] *= m[f] / std::sqrt(norm[f]);
            }
            return v;
        }
    };

    /// |got - expected| within a few units of the output dtype plus float32 rounding of the product.
    void require_close(const std::vector<float>& got, const std::vector<double>& expected, const std::vector<double>& product_scale, dtype out,
                       std::size_t rank, double relative_slack = 0.0)
    {
        REQUIRE(got.size() == expected.size());
        for (std::size_t e = 0; e < got.size(); ++e)
        {
            const double tol = 1.01 * xmerge_test::ulp_of(out, expected[e]) + (rank + 2) * 1.2e-7 * (product_scale[e] + std::fabs(expected[e]))
                               + relative_slack * std::fabs(expected[e]);
            if (!(std::fabs(got[e] - expected[e]) <= tol))
            {
                FAIL_CHECK("element " << e << ": got " << got[e] << ", expected " << expected[e] << " (tolerance " << tol << ")");
                return;
            }
        }
    }

    std::vector<float> evaluate_to(dtype out, const lora::low_rank_node& node, const eval_options& options = {})
    {
        buffer result(out, numel(node.shape()));
        evaluate(node, result.ref().reshaped(node.shape()), options);
        return result.values();
    }
}

TEST_CASE("the low-rank row kernel matches its scalar twin", "[lora][kernel]")
{
    for (std::size_t rank : {1, 3, 16})
    {
        for (std::size_t n : xmerge_test::odd_sizes())
        {
            const std::size_t ld = n + 5;
            const auto left = xmerge_test::random_floats(rank, 3);
            const auto right = xmerge_test::random_floats(rank * ld + 1, 4);
            for (dtype type : all_dtypes)
            {
                const buffer w(type, xmerge_test::random_floats(n, 5));
                std::vector<float> simd_out(n), scalar_out(n);
                xmerge::detail::with_element_type(type,
                                                  [&](auto tag)
                                                  {
                                                      const auto* src = static_cast<decltype(tag)>(static_cast<const void*>(w.bytes().data()));
                                                      lora::detail::low_rank_row<simd::batch>(simd_out.data(), src, left.data(), right.data(), ld, rank, n);
                                                      lora::detail::low_rank_row<float>(scalar_out.data(), src, left.data(), right.data(), ld, rank, n);
                                                  });
                for (std::size_t j = 0; j < n; ++j)
                {
                    // Both form the same sum in the same order; only a missing FMA unit may round differently.
                    REQUIRE(simd_out[j] == Approx(scalar_out[j]).margin(1e-6));
                }
            }
        }
    }
}

TEST_CASE("fold-in matches a float64 oracle for every dtype, layout and odd size", "[lora][fold]")
{
    const std::size_t w = simd::lanes;
    const std::vector<shape_type> shapes = {{1, 1}, {3, w - 1 == 0 ? 2 : w - 1}, {5, w + 1}, {17, 33}, {40, 2049}};
    for (dtype type : all_dtypes)
    {
        for (const auto& shape : shapes)
        {
            for (auto layout : {lora::factor_layout::out_in, lora::factor_layout::in_out})
            {
                CAPTURE(name_of(type), to_string(shape), layout == lora::factor_layout::out_in);
                const adapter_fixture f(shape, layout, 3, 0.7, type, 11);
                const buffer weight(type, xmerge_test::random_floats(numel(shape), 12), "x.weight");
                const auto wv = weight.values();
                eval_options options;
                options.chunk_size = 64;  // chunks end inside rows
                const auto got = evaluate_to(type, lora::fold(weight.cref().reshaped(shape), f.layer()), options);
                require_close(got, f.folded(wv), f.delta_magnitude(), type, f.rank);
                const auto upd = evaluate_to(dtype::float32, lora::update(weight.cref().reshaped(shape), f.layer()), options);
                require_close(upd, f.delta(), f.delta_magnitude(), dtype::float32, f.rank);
            }
        }
    }
}

TEST_CASE("fold-in of a convolution's factors views the kernel as columns", "[lora][fold]")
{
    // W [out=5, in=3, 3, 3], A [r, 3, 3, 3], B [5, r, 1, 1], as PEFT's Conv2d LoRA.
    const adapter_fixture f({5, 3, 3, 3}, lora::factor_layout::out_in, 2, 2.0, dtype::float32, 21, true);
    const buffer weight(dtype::float32, xmerge_test::random_floats(135, 22), "conv.weight");
    const auto node = lora::fold(weight.cref().reshaped({5, 3, 3, 3}), f.layer());
    REQUIRE(node.shape() == shape_type{5, 3, 3, 3});
    require_close(evaluate_to(dtype::float32, node), f.folded(weight.values()), f.delta_magnitude(), dtype::float32, f.rank);
}

TEST_CASE("DoRA rescales each output feature to its magnitude", "[lora][fold][dora]")
{
    for (dtype type : all_dtypes)
    {
        for (auto layout : {lora::factor_layout::out_in, lora::factor_layout::in_out})
        {
            CAPTURE(name_of(type), layout == lora::factor_layout::out_in);
            const shape_type shape{23, 70};
            const adapter_fixture f(shape, layout, 4, 0.5, type, 31, true);
            const buffer weight(type, xmerge_test::random_floats(numel(shape), 32), "x.weight");
            const auto ref = weight.cref().reshaped(shape);
            // The norms are formed in double and the factors in float32: a few float32 ulps on top.
            require_close(evaluate_to(type, lora::fold(ref, f.layer())), f.folded(weight.values()), f.delta_magnitude(), type, f.rank, 1e-6);

            // Every output feature of the result has norm m.
            const auto folded = evaluate_to(dtype::float32, lora::fold(ref, f.layer()));
            const auto m = f.magnitude->values();
            std::vector<double> norms(f.out(), 0.0);
            for (std::size_t e = 0; e < folded.size(); ++e)
            {
                norms[layout == lora::factor_layout::out_in ? e / shape[1] : e % shape[1]] += static_cast<double>(folded[e]) * folded[e];
            }
            for (std::size_t i = 0; i < norms.size(); ++i)
            {
                REQUIRE(std::sqrt(norms[i]) == Approx(m[i]).epsilon(1e-5));
            }

            // The update of a DoRA layer is the folded weight less W.
            const auto upd = evaluate_to(dtype::float32, lora::update(ref, f.layer()));
            const auto expected = f.folded(weight.values());
            const auto wv = weight.values();
            for (std::size_t e = 0; e < upd.size(); ++e)
            {
                REQUIRE(upd[e] == Approx(expected[e] - wv[e]).margin(1e-5));
            }
        }
    }
}

TEST_CASE("fold-in gives the same bits for any thread count and in place", "[lora][fold][threads]")
{
    const shape_type shape{301, 257};
    for (bool dora : {false, true})
    {
        const adapter_fixture f(shape, lora::factor_layout::out_in, 16, 0.25, dtype::bfloat16, 41, dora);
        buffer weight(dtype::bfloat16, xmerge_test::random_floats(numel(shape), 42), "x.weight");
        const auto ref = weight.cref().reshaped(shape);
        eval_options one, many;
        many.threads = 4;
        const auto a = evaluate_to(dtype::bfloat16, lora::fold(ref, f.layer()), one);
        const auto b = evaluate_to(dtype::bfloat16, lora::fold(ref, f.layer()), many);
        REQUIRE(xmerge_test::same_bits(a, b));

        // Folding into the weight's own memory.
        evaluate(lora::fold(ref, f.layer()), weight.ref().reshaped(shape), many);
        REQUIRE(xmerge_test::same_bits(weight.values(), a));
    }
}

TEST_CASE("task arithmetic over several adapters folds each update in one pass", "[lora][fold][merge]")
{
    const shape_type shape{37, 45};
    const buffer weight(dtype::float32, xmerge_test::random_floats(numel(shape), 51), "x.weight");
    const auto ref = weight.cref().reshaped(shape);
    std::vector<adapter_fixture> adapters;
    std::vector<lora::layer> layers;
    for (std::uint32_t i = 0; i < 3; ++i)
    {
        adapters.emplace_back(shape, lora::factor_layout::out_in, 2 + i, 1.0 + i, dtype::float32, 60 + 10 * i);
    }
    for (const auto& a : adapters)
    {
        layers.push_back(a.layer());
    }
    const std::vector<double> weights{0.5, -0.25, 1.0};
    std::vector<float> merged, from_updates;
    evaluate(task_arithmetic(lora::folds(ref, layers), input(ref), weights, {0.8, false}), merged);
    evaluate(task_arithmetic(lora::updates(ref, layers), lora::zeros(shape, "zero"), weights, {0.8, false}), from_updates);
    const auto wv = weight.values();
    for (std::size_t e = 0; e < merged.size(); ++e)
    {
        double expected = 0.0;
        for (std::size_t i = 0; i < adapters.size(); ++i)
        {
            expected += weights[i] * adapters[i].delta()[e];
        }
        REQUIRE(merged[e] == Approx(wv[e] + 0.8 * expected).margin(2e-5));
        REQUIRE(from_updates[e] == Approx(0.8 * expected).margin(2e-5));
    }
}

TEST_CASE("fold-in refuses factors that do not fit, naming the tensors", "[lora][fold][errors]")
{
    const adapter_fixture f({6, 4}, lora::factor_layout::out_in, 2, 1.0, dtype::float32, 71);
    const buffer weight(dtype::float32, xmerge_test::random_floats(24, 72), "x.weight");
    const buffer wrong(dtype::float32, xmerge_test::random_floats(20, 72), "x.weight");
    CHECK_THROWS_WITH(lora::fold(wrong.cref().reshaped({5, 4}), f.layer()), Catch::Contains("x.lora_A.weight") && Catch::Contains("[5, 4]"));

    auto l = f.layer();
    l.b = l.b.reshaped({4, 3});
    CHECK_THROWS_WITH(lora::fold(weight.cref().reshaped({6, 4}), l), Catch::Contains("rank mismatch"));

    // DoRA cannot rescale an output feature whose weight and update are both zero.
    adapter_fixture d({6, 4}, lora::factor_layout::out_in, 2, 1.0, dtype::float32, 73, true);
    auto b_values = d.b.values();
    std::fill(b_values.begin(), b_values.begin() + 2, 0.0f);
    const buffer b_zero_row(dtype::float32, b_values, "x.lora_B.weight");
    auto zero_row = d.layer();
    zero_row.b = b_zero_row.cref().reshaped({6, 2});
    std::vector<float> w(24, 1.0f);
    std::fill(w.begin(), w.begin() + 4, 0.0f);
    std::vector<float> out;
    CHECK_THROWS_WITH(evaluate(lora::fold(as_tensor(w, {6, 4}, "x.weight"), zero_row), out), Catch::Contains("output feature 0"));
    CHECK_THROWS_AS(lora::update(d.layer(), {6, 4}), parameter_error);
}

TEST_CASE("the worked example of docs/adapters.md", "[lora][fold][docs]")
{
    // W [3, 2], a rank-1 LoRA with alpha 2: s = 2.
    const std::vector<float> w{1, 0, 0, 1, 1, 1}, a{1, 2}, b{1, 0, 2}, m{5, 2, 10};
    lora::layer l;
    l.target = "proj.weight";
    l.a = as_tensor(a, {1, 2}, "proj.lora_A.weight");
    l.b = as_tensor(b, {3, 1}, "proj.lora_B.weight");
    l.scale = lora::scaling(2.0, 1, false);
    std::vector<float> folded;
    evaluate(lora::fold(as_tensor(w, {3, 2}, "proj.weight"), l), folded);
    CHECK(folded == std::vector<float>{3, 4, 0, 1, 5, 9});

    l.magnitude = as_tensor(m, "proj.lora_magnitude_vector");
    evaluate(lora::fold(as_tensor(w, {3, 2}, "proj.weight"), l), folded);
    const std::vector<double> dora{3, 4, 0, 2, 50 / std::sqrt(106.0), 90 / std::sqrt(106.0)};
    for (std::size_t i = 0; i < 6; ++i)
    {
        CHECK(folded[i] == Approx(dora[i]).epsilon(1e-6));
    }

    // Two rank-1 adapters: the mean of the products is I / 2, the product of the mean factors is not.
    const std::vector<float> a1{1, 0}, b1{1, 0}, a2{0, 1}, b2{0, 1}, zero(4, 0.0f);
    const auto rank_one = [](const std::vector<float>& av, const std::vector<float>& bv)
    {
        lora::layer x;
        x.target = "p.weight";
        x.a = as_tensor(av, {1, 2}, "a");
        x.b = as_tensor(bv, {2, 1}, "b");
        return x;
    };
    std::vector<float> mean;
    evaluate(task_arithmetic(lora::updates(as_tensor(zero, {2, 2}), {rank_one(a1, b1), rank_one(a2, b2)}), lora::zeros({2, 2}), {0.5, 0.5}), mean);
    CHECK(mean == std::vector<float>{0.5f, 0.0f, 0.0f, 0.5f});
    const std::vector<float> a_mean{0.5f, 0.5f}, b_mean{0.5f, 0.5f};
    std::vector<float> of_means;
    evaluate(lora::update(rank_one(a_mean, b_mean), {2, 2}), of_means);
    CHECK(of_means == std::vector<float>{0.25f, 0.25f, 0.25f, 0.25f});
}
