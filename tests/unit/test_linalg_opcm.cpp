// Continual merging by orthogonal projection: what each step projects away,
// the norm it rescales to, memory that does not grow with the number of
// models, and input checks.
#include <catch2/catch.hpp>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>
#include <vector>

#include "linalg_support.hpp"
#include "registry_support.hpp"

// Counts the bytes allocated through operator new while a probe is active, to
// show that a step of the merger allocates the same, and keeps nothing, however
// many models came before. The size is stored in front of each block.
namespace
{
    std::atomic<bool> g_tracking{false};
    std::atomic<std::size_t> g_live{0};
    std::atomic<std::size_t> g_peak{0};
    constexpr std::size_t g_header = 16;  // keeps the default new alignment

    struct allocation_probe
    {
        std::size_t start = 0;

        void begin()
        {
            start = g_live.load();
            g_peak.store(start);
            g_tracking.store(true);
        }
        // {peak above the start, bytes still held}
        std::pair<std::size_t, std::size_t> end()
        {
            g_tracking.store(false);
            return {g_peak.load() - start, g_live.load() - start};
        }
    };
}

// Not inlined: GCC would otherwise see the header offset inside callers and
// report a bounds error in every inlined container destructor.
[[gnu::noinline]] void* operator new(std::size_t n)
{
    void* p = std::malloc(n + g_header);
    if (p == nullptr)
    {
        throw std::bad_alloc();
    }
    auto* h = static_cast<std::size_t*>(p);
    h[0] = n;
    h[1] = g_tracking.load(std::memory_order_relaxed) ? 1 : 0;
    if (h[1])
    {
        const std::size_t live = g_live.fetch_add(n) + n;
        std::size_t peak = g_peak.load();
        while (live > peak && !g_peak.compare_exchange_weak(peak, live))
        {
        }
    }
    return static_cast<char*>(p) + g_header;
}

[[gnu::noinline]] void operator delete(void* p) noexcept
{
    if (p == nullptr)
    {
        return;
    }
    char* block = static_cast<char*>(p) - g_header;
    const auto* h = reinterpret_cast<const std::size_t*>(block);
    if (h[1])
    {
        g_live.fetch_sub(h[0]);
    }
    std::free(block);
}

void* operator new[](std::size_t n)
{
    return ::operator new(n);
}
void operator delete[](void* p) noexcept
{
    ::operator delete(p);
}
void operator delete(void* p, std::size_t) noexcept
{
    ::operator delete(p);
}
void operator delete[](void* p, std::size_t) noexcept
{
    ::operator delete(p);
}
// The nothrow forms too: left to the runtime (AddressSanitizer's), they would hand
// blocks without the header to the operator delete above.
void* operator new(std::size_t n, const std::nothrow_t&) noexcept
{
    try
    {
        return ::operator new(n);
    }
    catch (...)
    {
        return nullptr;
    }
}
void* operator new[](std::size_t n, const std::nothrow_t& tag) noexcept
{
    return ::operator new(n, tag);
}
void operator delete(void* p, const std::nothrow_t&) noexcept
{
    ::operator delete(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept
{
    ::operator delete(p);
}

using namespace xmerge;

namespace
{
    // A model of three tensors: two matrices and a bias.
    struct model_fixture
    {
        std::vector<shape_type> shapes{{20, 16}, {16}, {8, 12}};
        std::vector<std::vector<float>> base;
        std::vector<std::vector<std::vector<float>>> models;

        explicit model_fixture(std::size_t count)
        {
            for (std::size_t t = 0; t < shapes.size(); ++t)
            {
                base.push_back(xmerge_test::normal_matrix(numel(shapes[t]), 1, static_cast<std::uint32_t>(1 + t)));
            }
            for (std::size_t i = 0; i < count; ++i)
            {
                std::vector<std::vector<float>> m;
                for (std::size_t t = 0; t < shapes.size(); ++t)
                {
                    auto x = xmerge_test::normal_matrix(numel(shapes[t]), 1, static_cast<std::uint32_t>(100 * (i + 1) + t), 0.01f * static_cast<float>(i + 1));
                    for (std::size_t e = 0; e < x.size(); ++e)
                    {
                        x[e] += base[t][e];
                    }
                    m.push_back(std::move(x));
                }
                models.push_back(std::move(m));
            }
        }

        std::vector<const_tensor_ref> base_refs() const
        {
            std::vector<const_tensor_ref> r;
            for (std::size_t t = 0; t < shapes.size(); ++t)
            {
                r.push_back(as_tensor(base[t], shapes[t], "tensor." + std::to_string(t)));
            }
            return r;
        }
        std::vector<const_tensor_ref> model_refs(std::size_t i) const
        {
            std::vector<const_tensor_ref> r;
            for (std::size_t t = 0; t < shapes.size(); ++t)
            {
                r.push_back(as_tensor(models[i][t], shapes[t]));
            }
            return r;
        }
        double task_norm(const std::vector<std::vector<float>>& x) const
        {
            double s = 0.0;
            for (std::size_t t = 0; t < shapes.size(); ++t)
            {
                for (std::size_t e = 0; e < x[t].size(); ++e)
                {
                    const double d = static_cast<double>(x[t][e]) - base[t][e];
                    s += d * d;
                }
            }
            return std::sqrt(s);
        }
    };

    struct merged_model
    {
        std::vector<std::vector<float>> buffers;
        explicit merged_model(const model_fixture& f)
        {
            for (const auto& b : f.base)
            {
                buffers.emplace_back(b.size(), 0.0f);
            }
        }
        std::vector<tensor_ref> refs(const model_fixture& f)
        {
            std::vector<tensor_ref> r;
            for (std::size_t t = 0; t < buffers.size(); ++t)
            {
                r.push_back(as_tensor(buffers[t], f.shapes[t]));
            }
            return r;
        }
    };
}

TEST_CASE("OPCM keeps the merged task vector at the running mean task-vector norm", "[linalg][opcm]")
{
    const model_fixture f(6);
    merged_model merged(f);
    opcm_merger merger(f.base_refs(), merged.refs(f), {0.5});
    double norm_sum = 0.0;
    for (std::size_t i = 0; i < f.models.size(); ++i)
    {
        merger.add(f.model_refs(i));
        norm_sum += f.task_norm(f.models[i]);
        const double mean = norm_sum / static_cast<double>(i + 1);
        CHECK(merger.models() == i + 1);
        CHECK(merger.mean_task_vector_norm() == Approx(mean).epsilon(1e-6));
        CHECK(f.task_norm(merged.buffers) == Approx(mean).epsilon(1e-5));
        if (i == 0)
        {
            CHECK(merger.lambda() == 1.0);
            CHECK(xmerge_test::same_bits(merged.buffers[0], f.models[0][0]));
        }
        else
        {
            CHECK(merger.lambda() > 0.0);
        }
    }
}

TEMPLATE_TEST_CASE("an OPCM step removes the protected block and every paired term", "[linalg][opcm][invariant]", float, double)
{
    using T = TestType;
    const double tol = std::is_same<T, float>::value ? 2e-5 : 1e-12;
    const std::size_t n = 14;  // square: the thin SVD is the full one
    const auto tau = xmerge_test::to_matrix<T>(xmerge_test::normal_matrix(n, n, 7), n, n);
    const auto d0 = xmerge_test::to_matrix<T>(xmerge_test::normal_matrix(n, n, 8), n, n);
    for (double alpha : {0.0, 0.3, 0.6, 1.0})
    {
        dense_matrix<T> d = d0;
        detail::opcm_project(tau, d, alpha, "w");
        const auto f = svd<T>(dense_matrix<T>(tau));
        const std::size_t r = rank_rule::sum_fraction(alpha).select(f.s.data(), n);
        // P = U^T d V before and after
        const auto coords = [&](const dense_matrix<T>& x)
        {
            std::vector<double> u(f.u.begin(), f.u.end()), vt(f.vt.begin(), f.vt.end()), xv(x.begin(), x.end());
            return xmerge_test::matmul(xmerge_test::matmul(xmerge_test::transpose(u, n, n), xv, n, n, n), xmerge_test::transpose(vt, n, n), n, n, n);
        };
        const auto before = coords(d0);
        const auto after = coords(d);
        for (std::size_t i = 0; i < n; ++i)
        {
            for (std::size_t j = 0; j < n; ++j)
            {
                const bool removed = i == j || (i < r && j < r);
                INFO("alpha " << alpha << " r " << r << " entry (" << i << ", " << j << ")");
                REQUIRE(after[i * n + j] == Approx(removed ? 0.0 : before[i * n + j]).margin(tol * 10));
            }
        }
    }
}

TEST_CASE("OPCM by name is the merger run on a one-tensor model", "[linalg][opcm][registry]")
{
    const model_fixture f(4);
    const shape_type shape = f.shapes[0];
    method_inputs in;
    in.tensor = "tensor.0";
    in.base = input(as_tensor(f.base[0], shape, "tensor.0"));
    for (std::size_t i = 0; i < 4; ++i)
    {
        in.models.push_back(input(as_tensor(f.models[i][0], shape)));
    }
    std::vector<float> by_name;
    evaluate(xmerge_test::builtin_registry().build("opcm", in, {{"alpha", 0.7}}), by_name);

    std::vector<float> merged(f.base[0].size());
    opcm_merger merger({as_tensor(f.base[0], shape)}, {as_tensor(merged, shape)}, {0.7});
    for (std::size_t i = 0; i < 4; ++i)
    {
        merger.add({as_tensor(f.models[i][0], shape)});
    }
    CHECK(xmerge_test::same_bits(by_name, merged));
}

TEST_CASE("after a zero merged task vector the next one is added whole", "[linalg][opcm]")
{
    const model_fixture f(2);
    merged_model merged(f);
    opcm_merger merger(f.base_refs(), merged.refs(f));
    merger.add(f.base_refs());  // a model equal to the base: nothing to protect
    merger.add(f.model_refs(1));
    // mean norm = ||d_1|| / 2, so merged = base + d_1 / 2
    for (std::size_t t = 0; t < f.shapes.size(); ++t)
    {
        for (std::size_t e = 0; e < f.base[t].size(); ++e)
        {
            REQUIRE(merged.buffers[t][e] == Approx(f.base[t][e] + 0.5 * (static_cast<double>(f.models[1][t][e]) - f.base[t][e])).margin(1e-6));
        }
    }
}

TEST_CASE("OPCM memory does not grow with the number of models", "[linalg][opcm][memory]")
{
    const std::size_t count = 12;
    const model_fixture f(count);
    merged_model merged(f);
    opcm_merger merger(f.base_refs(), merged.refs(f), {0.5});
    std::vector<std::vector<const_tensor_ref>> refs;
    for (std::size_t i = 0; i < count; ++i)
    {
        refs.push_back(f.model_refs(i));
    }
    std::vector<std::pair<std::size_t, std::size_t>> usage;
    allocation_probe probe;
    for (std::size_t i = 0; i < count; ++i)
    {
        probe.begin();
        merger.add(refs[i]);
        usage.push_back(probe.end());
    }
    for (std::size_t i = 0; i < count; ++i)
    {
        INFO("model " << i << ": peak " << usage[i].first << " bytes, held " << usage[i].second);
        CHECK(usage[i].second == 0);  // nothing kept between models
        if (i >= 2)
        {
            CHECK(usage[i].first == usage[1].first);  // every projection step needs the same
        }
    }
    CHECK(usage[1].first > 0);  // the probe does see the step's scratch memory
}

TEST_CASE("OPCM checks its buffers and each model before touching the merge", "[linalg][opcm][errors]")
{
    const model_fixture f(2);
    merged_model merged(f);
    CHECK_THROWS_WITH(opcm_merger(f.base_refs(), merged.refs(f), {1.5}), Catch::Contains("alpha"));
    auto few = merged.refs(f);
    few.pop_back();
    CHECK_THROWS_WITH(opcm_merger(f.base_refs(), few), Catch::Contains("expected 3"));
    std::vector<bfloat16> half(f.base[0].size());
    auto wrong_type = merged.refs(f);
    wrong_type[0] = as_tensor(half, f.shapes[0]);
    CHECK_THROWS_WITH(opcm_merger(f.base_refs(), wrong_type), Catch::Contains("float32") && Catch::Contains("tensor.0"));

    opcm_merger merger(f.base_refs(), merged.refs(f));
    merger.add(f.model_refs(0));
    const auto before = merged.buffers;

    auto broken = f.models[1];
    broken[2][3] = INFINITY;
    std::vector<const_tensor_ref> bad;
    for (std::size_t t = 0; t < 3; ++t)
    {
        bad.push_back(as_tensor(broken[t], f.shapes[t]));
    }
    CHECK_THROWS_WITH(merger.add(bad), Catch::Contains("tensor.2") && Catch::Contains("not finite"));
    auto short_model = f.model_refs(1);
    short_model.pop_back();
    CHECK_THROWS_WITH(merger.add(short_model), Catch::Contains("expected 3"));
    auto reshaped = f.model_refs(1);
    reshaped[0] = reshaped[0].reshaped({16, 20});
    CHECK_THROWS_AS(merger.add(reshaped), shape_error);
    CHECK(merger.models() == 1);
    for (std::size_t t = 0; t < 3; ++t)
    {
        CHECK(xmerge_test::same_bits(merged.buffers[t], before[t]));
    }

    const std::vector<float> tiny(4);
    const std::vector<std::vector<float>> tiny_models{tiny};
    CHECK_THROWS_AS(opcm(inputs(tiny_models), input(f.base[0], "b")), shape_error);
}
