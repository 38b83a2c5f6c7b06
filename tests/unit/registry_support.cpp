#include "registry_support.hpp"

#include <xmerge/methods/builtin.hpp>

const xmerge::method_registry& xmerge_test::builtin_registry()
{
    static const xmerge::method_registry registry = xmerge::builtin_methods();
    return registry;
}
