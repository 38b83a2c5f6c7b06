// WUDI's closed form against its defining property (zero gradient, a loss
// no larger than the reference's Adam loop reaches), its rule for a
// singular G, and TSV-C's kept rank against Eckart-Young.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "linalg_support.hpp"
#include "registry_support.hpp"

using namespace xmerge;

namespace
{
    struct wudi_problem
    {
        std::size_t m, n, k;
        std::vector<float> base;
        std::vector<std::vector<float>> models;

        wudi_problem(std::size_t m_, std::size_t n_, std::size_t k_, std::uint32_t seed) : m(m_), n(n_), k(k_)
        {
            base = xmerge_test::normal_matrix(m, n, seed);
            for (std::size_t i = 0; i < k; ++i)
            {
                auto x = xmerge_test::normal_matrix(m, n, seed + 1 + static_cast<std::uint32_t>(i), 0.05f);
                for (std::size_t j = 0; j < x.size(); ++j)
                {
                    x[j] += base[j];
                }
                models.push_back(std::move(x));
            }
        }

        method_inputs inputs() const
        {
            method_inputs in;
            in.tensor = "w";
            in.base = input(as_tensor(base, {m, n}, "w"));
            for (std::size_t i = 0; i < k; ++i)
            {
                in.models.push_back(input(as_tensor(models[i], {m, n}, "m" + std::to_string(i))));
            }
            return in;
        }

        std::vector<std::vector<double>> deltas() const
        {
            std::vector<std::vector<double>> out;
            for (const auto& x : models)
            {
                std::vector<double> d(x.size());
                for (std::size_t j = 0; j < x.size(); ++j)
                {
                    d[j] = static_cast<double>(x[j] - base[j]);
                }
                out.push_back(std::move(d));
            }
            return out;
        }

        // tau = result - base, in double
        std::vector<double> task_vector_of(const std::vector<float>& result) const
        {
            std::vector<double> tau(result.size());
            for (std::size_t j = 0; j < result.size(); ++j)
            {
                tau[j] = static_cast<double>(result[j]) - static_cast<double>(base[j]);
            }
            return tau;
        }

        // G and R of the loss, in double, written out independently of the library
        void system(std::vector<double>& g, std::vector<double>& r) const
        {
            g.assign(n * n, 0.0);
            r.assign(m * n, 0.0);
            for (const auto& d : deltas())
            {
                double norm2 = 0.0;
                for (double v : d)
                {
                    norm2 += v * v;
                }
                const auto dt = xmerge_test::transpose(d, m, n);
                auto gi = xmerge_test::matmul(dt, d, n, m, n);
                for (double& v : gi)
                {
                    v /= norm2;
                }
                const auto ri = xmerge_test::matmul(d, gi, m, n, n);
                for (std::size_t j = 0; j < g.size(); ++j)
                {
                    g[j] += gi[j];
                }
                for (std::size_t j = 0; j < r.size(); ++j)
                {
                    r[j] += ri[j];
                }
            }
        }

        double loss(const std::vector<double>& tau) const
        {
            double total = 0.0;
            for (const auto& d : deltas())
            {
                double norm2 = 0.0;
                for (double v : d)
                {
                    norm2 += v * v;
                }
                std::vector<double> diff(tau.size());
                for (std::size_t j = 0; j < tau.size(); ++j)
                {
                    diff[j] = tau[j] - d[j];
                }
                for (double p : xmerge_test::matmul(diff, xmerge_test::transpose(d, m, n), m, n, m))
                {
                    total += p * p / norm2;
                }
            }
            return total;
        }

        // || tau G - R || / || R ||
        double relative_gradient(const std::vector<double>& tau) const
        {
            std::vector<double> g, r;
            system(g, r);
            const auto tg = xmerge_test::matmul(tau, g, m, n, n);
            double num = 0.0, den = 0.0;
            for (std::size_t j = 0; j < r.size(); ++j)
            {
                num += (tg[j] - r[j]) * (tg[j] - r[j]);
                den += r[j] * r[j];
            }
            return std::sqrt(num / den);
        }
    };

    std::vector<float> run(const any_expression& e, std::size_t threads = 1)
    {
        eval_options o;
        o.threads = threads;
        std::vector<float> out;
        evaluate(e, out, o);
        return out;
    }
}

TEST_CASE("WUDI's closed form zeroes the gradient and beats the reference's Adam loop", "[linalg][wudi][invariant]")
{
    const auto& registry = xmerge_test::builtin_registry();
    for (auto [m, n, k] : {std::array<std::size_t, 3>{31, 17, 3}, std::array<std::size_t, 3>{24, 40, 4}})
    {
        CAPTURE(m, n, k);
        const wudi_problem p(m, n, k, 7);
        const auto in = p.inputs();
        const auto closed = run(registry.build("wudi", in, {{"solver", std::string("closed_form")}, {"precision", std::string("float64")}}), 1);
        const auto closed32 = run(registry.build("wudi", in, {{"solver", std::string("closed_form")}}), 2);
        const auto adam = run(registry.build("wudi", in, {{"iter_num", 400.0}}), 2);
        const auto start = run(registry.build("wudi", in, {{"iter_num", 0.0}}), 1);

        const auto tau = p.task_vector_of(closed);
        REQUIRE(p.relative_gradient(tau) < 1e-5);
        REQUIRE(p.relative_gradient(p.task_vector_of(closed32)) < 1e-3);
        const double l_closed = p.loss(tau), l_adam = p.loss(p.task_vector_of(adam)), l_start = p.loss(p.task_vector_of(start));
        REQUIRE(l_closed < l_adam);
        REQUIRE(l_adam < l_start);

        // zero steps leave the reference's starting point: the sum of the task vectors
        const auto d = p.deltas();
        for (std::size_t j = 0; j < m * n; ++j)
        {
            double sum = 0.0;
            for (const auto& di : d)
            {
                sum += di[j];
            }
            REQUIRE(start[j] == Approx(p.base[j] + sum).epsilon(1e-5).margin(1e-6));
        }
    }
}

TEST_CASE("WUDI's closed form takes the minimum-norm minimizer when G is singular", "[linalg][wudi][invariant]")
{
    // rank G <= k m = 4 < n = 12
    const wudi_problem p(2, 12, 2, 17);
    const auto& registry = xmerge_test::builtin_registry();
    const auto result = run(registry.build("wudi", p.inputs(), {{"solver", std::string("closed_form")}, {"precision", std::string("float64")}}));
    const auto tau = p.task_vector_of(result);
    REQUIRE(p.relative_gradient(tau) < 1e-6);
    // minimum norm: tau lies in the row space of the task vectors, i.e. tau = C [rows of the d_i]
    // for some C; check that the residual of its least-squares projection vanishes.
    std::vector<double> basis;  // 4 rows of length 12
    for (const auto& d : p.deltas())
    {
        basis.insert(basis.end(), d.begin(), d.end());
    }
    const std::size_t rows = 4, n = 12;
    // Gram-Schmidt in double
    for (std::size_t a = 0; a < rows; ++a)
    {
        for (std::size_t b = 0; b < a; ++b)
        {
            double dot = 0.0;
            for (std::size_t j = 0; j < n; ++j)
            {
                dot += basis[a * n + j] * basis[b * n + j];
            }
            for (std::size_t j = 0; j < n; ++j)
            {
                basis[a * n + j] -= dot * basis[b * n + j];
            }
        }
        double norm = 0.0;
        for (std::size_t j = 0; j < n; ++j)
        {
            norm += basis[a * n + j] * basis[a * n + j];
        }
        for (std::size_t j = 0; j < n; ++j)
        {
            basis[a * n + j] /= std::sqrt(norm);
        }
    }
    double residual = 0.0, total = 0.0;
    for (std::size_t r = 0; r < 2; ++r)
    {
        std::vector<double> row(tau.begin() + static_cast<std::ptrdiff_t>(r * n), tau.begin() + static_cast<std::ptrdiff_t>((r + 1) * n));
        for (double v : row)
        {
            total += v * v;
        }
        for (std::size_t a = 0; a < rows; ++a)
        {
            double dot = 0.0;
            for (std::size_t j = 0; j < n; ++j)
            {
                dot += row[j] * basis[a * n + j];
            }
            for (std::size_t j = 0; j < n; ++j)
            {
                row[j] -= dot * basis[a * n + j];
            }
        }
        for (double v : row)
        {
            residual += v * v;
        }
    }
    // float32 inputs stored in the output: the residual is rounding, far below the size of tau
    REQUIRE(std::sqrt(residual / total) < 1e-5);
}

TEST_CASE("WUDI reads bfloat16 inputs like their float32 values, for 1 and 2 threads", "[linalg][wudi][dtype]")
{
    const wudi_problem p(9, 13, 3, 27);
    std::vector<xmerge_test::buffer> b16;
    std::vector<std::vector<float>> rounded;
    const xmerge_test::buffer base16(dtype::bfloat16, p.base, "w");
    for (std::size_t i = 0; i < p.k; ++i)
    {
        b16.emplace_back(dtype::bfloat16, p.models[i], "m" + std::to_string(i));
        rounded.push_back(b16.back().values());
    }
    const auto base_rounded = base16.values();
    method_inputs a, b;
    a.tensor = b.tensor = "w";
    a.base = input(const_tensor_ref(base16.bytes().data(), dtype::bfloat16, {9, 13}, "w"));
    b.base = input(as_tensor(base_rounded, {9, 13}, "w"));
    for (std::size_t i = 0; i < p.k; ++i)
    {
        a.models.push_back(input(const_tensor_ref(b16[i].bytes().data(), dtype::bfloat16, {9, 13}, "m" + std::to_string(i))));
        b.models.push_back(input(as_tensor(rounded[i], {9, 13}, "m" + std::to_string(i))));
    }
    const auto& registry = xmerge_test::builtin_registry();
    for (const std::string solver : {"adam", "closed_form"})
    {
        CAPTURE(solver);
        const auto x = run(registry.build("wudi", a, {{"solver", solver}, {"iter_num", 50.0}}), 1);
        REQUIRE(xmerge_test::same_bits(x, run(registry.build("wudi", a, {{"solver", solver}, {"iter_num", 50.0}}), 2)));
        REQUIRE(xmerge_test::same_bits(x, run(registry.build("wudi", b, {{"solver", solver}, {"iter_num", 50.0}}), 1)));
    }
}

TEST_CASE("TSV-C keeps floor(min(m, n) * sv_reduction) triplets: the best approximation of that rank", "[linalg][tsv_c]")
{
    const wudi_problem p(20, 14, 3, 37);
    const auto in = p.inputs();
    const auto& registry = xmerge_test::builtin_registry();
    for (double f : {0.25, 0.5, 1.0})
    {
        const std::size_t rank = static_cast<std::size_t>(14 * f);
        CAPTURE(f, rank);
        const auto outputs = registry.build_outputs("tsv_c", in, {{"sv_reduction", f}, {"precision", std::string("float64")}});
        REQUIRE(outputs.size() == p.k);
        const auto d = p.deltas();
        for (std::size_t t = 0; t < p.k; ++t)
        {
            const auto approx = p.task_vector_of(run(outputs[t].value, 2));
            // singular values of the task vector and of its approximation
            dense_matrix<double> full = detail::uninitialized_matrix<double>(20, 14), kept = detail::uninitialized_matrix<double>(20, 14);
            std::copy(d[t].begin(), d[t].end(), full.data());
            std::copy(approx.begin(), approx.end(), kept.data());
            const auto sf = svd<double>(full).s;
            const auto sk = svd<double>(kept).s;
            double discarded = 0.0, error = 0.0;
            for (std::size_t j = 0; j < 14; ++j)
            {
                if (j < rank)
                {
                    REQUIRE(sk(j) == Approx(sf(j)).epsilon(1e-5));
                }
                else
                {
                    REQUIRE(sk(j) < 1e-5 * sf(0));
                    discarded += sf(j) * sf(j);
                }
            }
            for (std::size_t j = 0; j < d[t].size(); ++j)
            {
                error += (d[t][j] - approx[j]) * (d[t][j] - approx[j]);
            }
            REQUIRE(std::sqrt(error) == Approx(std::sqrt(discarded)).epsilon(1e-4).margin(1e-6));
        }
    }
    // unset: 1 / K of the rank; other ranks: the model itself
    REQUIRE(tsv_c_rank(20, 14, 3, {}) == 4);
    const std::vector<float> bias_base{1.0f, 2.0f, 3.0f}, bias_model{1.5f, 2.25f, -3.0f};
    expression_list<input_node> bias_models;
    bias_models.push_back(input(as_tensor(bias_model, {3}, "b1")));
    const auto bias = run(tsv_c_model(bias_models, input(as_tensor(bias_base, {3}, "b")), 0));
    REQUIRE(xmerge_test::same_bits(bias, bias_model));
    REQUIRE_THROWS_AS(registry.build_outputs("tsv_c", in, {{"sv_reduction", 1.5}}), parameter_error);
}
