"""The host side (arch, host, golden model, CLI entry) must not need Amaranth or PyTorch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


def _loaded(imports: str, which: str) -> str:
    """The modules ``which`` (a condition on ``m``) that ``import {imports}`` loads in a fresh
    interpreter, sorted and comma-separated."""
    code = f"import sys, {imports}\nprint(','.join(sorted(m for m in sys.modules if {which})))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


HEAVY = "m in ('torch', 'amaranth', 'scipy')"


def test_host_side_imports_without_torch_or_amaranth() -> None:
    imports = (
        "rmsmp, rmsmp.arch, rmsmp.host.runtime, rmsmp.host.program, rmsmp.sim.golden, rmsmp.cli"
    )
    assert _loaded(imports, HEAVY) == ""


def test_arch_imports_nothing_else_of_ours() -> None:
    ours = "m.startswith('rmsmp.') and not m.startswith('rmsmp.arch')"
    assert _loaded("rmsmp.arch", ours) == ""


def test_lowering_needs_numpy_and_of_sim_only_the_cycle_model() -> None:
    """The lowering chooses tilings with the cycle model's closed forms (``sim.cycles``, which
    needs only ``arch``), and nothing else of the simulators, Amaranth or PyTorch."""
    rest = f"{HEAVY} or m.startswith(('rmsmp.sim.', 'rmsmp.hw'))"
    assert _loaded("rmsmp.compiler.lower", rest) == "rmsmp.sim.cycles"


ARCH = Path(__file__).resolve().parents[1] / "arch"
ARCH_CHAIN = ("errors", "numerics", "layout", "isa", "config")
"""arch's import chain, bottom first: each module imports only modules before it."""
ARCH_LEAVES = ("regs", "timing")
"""arch modules that import no other arch module."""


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in (
        "TYPE_CHECKING",
        "typing.TYPE_CHECKING",
    )


def _arch_imports(tree: ast.Module) -> tuple[set[str], list[int]]:
    """The arch modules a module imports at run time (``if TYPE_CHECKING:`` blocks hold
    annotations only and are skipped), and the lines of imports inside functions or classes."""
    runtime: set[str] = set()
    nested: list[int] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                if not top:
                    nested.append(child.lineno)
                if isinstance(child, ast.ImportFrom) and child.level == 1:
                    if child.module:
                        runtime.add(child.module.split(".")[0])
                    else:
                        runtime.update(a.name for a in child.names)
                elif isinstance(child, ast.ImportFrom) and (child.module or "").startswith(
                    "rmsmp.arch."
                ):
                    runtime.add(child.module.split(".")[2])
            inner = top and not isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda
            )
            visit(child, inner)

    visit(tree, True)
    return runtime, nested


def test_arch_is_a_straight_chain() -> None:
    """numerics <- layout <- isa <- config, errors at the bottom: no module imports one above it
    (no cycle to hide), and no import sits inside a function."""
    modules = sorted(p.stem for p in ARCH.glob("*.py") if p.stem != "__init__")
    assert modules == sorted(ARCH_CHAIN + ARCH_LEAVES), "place a new arch module in the chain"
    for name in modules:
        runtime, nested = _arch_imports(ast.parse((ARCH / f"{name}.py").read_text()))
        below = set(ARCH_CHAIN[: ARCH_CHAIN.index(name)]) if name in ARCH_CHAIN else set()
        assert runtime <= below, f"arch/{name}.py imports {sorted(runtime - below)} from above"
        assert nested == [], f"arch/{name}.py imports inside a function at lines {nested}"


COMPILER = Path(__file__).resolve().parents[1] / "compiler"
"""The numpy compiler (rmsmp.compiler: IR, graph file, lowering, tokens, hybrid): the side of
the graph file that needs no PyTorch. The torch side (QAT, capture, export) is rmsmp.quant."""


def test_numpy_compiler_imports_no_torch() -> None:
    """Every rmsmp.compiler module imports in an interpreter where ``import torch`` fails, so
    none imports it at import time, directly or through another module."""
    code = (
        "import pkgutil, sys\n"
        "sys.modules['torch'] = None\n"
        "import rmsmp.compiler as c\n"
        "for m in pkgutil.walk_packages(c.__path__, 'rmsmp.compiler.'):\n"
        "    __import__(m.name)\n"
        "    print(m.name)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr.strip().splitlines()[-1:]
    loaded = set(out.stdout.split())
    want = {f"rmsmp.compiler.{p.relative_to(COMPILER).with_suffix('')}".replace("/", ".")
            for p in COMPILER.rglob("*.py") if p.stem != "__init__"}  # fmt: skip
    assert "rmsmp.compiler.lower.pipeline" in want and loaded >= want


def _imported(tree: ast.Module, package: str) -> set[str]:
    """Every module a module of ``package`` imports anywhere (inside functions too), absolute."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            stem = ".".join(base) if node.level else ""
            mod = ".".join(filter(None, (stem, node.module or "")))
            names.update([mod] if node.module else (f"{mod}.{a.name}" for a in node.names))
    return names


def test_numpy_compiler_never_imports_the_torch_side() -> None:
    """No rmsmp.compiler module imports torch or rmsmp.quant even lazily inside a function: a
    torch model reaches the lowering only through ``rmsmp.compile``, which exports it first."""
    for path in sorted(COMPILER.rglob("*.py")):
        rel = path.relative_to(COMPILER.parent).with_suffix("")
        package = ".".join(["rmsmp", *rel.parts[:-1]])
        bad = {
            m
            for m in _imported(ast.parse(path.read_text()), package)
            if m.split(".")[0] in ("torch", "brevitas", "qonnx", "onnx")
            or m.startswith("rmsmp.quant")
        }
        assert bad == set(), f"{rel}.py imports {sorted(bad)} (the torch side is rmsmp.quant)"
