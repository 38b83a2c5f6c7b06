// xmerge inspect: what models (fine-tunes, or a merge and its inputs) did to a
// base, per layer or per tensor, as tables, JSON or a PNG heatmap.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include <xmerge/model/inspect.hpp>
#include <xmerge/model/model.hpp>

#include "commands.hpp"
#include "png.hpp"

namespace xmerge_cli
{
    namespace
    {
        std::string pair_label(const xmerge::model_inspection& r, std::size_t p)
        {
            return std::to_string(r.pairs[p].first + 1) + "-" + std::to_string(r.pairs[p].second + 1);
        }

        void print_row(const std::string& label, const xmerge::delta_sums& s, std::size_t models, std::size_t label_width, const std::vector<double>* ranks = nullptr)
        {
            std::printf("%-*s", static_cast<int>(label_width), label.c_str());
            for (std::size_t k = 0; k < models; ++k)
            {
                std::printf(" %9.4f", s.norm_ratio(k));
            }
            std::printf("  ");
            for (std::size_t p = 0; p < s.dots.size(); ++p)
            {
                std::printf(" %6.3f", s.cosine(p));
            }
            std::printf(s.dots.empty() ? "" : "  ");
            for (std::size_t p = 0; p < s.dots.size(); ++p)
            {
                std::printf(" %6.3f", s.sign_conflict(p));
            }
            std::printf(s.dots.empty() ? "" : "  ");
            if (ranks != nullptr)
            {
                for (double r : *ranks)
                {
                    std::printf(" %6.1f", r);
                }
            }
            std::printf("\n");
        }

        void print_tables(const xmerge::model_inspection& r, bool per_tensor)
        {
            std::printf("task vectors d = model - base, base %s\n", r.base.c_str());
            for (std::size_t k = 0; k < r.models.size(); ++k)
            {
                std::printf("  [%zu] %s\n", k + 1, r.models[k].c_str());
            }
            std::size_t width = 8;
            for (const auto& l : r.layers)
            {
                width = std::max(width, l.label.size() + 2);
            }
            if (per_tensor)
            {
                for (const auto& t : r.tensors)
                {
                    width = std::max(width, t.name.size() + 2);
                }
            }
            const std::size_t k = r.models.size(), pairs = r.pairs.size();
            const bool ranks = per_tensor && std::any_of(r.tensors.begin(), r.tensors.end(), [](const auto& t) { return !t.effective_rank.empty(); });
            // Group titles over their columns: 10 characters per norm, 7 per pair or rank, 2 between groups.
            auto title = [](const char* text, std::size_t columns) { std::printf(" %-*s", static_cast<int>(columns - 1), text); };
            std::printf("\n%-*s", static_cast<int>(width), "");
            title("|d|/|base|", 10 * k + 2);
            if (pairs > 0)
            {
                title("cosine", 7 * pairs + 2);
                title("sign conflict", 7 * pairs + 2);
            }
            std::printf("%s\n", ranks ? "effective rank" : "");
            std::printf("%-*s", static_cast<int>(width), per_tensor ? "tensor" : "layer");
            for (std::size_t i = 0; i < k; ++i)
            {
                std::printf(" %9s", ("[" + std::to_string(i + 1) + "]").c_str());
            }
            std::printf("  ");
            for (int twice = 0; twice < 2 && pairs > 0; ++twice)
            {
                for (std::size_t p = 0; p < pairs; ++p)
                {
                    std::printf(" %6s", pair_label(r, p).c_str());
                }
                std::printf("  ");
            }
            for (std::size_t i = 0; ranks && i < k; ++i)
            {
                std::printf(" %6s", ("[" + std::to_string(i + 1) + "]").c_str());
            }
            std::printf("\n");
            if (per_tensor)
            {
                for (const auto& t : r.tensors)
                {
                    print_row(t.name, t.sums, k, width, t.effective_rank.empty() ? nullptr : &t.effective_rank);
                }
            }
            else
            {
                for (const auto& l : r.layers)
                {
                    print_row(l.label, l.sums, k, width);
                }
            }
            print_row("all", r.total, k, width);
            std::printf("\n|d|/|base|: task-vector norm relative to the base; cosine: of two task vectors;\n"
                        "sign conflict: share of entries, among those both change, that the two change in opposite directions.\n");
            if (!r.skipped.empty())
            {
                std::printf("%zu tensors left out (first: %s)\n", r.skipped.size(), r.skipped.front().c_str());
            }
        }

        nlohmann::json sums_json(const xmerge::delta_sums& s)
        {
            nlohmann::json j;
            j["elements"] = s.elements;
            j["base_norm"] = std::sqrt(s.base_squares);
            std::vector<double> norms, ratios, cosines, conflicts;
            for (std::size_t k = 0; k < s.squares.size(); ++k)
            {
                norms.push_back(s.norm(k));
                ratios.push_back(s.norm_ratio(k));
            }
            for (std::size_t p = 0; p < s.dots.size(); ++p)
            {
                cosines.push_back(s.cosine(p));
                conflicts.push_back(s.sign_conflict(p));
            }
            j["delta_norm"] = norms;
            j["norm_ratio"] = ratios;
            j["cosine"] = cosines;
            j["sign_conflict"] = conflicts;
            return j;
        }

        void print_json(const xmerge::model_inspection& r)
        {
            nlohmann::json j;
            j["base"] = r.base;
            j["models"] = r.models;
            j["pairs"] = nlohmann::json::array();
            for (const auto& [a, b] : r.pairs)
            {
                j["pairs"].push_back({a, b});
            }
            j["tensors"] = nlohmann::json::array();
            for (const auto& t : r.tensors)
            {
                nlohmann::json e = sums_json(t.sums);
                e["name"] = t.name;
                e["shape"] = t.shape;
                if (t.layer)
                {
                    e["stack"] = t.stack;
                    e["layer"] = *t.layer;
                }
                if (!t.effective_rank.empty())
                {
                    e["singular_values"] = t.singular_values;
                    e["effective_rank"] = t.effective_rank;
                }
                j["tensors"].push_back(std::move(e));
            }
            j["layers"] = nlohmann::json::array();
            for (const auto& l : r.layers)
            {
                nlohmann::json e = sums_json(l.sums);
                e["label"] = l.label;
                j["layers"].push_back(std::move(e));
            }
            j["total"] = sums_json(r.total);
            j["skipped"] = r.skipped;
            std::cout << j.dump(1) << "\n";
        }

        // Diverging blue - white - red for cosine in [-1, 1]; white to dark orange for conflicts in [0, 0.5].
        rgb cosine_color(double v)
        {
            v = std::max(-1.0, std::min(1.0, v));
            const double a = std::fabs(v);
            const auto mix = [&](double from, double to) { return static_cast<std::uint8_t>(std::lround(from + (to - from) * a)); };
            return v >= 0 ? rgb{mix(255, 178), mix(255, 24), mix(255, 43)} : rgb{mix(255, 33), mix(255, 102), mix(255, 172)};
        }

        rgb conflict_color(double v)
        {
            const double a = std::max(0.0, std::min(1.0, v / 0.5));
            const auto mix = [&](double from, double to) { return static_cast<std::uint8_t>(std::lround(from + (to - from) * a)); };
            return rgb{mix(255, 140), mix(255, 45), mix(255, 4)};
        }

        std::string two_digits(double v)
        {
            char buf[16];
            std::snprintf(buf, sizeof buf, "%.2f", v);
            std::string s = buf;
            if (s.rfind("0.", 0) == 0)
            {
                s.erase(0, 1);
            }
            else if (s.rfind("-0.", 0) == 0)
            {
                s.erase(1, 1);
            }
            return s;
        }

        void plot(const xmerge::model_inspection& r, const std::string& path)
        {
            const std::size_t cell_w = 32, cell_h = 12, pad = 10;
            std::size_t label_w = 0;
            for (const auto& l : r.layers)
            {
                label_w = std::max(label_w, canvas::text_width(l.label));
            }
            const std::size_t pairs = std::max<std::size_t>(1, r.pairs.size());
            const std::size_t panel_w = pairs * cell_w;
            const std::size_t top = pad + 12 + 12 + 12;
            std::size_t legend_w = 0;
            for (std::size_t k = 0; k < r.models.size(); ++k)
            {
                legend_w = std::max(legend_w, canvas::text_width("[" + std::to_string(k + 1) + "] " + r.models[k]));
            }
            const std::string title = "TASK VECTORS AGAINST " + r.base;
            const std::string scale = "COSINE: -1 BLUE, 0 WHITE, +1 RED.  SIGN CONFLICT: 0 WHITE, 0.5 DARK.";
            const std::size_t width = std::max({pad + label_w + 8 + 2 * panel_w + 3 * pad, pad * 2 + legend_w, pad * 2 + canvas::text_width(title),
                                                pad * 2 + canvas::text_width(scale)});
            const std::size_t height = top + r.layers.size() * cell_h + pad + 10 * (r.models.size() + 3) + pad;
            canvas c(width, height);
            c.text(pad, pad, title);
            const std::size_t x0 = pad + label_w + 8;
            const std::size_t x1 = x0 + panel_w + 2 * pad;
            c.text(x0, pad + 12, "COSINE");
            c.text(x1, pad + 12, "SIGN CONFLICT");
            for (std::size_t p = 0; p < r.pairs.size(); ++p)
            {
                const std::string l = pair_label(r, p);
                c.text(x0 + p * cell_w + (cell_w - canvas::text_width(l)) / 2, pad + 24, l);
                c.text(x1 + p * cell_w + (cell_w - canvas::text_width(l)) / 2, pad + 24, l);
            }
            for (std::size_t i = 0; i < r.layers.size(); ++i)
            {
                const auto& l = r.layers[i];
                const std::size_t y = top + i * cell_h;
                c.text(pad + label_w - canvas::text_width(l.label), y + 2, l.label);
                for (std::size_t p = 0; p < r.pairs.size(); ++p)
                {
                    const double cos = l.sums.cosine(p), conflict = l.sums.sign_conflict(p);
                    c.fill(x0 + p * cell_w, y, cell_w - 1, cell_h - 1, cosine_color(cos));
                    c.fill(x1 + p * cell_w, y, cell_w - 1, cell_h - 1, conflict_color(conflict));
                    const rgb ink_cos = std::fabs(cos) > 0.6 ? rgb{255, 255, 255} : rgb{0, 0, 0};
                    const rgb ink_conflict = conflict > 0.3 ? rgb{255, 255, 255} : rgb{0, 0, 0};
                    const std::string a = two_digits(cos), b = two_digits(conflict);
                    c.text(x0 + p * cell_w + (cell_w - canvas::text_width(a)) / 2, y + 2, a, ink_cos);
                    c.text(x1 + p * cell_w + (cell_w - canvas::text_width(b)) / 2, y + 2, b, ink_conflict);
                }
            }
            std::size_t y = top + r.layers.size() * cell_h + pad;
            c.text(pad, y, scale);
            y += 10;
            for (std::size_t k = 0; k < r.models.size(); ++k)
            {
                c.text(pad, y += 10, "[" + std::to_string(k + 1) + "] " + r.models[k]);
            }
            c.write_png(path, 2);
        }
    }

    int inspect(const inspect_args& a)
    {
        const xmerge::model base = xmerge::model::open(a.base);
        std::vector<std::unique_ptr<xmerge::model>> owned;
        std::vector<const xmerge::model*> models;
        for (const auto& path : a.models)
        {
            owned.push_back(std::make_unique<xmerge::model>(xmerge::model::open(path)));
            models.push_back(owned.back().get());
        }
        xmerge::inspect_options o;
        o.singular_values = a.singular_values;
        o.threads = a.threads;
        const bool bar = !a.json && ::isatty(STDERR_FILENO);
        o.progress = [bar](std::size_t done, std::size_t total)
        {
            if (bar)
            {
                std::fprintf(stderr, "\rinspecting %zu/%zu tensors", done, total);
            }
        };
        const xmerge::model_inspection r = xmerge::inspect_models(base, models, o);
        if (bar)
        {
            std::fprintf(stderr, "\r\033[K");
        }
        if (a.json)
        {
            print_json(r);
        }
        else
        {
            print_tables(r, a.per_tensor);
        }
        if (!a.plot.empty())
        {
            plot(r, a.plot);
            if (!a.json)
            {
                std::printf("heatmap written to %s\n", a.plot.c_str());
            }
        }
        return 0;
    }
}
