"""The layout the data flows through: no import cycle inside ``evalkit/``, and the layers import downwards only.

Files -> input path -> audit -> embedder -> statistic -> outputs -> reports: the modules below the run's stages
(``audio``, ``audit``, ``input_path``, ``embeddings/``, ``statistics/``, ``metrics/``, ``data/``, ``generate/``)
never import ``stages/``, ``report/`` or the run; ``report/`` reads run folders with neither torch nor the pipeline;
``statistics/`` is numpy only. Every import counts, at module level or inside a function, so a lazy import cannot
hide a cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "evalkit"


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module(p): p for p in PKG.rglob("*.py")}


def _imports(name: str) -> set[str]:
    """The evalkit modules ``name`` imports (``from evalkit.x import y`` counts as evalkit.x.y when that is a module)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    package = name if MODULES[name].name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return {m for m in out if m in MODULES and m != name}


GRAPH = {m: _imports(m) for m in MODULES}


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_the_walker_sees_lazy_imports():
    """The graph includes imports inside functions (evalkit/registry.py imports the metric modules lazily)."""
    assert "evalkit.embeddings" in GRAPH["evalkit.metrics.fad"]
    assert "evalkit.statistics.bootstrap" in GRAPH["evalkit.statistics"]  # inside a method


def test_no_import_cycle_inside_evalkit():
    assert _cycles() == []


def _top(m: str) -> str:
    parts = m.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else m


UPPER = {"evalkit.stages", "evalkit.report", "evalkit.compare", "evalkit.run", "evalkit.api", "evalkit.__main__",
         "evalkit"}
LOWER = {"evalkit.audio", "evalkit.audit", "evalkit.input_path", "evalkit.embeddings", "evalkit.statistics",
         "evalkit.metrics", "evalkit.data", "evalkit.generate", "evalkit.io", "evalkit.cpu", "evalkit.cache",
         "evalkit.errors", "evalkit.registry", "evalkit.resampy_exact", "evalkit.spec", "evalkit.distributed",
         "evalkit.overrides", "evalkit.safe_pickle"}


def test_every_module_has_a_layer():
    assert {_top(m) for m in MODULES} <= UPPER | LOWER


def test_nothing_below_the_stages_imports_the_stages_the_report_or_the_run():
    bad = sorted((m, w) for m, ws in GRAPH.items() if _top(m) in LOWER for w in ws if _top(w) in UPPER)
    assert bad == []


def test_the_report_and_the_statistics_import_no_torch_and_no_pipeline():
    """report/ reads run folders: torch-free, and it never imports the pipeline's stages or metrics' code;
    statistics/ is numpy only."""
    import sys

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += GRAPH[m]
        return seen

    for m in [m for m in MODULES if m.startswith(("evalkit.report", "evalkit.statistics"))]:
        reached = reach(m)
        assert not any(r.startswith(("evalkit.stages", "evalkit.embeddings", "evalkit.input_path", "evalkit.run"))
                       for r in reached), (m, sorted(reached))
        torchy = [r for r in reached if "torch" in {a.split(".")[0] for a in _third_party(r)}]
        assert torchy == [], (m, torchy)


def _third_party(name: str) -> set[str]:
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module)
    return out
