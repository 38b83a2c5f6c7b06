/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_CORE_PARALLEL_HPP
#define XMERGE_CORE_PARALLEL_HPP

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace xmerge
{
    /**
     * Where evaluations run their parallel work.
     *
     * run(n, job) must call job(0) ... job(n - 1), each exactly once, possibly
     * concurrently, and return when all have returned. n never exceeds
     * concurrency(). Adapt a task system of your own by deriving from it.
     */
    class executor
    {
    public:
        virtual ~executor() = default;
        /// Jobs that may usefully run at the same time.
        virtual std::size_t concurrency() const noexcept = 0;
        virtual void run(std::size_t n, const std::function<void(std::size_t)>& job) = 0;
    };

    /**
     * A fixed set of worker threads, reused across evaluations.
     *
     * Pass one through eval_options when evaluating many small tensors (an
     * optimizer step, a model merge) to avoid starting threads per call. The
     * calling thread takes part in the work, so a pool of n threads starts
     * n - 1 workers. Calls from several threads are serialized.
     */
    class thread_pool final : public executor
    {
    public:
        /// n threads including the caller; 0 means std::thread::hardware_concurrency().
        explicit thread_pool(std::size_t n = 0);
        ~thread_pool() override;
        thread_pool(const thread_pool&) = delete;
        thread_pool& operator=(const thread_pool&) = delete;

        std::size_t concurrency() const noexcept override { return m_workers.size() + 1; }
        void run(std::size_t n, const std::function<void(std::size_t)>& job) override;

    private:
        void worker_loop(std::size_t index);

        std::vector<std::thread> m_workers;
        std::mutex m_run_mutex;  // one run() at a time
        std::mutex m_mutex;
        std::condition_variable m_wake;
        std::condition_variable m_done;
        const std::function<void(std::size_t)>* m_job = nullptr;
        std::size_t m_jobs = 0;
        std::size_t m_pending = 0;
        std::size_t m_generation = 0;
        bool m_stop = false;
    };

    namespace detail
    {
        /// Number of hardware threads, at least 1.
        inline std::size_t hardware_threads() noexcept;

        /**
         * Runs task(t) for t < n_tasks on up to `threads` lanes (from `exec` when
         * given, else from threads started for this call). Each lane owns a
         * state made by make_state(), passed to every task it runs; tasks are
         * handed out dynamically. The first exception thrown stops the hand-out
         * and is rethrown here.
         */
        template <class MakeState, class Task>
        void run_tasks(std::size_t n_tasks, std::size_t threads, executor* exec, MakeState&& make_state, Task&& task);
    }

    /********************
     * Implementation   *
     ********************/

    inline thread_pool::thread_pool(std::size_t n)
    {
        if (n == 0)
        {
            n = detail::hardware_threads();
        }
        m_workers.reserve(n - 1);
        for (std::size_t i = 1; i < n; ++i)
        {
            m_workers.emplace_back([this, i] { worker_loop(i); });
        }
    }

    inline thread_pool::~thread_pool()
    {
        {
            std::lock_guard<std::mutex> lock(m_mutex);
            m_stop = true;
        }
        m_wake.notify_all();
        for (auto& t : m_workers)
        {
            t.join();
        }
    }

    inline void thread_pool::run(std::size_t n, const std::function<void(std::size_t)>& job)
    {
        if (n == 0)
        {
            return;
        }
        std::lock_guard<std::mutex> run_lock(m_run_mutex);
        n = std::min(n, concurrency());
        {
            std::lock_guard<std::mutex> lock(m_mutex);
            m_job = &job;
            m_jobs = n;
            m_pending = n - 1;
            ++m_generation;
        }
        m_wake.notify_all();
        // Jobs must not throw here: run_tasks catches inside each job.
        job(0);
        std::unique_lock<std::mutex> lock(m_mutex);
        m_done.wait(lock, [this] { return m_pending == 0; });
        m_job = nullptr;
    }

    inline void thread_pool::worker_loop(std::size_t index)
    {
        std::size_t seen = 0;
        for (;;)
        {
            const std::function<void(std::size_t)>* job = nullptr;
            {
                std::unique_lock<std::mutex> lock(m_mutex);
                m_wake.wait(lock, [&] { return m_stop || m_generation != seen; });
                if (m_stop)
                {
                    return;
                }
                seen = m_generation;
                if (index >= m_jobs)
                {
                    continue;
                }
                job = m_job;
            }
            (*job)(index);
            {
                std::lock_guard<std::mutex> lock(m_mutex);
                if (--m_pending == 0)
                {
                    m_done.notify_one();
                }
            }
        }
    }

    namespace detail
    {
        inline std::size_t hardware_threads() noexcept
        {
            const unsigned n = std::thread::hardware_concurrency();
            return n == 0 ? 1 : n;
        }

        template <class MakeState, class Task>
        void run_tasks(std::size_t n_tasks, std::size_t threads, executor* exec, MakeState&& make_state, Task&& task)
        {
            if (n_tasks == 0)
            {
                return;
            }
            if (threads == 0)
            {
                threads = exec ? exec->concurrency() : hardware_threads();
            }
            std::size_t lanes = std::min(threads, n_tasks);
            if (exec)
            {
                lanes = std::min(lanes, exec->concurrency());
            }
            if (lanes <= 1)
            {
                auto state = make_state();
                for (std::size_t t = 0; t < n_tasks; ++t)
                {
                    task(state, t);
                }
                return;
            }

            std::atomic<std::size_t> next{0};
            std::atomic<bool> failed{false};
            std::exception_ptr error;
            std::mutex error_mutex;
            const std::function<void(std::size_t)> lane = [&](std::size_t)
            {
                try
                {
                    auto state = make_state();
                    for (std::size_t t = next.fetch_add(1); t < n_tasks && !failed.load(std::memory_order_relaxed); t = next.fetch_add(1))
                    {
                        task(state, t);
                    }
                }
                catch (...)
                {
                    std::lock_guard<std::mutex> lock(error_mutex);
                    if (!error)
                    {
                        error = std::current_exception();
                    }
                    failed = true;
                }
            };

            if (exec)
            {
                exec->run(lanes, lane);
            }
            else
            {
                std::vector<std::thread> helpers;
                helpers.reserve(lanes - 1);
                try
                {
                    for (std::size_t i = 1; i < lanes; ++i)
                    {
                        helpers.emplace_back(lane, i);
                    }
                }
                catch (...)
                {
                    // could not start a thread: the lanes that exist finish the work
                }
                lane(0);
                for (auto& h : helpers)
                {
                    h.join();
                }
            }
            if (error)
            {
                std::rethrow_exception(error);
            }
        }
    }
}

#endif
