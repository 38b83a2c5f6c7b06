/***************************************************************************
 * xmerge: weight-space arithmetic for neural-network checkpoints.
 * Distributed under the BSD 3-Clause License; see LICENSE.
 ***************************************************************************/
#ifndef XMERGE_CORE_ERROR_HPP
#define XMERGE_CORE_ERROR_HPP

#include <stdexcept>
#include <string>
#include <utility>

namespace xmerge
{
    /**
     * Base of every exception xmerge throws.
     *
     * what() reads "xmerge: file 'F': tensor 'T': parameter 'P': reason",
     * leaving out the parts that are empty; file(), tensor(), parameter()
     * and reason() give them separately.
     */
    class merge_error : public std::runtime_error
    {
    public:
        merge_error(std::string tensor, std::string parameter, std::string reason, std::string file = {});

        const std::string& file() const noexcept { return m_file; }
        const std::string& tensor() const noexcept { return m_tensor; }
        const std::string& parameter() const noexcept { return m_parameter; }
        const std::string& reason() const noexcept { return m_reason; }

    private:
        static std::string format(const std::string& file, const std::string& tensor, const std::string& parameter, const std::string& reason);

        std::string m_file;
        std::string m_tensor;
        std::string m_parameter;
        std::string m_reason;
    };

    /// Operands or outputs whose shapes do not agree.
    class shape_error : public merge_error
    {
    public:
        using merge_error::merge_error;
    };

    /// A merge parameter that is missing, of the wrong count, or out of range.
    class parameter_error : public merge_error
    {
    public:
        using merge_error::merge_error;
    };

    /// Memory that cannot be used as asked (dtype, layout, aliasing).
    class layout_error : public merge_error
    {
    public:
        using merge_error::merge_error;
    };

    /// A file that cannot be read or written, or whose contents are invalid.
    class io_error : public merge_error
    {
    public:
        io_error(std::string file, std::string tensor, std::string reason)
            : merge_error(std::move(tensor), "", std::move(reason), std::move(file))
        {
        }
    };

    /********************
     * Implementation   *
     ********************/

    inline merge_error::merge_error(std::string tensor, std::string parameter, std::string reason, std::string file)
        : std::runtime_error(format(file, tensor, parameter, reason))
        , m_file(std::move(file))
        , m_tensor(std::move(tensor))
        , m_parameter(std::move(parameter))
        , m_reason(std::move(reason))
    {
    }

    inline std::string merge_error::format(const std::string& file, const std::string& tensor, const std::string& parameter, const std::string& reason)
    {
        std::string s = "xmerge: ";
        if (!file.empty())
        {
            s += "file '" + file + "': ";
        }
        if (!tensor.empty())
        {
            s += "tensor '" + tensor + "': ";
        }
        if (!parameter.empty())
        {
            s += "parameter '" + parameter + "': ";
        }
        return s + reason;
    }
}

#endif
