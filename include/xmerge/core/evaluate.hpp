/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_CORE_EVALUATE_HPP
#define XMERGE_CORE_EVALUATE_HPP

#include <cstddef>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../config.hpp"
#include "../simd/convert.hpp"
#include "arena.hpp"
#include "bound.hpp"
#include "error.hpp"
#include "expression.hpp"
#include "parallel.hpp"
#include "sharing.hpp"
#include "statistic.hpp"
#include "tensor_ref.hpp"

namespace xmerge
{
    /// How an evaluation is run. Results do not depend on threads or executor.
    struct eval_options
    {
        /// Threads to use; 1 runs on the calling thread only, 0 uses every
        /// hardware thread (or the executor's concurrency).
        std::size_t threads = 1;
        /// Runs the parallel work when set; otherwise threads are started per call.
        executor* exec = nullptr;
        /// Elements per step of the fused pass; a positive multiple of 64.
        /// Sums are combined per chunk, so this may change the last bits of
        /// a statistic (never the thread count).
        std::size_t chunk_size = XMERGE_DEFAULT_CHUNK_SIZE;
        /// Chunks per parallel task.
        std::size_t chunks_per_task = XMERGE_DEFAULT_CHUNKS_PER_TASK;
    };

    /**
     * Evaluates a tensor expression into `out`: statistics first, then one
     * fused element-wise pass, rounding to out's dtype.
     *
     * `out` must have the expression's shape. It may be one of the
     * expression's inputs (same address, dtype and size: an in-place update);
     * any other overlap with an input throws layout_error.
     */
    template <class E>
    void evaluate(const tensor_expression<E>& expr, const tensor_ref& out, const eval_options& options = {});

    /// Evaluates into a std::vector (resized to the element count) or an
    /// xtensor container (resized to the expression's shape).
    template <class E, class Out, class = std::enable_if_t<!std::is_convertible<Out&, const tensor_ref&>::value>>
    void evaluate(const tensor_expression<E>& expr, Out& out, const eval_options& options = {});

    /// Evaluates into a new float32 xt::xarray.
    template <class E>
    xt::xarray<float> materialize(const tensor_expression<E>& expr, const eval_options& options = {});

    /// Computes a scalar expression (running the statistics it needs).
    template <class S>
    double value_of(const scalar_expression<S>& expr, const eval_options& options = {});

    /**
     * Evaluates exprs[i] into outs[i] for every i as one parallel job, so that
     * many small tensors (all parameters of a model in an optimizer step)
     * share one hand-out of work. Same rules per pair as evaluate().
     */
    template <class E>
    void evaluate_all(const std::vector<E>& exprs, const std::vector<tensor_ref>& outs, const eval_options& options = {});

    namespace detail
    {
        /// One output tensor of an evaluation, with its evaluator erased.
        class job
        {
        public:
            virtual ~job() = default;
            virtual std::size_t size() const noexcept = 0;
            virtual void run_chunk(std::size_t begin, std::size_t n, arena& a) const = 0;
            statistics_registry& registry() noexcept { return m_registry; }

        protected:
            statistics_registry m_registry;
        };

        template <class E>
        class typed_job final : public job
        {
        public:
            typed_job(const E& expr, tensor_ref out);
            std::size_t size() const noexcept override { return m_out.size(); }
            void run_chunk(std::size_t begin, std::size_t n, arena& a) const override;

        private:
            evaluator<E> m_eval;
            tensor_ref m_out;
        };

        inline void check_options(const eval_options& options);

        /// Checks shape and aliasing of out against the inputs of expr.
        template <class E>
        void check_output(const E& expr, const tensor_ref& out);

        template <class E>
        evaluator<E> make_evaluator(const E& expr);

        /// Runs every level of every registry's statistics.
        inline void run_statistics(const std::vector<statistics_registry*>& registries, const eval_options& options);

        /// Runs the element-wise pass of every job.
        inline void run_elementwise(const std::vector<job*>& jobs, const eval_options& options);
    }

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        inline void check_options(const eval_options& options)
        {
            if (options.chunk_size == 0 || options.chunk_size % 64 != 0)
            {
                throw parameter_error("", "chunk_size", "must be a positive multiple of 64, got " + std::to_string(options.chunk_size));
            }
            if (options.chunks_per_task == 0)
            {
                throw parameter_error("", "chunks_per_task", "must be positive");
            }
        }

        template <class E>
        void check_output(const E& expr, const tensor_ref& out)
        {
            if (expr.shape() != out.shape())
            {
                throw shape_error(out.name().empty() ? expr.name() : out.name(), "out",
                                  "output has shape " + xmerge::to_string(out.shape()) + " but the expression has shape " + xmerge::to_string(expr.shape()));
            }
            expr.for_each_input([&](const const_tensor_ref& in)
            {
                if (!xmerge::overlaps(in, out))
                {
                    return;
                }
                if (xmerge::same_memory(in, out) && in.type() == out.type() && in.size() == out.size())
                {
                    return;  // in place
                }
                throw layout_error(out.name().empty() ? in.name() : out.name(), "out",
                                   "output memory partly overlaps input '" + in.name() + "'; only an exact in-place update is allowed");
            });
        }

        // Builds an evaluator with its shared sub-expressions evaluated once.
        template <class E>
        evaluator<E> make_evaluator(const E& expr)
        {
            sharing_scope scope;
            return evaluator<E>(expr);
        }

        template <class E>
        inline typed_job<E>::typed_job(const E& expr, tensor_ref out)
            : m_eval(make_evaluator(expr))
            , m_out(std::move(out))
        {
            // Writing in place is safe: a packet reads only its own elements,
            // and anything computed over a whole chunk is computed at bind time.
            m_eval.collect(m_registry);
        }

        // The chunk stored as `type`: the evaluator's own way when it has one (type erasure skips its buffer).
        template <class Eval>
        auto store_chunk(const Eval& ev, dtype type, std::size_t begin, std::size_t n, void* out, arena& a, int) -> decltype(ev.store_chunk(type, begin, n, out, a))
        {
            return ev.store_chunk(type, begin, n, out, a);
        }

        template <class Eval>
        void store_chunk(const Eval& ev, dtype type, std::size_t begin, std::size_t n, void* out, arena& a, long)
        {
            detail::store_packets_as(type, n, out, ev.bind(begin, n, a));
        }

        template <class E>
        inline void typed_job<E>::run_chunk(std::size_t begin, std::size_t n, arena& a) const
        {
            arena::frame frame(a);
            std::uint8_t* out = static_cast<std::uint8_t*>(m_out.data()) + begin * xmerge::size_of(m_out.type());
            detail::store_chunk(m_eval, m_out.type(), begin, n, out, a, 0);
        }

        // A flat list of tasks over several tensors of possibly different sizes.
        struct task_map
        {
            std::vector<std::size_t> first_task;  // prefix sums of tasks per group

            template <class SizeOf>
            task_map(std::size_t groups, const pass_layout& unit, SizeOf&& size_of_group)
            {
                first_task.reserve(groups + 1);
                first_task.push_back(0);
                for (std::size_t g = 0; g < groups; ++g)
                {
                    pass_layout l = unit;
                    l.size = size_of_group(g);
                    first_task.push_back(first_task.back() + l.tasks());
                }
            }

            std::size_t total() const noexcept { return first_task.back(); }

            std::pair<std::size_t, std::size_t> locate(std::size_t flat) const noexcept
            {
                const auto it = std::upper_bound(first_task.begin(), first_task.end(), flat);
                const std::size_t g = static_cast<std::size_t>(it - first_task.begin()) - 1;
                return {g, flat - first_task[g]};
            }
        };

        inline void run_statistics(const std::vector<statistics_registry*>& registries, const eval_options& options)
        {
            std::size_t levels = 0;
            for (auto* r : registries)
            {
                levels = std::max(levels, r->levels());
            }
            const pass_layout unit{0, options.chunk_size, options.chunks_per_task, options.threads, options.exec};
            for (std::size_t level = 1; level <= levels; ++level)
            {
                std::vector<statistic*> pending;
                for (auto* r : registries)
                {
                    if (r->levels() >= level)
                    {
                        pending.insert(pending.end(), r->level(level).begin(), r->level(level).end());
                    }
                }
                for (;;)
                {
                    // Statistics over tensors of one size share a pass over their chunks.
                    std::vector<std::size_t> sizes;
                    std::vector<std::vector<statistic*>> groups;
                    for (statistic* s : pending)
                    {
                        pass_layout l = unit;
                        l.size = s->size();
                        if (!s->begin_pass(l))
                        {
                            continue;
                        }
                        const auto it = std::find(sizes.begin(), sizes.end(), l.size);
                        if (it == sizes.end())
                        {
                            sizes.push_back(l.size);
                            groups.push_back({s});
                        }
                        else
                        {
                            groups[static_cast<std::size_t>(it - sizes.begin())].push_back(s);
                        }
                    }
                    if (groups.empty())
                    {
                        break;
                    }
                    const task_map tasks(groups.size(), unit, [&](std::size_t g) { return sizes[g]; });
                    run_tasks(tasks.total(), options.threads, options.exec,
                              [&] { return arena(options.chunk_size); },
                              [&](arena& a, std::size_t flat)
                              {
                                  const auto [g, t] = tasks.locate(flat);
                                  pass_layout l = unit;
                                  l.size = sizes[g];
                                  for (std::size_t b = l.task_begin(t), e = l.task_end(t); b < e; b += l.chunk_size)
                                  {
                                      const std::size_t n = std::min(l.chunk_size, e - b);
                                      for (statistic* s : groups[g])
                                      {
                                          s->accumulate(t, b, n, a);
                                      }
                                  }
                              });
                    // Combining partial results may be real work (a selection); statistics are independent.
                    std::vector<statistic*> running;
                    for (auto& group : groups)
                    {
                        running.insert(running.end(), group.begin(), group.end());
                    }
                    run_tasks(running.size(), running.size() > 1 ? options.threads : 1, options.exec, [] { return 0; },
                              [&](int&, std::size_t i) { running[i]->end_pass(); });
                }
            }
        }

        inline void run_elementwise(const std::vector<job*>& jobs, const eval_options& options)
        {
            const pass_layout unit{0, options.chunk_size, options.chunks_per_task, options.threads, options.exec};
            const task_map tasks(jobs.size(), unit, [&](std::size_t j) { return jobs[j]->size(); });
            run_tasks(tasks.total(), options.threads, options.exec,
                      [&] { return arena(options.chunk_size); },
                      [&](arena& a, std::size_t flat)
                      {
                          const auto [j, t] = tasks.locate(flat);
                          pass_layout l = unit;
                          l.size = jobs[j]->size();
                          for (std::size_t b = l.task_begin(t), e = l.task_end(t); b < e; b += l.chunk_size)
                          {
                              jobs[j]->run_chunk(b, std::min(l.chunk_size, e - b), a);
                          }
                      });
        }

        template <class Out>
        auto resize_for(Out& out, const shape_type& shape, int) -> decltype(out.resize(std::declval<std::vector<std::size_t>>()), void())
        {
            out.resize(std::vector<std::size_t>(shape.begin(), shape.end()));
        }

        template <class Out>
        auto resize_for(Out& out, const shape_type& shape, long) -> decltype(out.resize(std::size_t{}), void())
        {
            out.resize(xmerge::numel(shape));
        }

        template <class Out>
        void resize_for(Out&, const shape_type&, ...)
        {
        }
    }

    template <class E>
    inline void evaluate(const tensor_expression<E>& expr, const tensor_ref& out, const eval_options& options)
    {
        detail::check_options(options);
        const E& e = expr.derived();
        detail::check_output(e, out);
        detail::typed_job<E> job(e, out);
        detail::run_statistics({&job.registry()}, options);
        detail::run_elementwise({&job}, options);
    }

    template <class E, class Out, class>
    inline void evaluate(const tensor_expression<E>& expr, Out& out, const eval_options& options)
    {
        const auto& shape = expr.derived().shape();
        detail::resize_for(out, shape, 0);
        tensor_ref r = xmerge::as_tensor(out);
        if (r.shape() != shape && r.size() == xmerge::numel(shape))
        {
            r = r.reshaped(shape);  // a flat std::vector receiving an n-d result
        }
        evaluate(expr, r, options);
    }

    template <class E>
    inline xt::xarray<float> materialize(const tensor_expression<E>& expr, const eval_options& options)
    {
        xt::xarray<float> out;
        evaluate(expr, out, options);
        return out;
    }

    template <class S>
    inline double value_of(const scalar_expression<S>& expr, const eval_options& options)
    {
        detail::check_options(options);
        detail::evaluator<S> ev = detail::make_evaluator(expr.derived());
        detail::statistics_registry registry;
        ev.collect(registry);
        detail::run_statistics({&registry}, options);
        return ev.value();
    }

    template <class E>
    inline void evaluate_all(const std::vector<E>& exprs, const std::vector<tensor_ref>& outs, const eval_options& options)
    {
        detail::check_options(options);
        if (exprs.size() != outs.size())
        {
            throw parameter_error("", "outs", "got " + std::to_string(outs.size()) + " outputs for " + std::to_string(exprs.size()) + " expressions");
        }
        std::vector<std::unique_ptr<detail::typed_job<E>>> jobs;
        jobs.reserve(exprs.size());
        for (std::size_t i = 0; i < exprs.size(); ++i)
        {
            detail::check_output(exprs[i], outs[i]);
            jobs.push_back(std::make_unique<detail::typed_job<E>>(exprs[i], outs[i]));
        }
        std::vector<detail::statistics_registry*> registries;
        std::vector<detail::job*> raw;
        for (auto& j : jobs)
        {
            registries.push_back(&j->registry());
            raw.push_back(j.get());
        }
        detail::run_statistics(registries, options);
        detail::run_elementwise(raw, options);
    }
}

#endif
