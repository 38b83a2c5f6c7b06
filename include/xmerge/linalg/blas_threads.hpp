/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_LINALG_BLAS_THREADS_HPP
#define XMERGE_LINALG_BLAS_THREADS_HPP

#include <cstddef>

/**
 * @file
 * The thread count of the BLAS library the process runs with.
 *
 * The SVD-, Cholesky- and product-based methods (RegMean, TSV-M, Iso-C,
 * Iso-CTS, OPCM, adapter extraction) give the same bits for the same BLAS
 * library and the same BLAS thread count; OpenBLAS splits its reductions
 * by thread, so another count may change the last bits. Fix the count to
 * reproduce a merge on another machine. Only OpenBLAS can be set at run
 * time (it is what Debian's libblas resolves to with libopenblas installed);
 * the functions look its entry points up in the loaded process, so nothing
 * extra is linked.
 */

namespace xmerge
{
    /**
     * Sets the BLAS library's thread count (n >= 1). Returns false, changing
     * nothing, when the process's BLAS is not OpenBLAS.
     */
    inline bool set_blas_threads(std::size_t n) noexcept;

    /// The BLAS library's thread count, or 0 when it cannot be queried (not OpenBLAS).
    inline std::size_t blas_threads() noexcept;
}

#include <dlfcn.h>

namespace xmerge
{
    inline bool set_blas_threads(std::size_t n) noexcept
    {
        using setter = void (*)(int);
        void* symbol = ::dlsym(RTLD_DEFAULT, "openblas_set_num_threads");
        if (symbol == nullptr || n == 0)
        {
            return false;
        }
        reinterpret_cast<setter>(symbol)(static_cast<int>(n));
        return true;
    }

    inline std::size_t blas_threads() noexcept
    {
        using getter = int (*)();
        void* symbol = ::dlsym(RTLD_DEFAULT, "openblas_get_num_threads");
        if (symbol == nullptr)
        {
            return 0;
        }
        const int n = reinterpret_cast<getter>(symbol)();
        return n > 0 ? static_cast<std::size_t>(n) : 0;
    }
}

#endif
