/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_SEARCH_LINEAR_ASSIGNMENT_HPP
#define XMERGE_SEARCH_LINEAR_ASSIGNMENT_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <vector>

#include "../core/error.hpp"

/**
 * @file
 * The linear assignment problem over a dense cost matrix, solved exactly
 * by shortest augmenting paths (Jonker and Volgenant, Computing 38, 1987;
 * the rectangular form as in Crouse, IEEE TAES 52, 2016).
 */

namespace xmerge
{
    /// Whether the assignment minimizes or maximizes the total.
    enum class assignment_goal
    {
        minimize,
        maximize
    };

    /// Marks a row left without a column (more rows than columns).
    constexpr std::size_t unassigned = static_cast<std::size_t>(-1);

    /**
     * Assigns each row of the row-major `rows` x `cols` matrix `cost` to a
     * distinct column so that the total cost is smallest (or largest), and
     * returns that total. assignment[r] receives row r's column; with more
     * rows than columns, rows - cols rows get `unassigned`.
     *
     * Method: rows are added one at a time; each addition finds, with
     * Dijkstra's algorithm over reduced costs c(i, j) - u_i - v_j >= 0, the
     * cheapest alternating path from the new row to a free column, flips it,
     * and updates the dual potentials u, v so that reduced costs stay
     * non-negative. This is the augmentation phase of Jonker-Volgenant
     * (without its column-reduction start, which changes speed, not the
     * result). Exact for any finite costs, ties included; which optimum is
     * returned among equal ones is deterministic. Time O(n^2 m) for
     * n = min(rows, cols), m = max(rows, cols); memory: a copy of the
     * matrix in double (transposed when rows > cols) and O(m) more.
     *
     * Throws parameter_error for a cost that is not finite or a null
     * pointer with a non-empty matrix.
     */
    template <class T>
    double linear_assignment(const T* cost, std::size_t rows, std::size_t cols, std::size_t* assignment,
                             assignment_goal goal = assignment_goal::minimize);

    namespace detail
    {
        /// The solver for rows <= cols over costs already signed for minimization.
        inline void assign_rows(const double* cost, std::size_t rows, std::size_t cols, std::size_t* assignment);
    }

    /********************
     * Implementation   *
     ********************/

    namespace detail
    {
        inline void assign_rows(const double* cost, std::size_t rows, std::size_t cols, std::size_t* assignment)
        {
            // 1-based rows and columns; column 0 is the virtual start of each search.
            const double inf = std::numeric_limits<double>::infinity();
            std::vector<double> u(rows + 1, 0.0), v(cols + 1, 0.0), shortest(cols + 1);
            std::vector<std::size_t> row_of(cols + 1, 0), previous(cols + 1, 0);
            std::vector<char> done(cols + 1);
            for (std::size_t i = 1; i <= rows; ++i)
            {
                row_of[0] = i;
                std::size_t col = 0;
                std::fill(shortest.begin(), shortest.end(), inf);
                std::fill(done.begin(), done.end(), 0);
                do
                {
                    done[col] = 1;
                    const std::size_t row = row_of[col];
                    const double* c = cost + (row - 1) * cols;
                    double delta = inf;
                    std::size_t next = 0;
                    for (std::size_t j = 1; j <= cols; ++j)
                    {
                        if (done[j])
                        {
                            continue;
                        }
                        const double reduced = c[j - 1] - u[row] - v[j];
                        if (reduced < shortest[j])
                        {
                            shortest[j] = reduced;
                            previous[j] = col;
                        }
                        if (shortest[j] < delta)
                        {
                            delta = shortest[j];
                            next = j;
                        }
                    }
                    for (std::size_t j = 0; j <= cols; ++j)
                    {
                        if (done[j])
                        {
                            u[row_of[j]] += delta;
                            v[j] -= delta;
                        }
                        else
                        {
                            shortest[j] -= delta;
                        }
                    }
                    col = next;
                } while (row_of[col] != 0);
                // Flip the alternating path back to the start.
                do
                {
                    const std::size_t back = previous[col];
                    row_of[col] = row_of[back];
                    col = back;
                } while (col != 0);
            }
            for (std::size_t j = 1; j <= cols; ++j)
            {
                if (row_of[j] != 0)
                {
                    assignment[row_of[j] - 1] = j - 1;
                }
            }
        }
    }

    template <class T>
    inline double linear_assignment(const T* cost, std::size_t rows, std::size_t cols, std::size_t* assignment, assignment_goal goal)
    {
        if (rows == 0 || cols == 0)
        {
            for (std::size_t r = 0; r < rows; ++r)
            {
                assignment[r] = unassigned;
            }
            return 0.0;
        }
        if (cost == nullptr || assignment == nullptr)
        {
            throw parameter_error("", "cost", "null pointer for a " + std::to_string(rows) + " x " + std::to_string(cols) + " assignment problem");
        }
        const double sign = goal == assignment_goal::maximize ? -1.0 : 1.0;
        const bool transposed = rows > cols;
        const std::size_t n = transposed ? cols : rows, m = transposed ? rows : cols;
        std::vector<double> signed_cost(n * m);
        for (std::size_t r = 0; r < rows; ++r)
        {
            for (std::size_t c = 0; c < cols; ++c)
            {
                const double x = static_cast<double>(cost[r * cols + c]);
                if (!std::isfinite(x))
                {
                    throw parameter_error("", "cost", "entry (" + std::to_string(r) + ", " + std::to_string(c) + ") is not finite");
                }
                signed_cost[transposed ? c * m + r : r * m + c] = sign * x;
            }
        }
        std::vector<std::size_t> solved(n);
        detail::assign_rows(signed_cost.data(), n, m, solved.data());
        double total = 0.0;
        if (!transposed)
        {
            for (std::size_t r = 0; r < rows; ++r)
            {
                assignment[r] = solved[r];
                total += static_cast<double>(cost[r * cols + solved[r]]);
            }
            return total;
        }
        for (std::size_t r = 0; r < rows; ++r)
        {
            assignment[r] = unassigned;
        }
        for (std::size_t c = 0; c < cols; ++c)
        {
            assignment[solved[c]] = c;
            total += static_cast<double>(cost[solved[c] * cols + c]);
        }
        return total;
    }
}

#endif
