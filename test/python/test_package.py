"""The package's shape: subpackages that read as the pipeline, no import
cycles (function-level imports included), each subpackage saying what it
takes and what it hands on. Read from the sources with ``ast``; nothing is
imported."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "flexattn_mlir"


def _modules(package: Path = PKG) -> dict[str, tuple[Path, bool]]:
    """A package's modules: dotted name -> (file, is a package)."""
    out = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _imports(modules) -> dict[str, set[str]]:
    """Who imports whom inside the package, from every import statement
    (module level, function level, under ``if``): ``from . import x`` names
    the submodule ``x`` when there is one, else the package itself."""
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in modules.items():
        here = name.split(".") if is_pkg else name.split(".")[:-1]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = here[: len(here) - node.level + 1] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod
                           for a in node.names]
            else:
                continue
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    graph = _imports(_modules())
    assert graph["flexattn_mlir.api"], "the import graph came out empty"
    assert _cycles(graph) == []


def test_no_import_cycles_between_subpackages():
    """The subpackages layer as the pipeline: compiler <- frontend <- masks <-
    execution <- (api, tools, examples); none reaches back up."""
    graph = _imports(_modules())
    folders: dict[str, set[str]] = {}
    for a, targets in graph.items():
        for b in targets:
            fa, fb = (".".join(m.split(".")[:2]) for m in (a, b))
            if fa != fb:
                folders.setdefault(fa, set()).add(fb)
    folders = {k: v for k, v in folders.items() if k != "flexattn_mlir"}
    for name in set().union(*folders.values()) | set(folders):
        folders.setdefault(name, set())
    assert _cycles(folders) == []


def test_cycle_finder_sees_function_level_imports(tmp_path):
    """A function-level import that only hides a cycle is one."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub.b import g\n")
    (pkg / "sub" / "b.py").write_text("def g():\n    from .. import a\n")
    graph = _imports(_modules(pkg))
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"}
    assert _cycles(graph) == [["pkg.a", "pkg.sub.b"]]
    (pkg / "sub" / "b.py").write_text("def g():\n    return 1\n")
    assert _cycles(_imports(_modules(pkg))) == []


def test_each_subpackage_says_what_it_takes_and_hands_on():
    for init in sorted(PKG.rglob("__init__.py")):
        if init.parent.name == "_lib":
            continue
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.relative_to(PKG.parent)} has no docstring"
        if init.parent != PKG and init.parent.name != "dialects":
            words = " ".join(doc.split())
            assert "takes" in words and "hands on" in words, (
                f"{init.relative_to(PKG.parent)}: say what it takes and what it hands on")


# MLIR op syntax in a string: a dialect-qualified op name, a block label, a
# memref type or an SSA value.
_IR_SYNTAX = re.compile(r"\b(flexattn|func|arith|memref|scf|math|tensor|linalg|llvm|gpu|nvvm)"
                        r"\.[a-z_]+|\^bb\d|memref<|%[A-Za-z_]")
# The only module that handles IR as text beyond MLIR's own printing and
# parsing: the torch-mlir boundary (its module carries its own LLVM: printed
# there, parsed here). ModIR's text is a flexattn.mod op MLIR prints and
# parses whole (compiler/mods.py writes none of it).
_TEXT_BOUNDARIES = {"frontend/convert.py"}


def _ir_text_sites(source: str) -> list[str]:
    """f-strings that write MLIR ops and regexes over MLIR text in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            if _IR_SYNTAX.search(text):
                found.append(f"line {node.lineno}: f-string {text[:60]!r}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and isinstance(node.func.value, ast.Name) and node.func.value.id == "re"):
            pattern = node.args[0] if node.args else None
            if isinstance(pattern, ast.Constant) and (_IR_SYNTAX.search(str(pattern.value))
                                                      or "%" in str(pattern.value)):
                found.append(f"line {node.lineno}: re.{node.func.attr} over IR text")
    return found


def test_ir_is_built_with_the_bindings_not_formatted():
    offenders = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        if rel in _TEXT_BOUNDARIES or rel.startswith("dialects/"):
            continue
        sites = _ir_text_sites(path.read_text())
        if sites:
            offenders[rel] = sites
    assert offenders == {}


def test_ir_text_scan_finds_formatted_ops_and_regexes():
    assert _ir_text_sites('x = f"%r = flexattn.yield {v} : f32"\n')
    assert _ir_text_sites('x = f"memref<{n}x2xi64>"\n')
    assert _ir_text_sites('import re\nre.sub(r"%cap(\\d+)", f, text)\n')
    assert not _ir_text_sites('x = f"builtin.module({p})"\ny = f"{name} must be positive"\n')


def test_nothing_refers_outside_the_repository():
    root = PKG.parent
    names = ("GPU_NOTES", "FRONTEND_NOTES", "BUILD_NOTES", "../shared")
    hits = []
    for path in [*root.glob("*.md"), *root.glob("CMakeLists.txt"), *(root / "docs").rglob("*"),
                 *PKG.rglob("*.py"), *(root / "runtime").rglob("*.py"), *(root / "test").rglob("*"),
                 *(root / "passes").rglob("*"), *(root / "dialect").rglob("*"),
                 *(root / "python").rglob("*"), *(root / "bench").rglob("*.py")]:
        if path.is_file() and path.suffix in (".py", ".md", ".mlir", ".td", ".cpp", ".h", ".txt",
                                              ".cmake", ""):
            text = path.read_text(errors="replace")
            hits += [f"{path.relative_to(root)}: {n}" for n in names
                     if n in text and path.name != "test_package.py"]
    assert hits == []
