// The library's method registry, built once per test binary.
#ifndef XMERGE_TEST_REGISTRY_SUPPORT_HPP
#define XMERGE_TEST_REGISTRY_SUPPORT_HPP

#include <xmerge/methods/registry.hpp>

namespace xmerge_test
{
    /// xmerge::builtin_methods(), made once. Defined in registry_support.cpp:
    /// building the registry compiles every method's evaluation code, which a
    /// test binary then pays for in one translation unit, not in each test
    /// file that looks a method up by name.
    const xmerge::method_registry& builtin_registry();
}

#endif
