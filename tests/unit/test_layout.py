"""The layout's rules, checked on the source: no import cycles, the web side imports neither
workers/ nor torch, one websocket client in the browser, and one list there of the final job
states (the server's)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from app.jobs.models import JobState

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "workers")
BROWSER_FILES = sorted(
    [*(REPO_ROOT / "static").rglob("*.js"), *(REPO_ROOT / "templates").rglob("*.html")]
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((REPO_ROOT / package).rglob("*.py"))
    }


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def import_graph() -> dict[str, set[str]]:
    """Module → the modules of app/ and workers/ it imports, anywhere in its body (an import
    inside a function closes a cycle as surely as one at the top, only later)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if _type_checking_only(node, parents):
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                # `from pkg import mod` imports the module pkg.mod when there is one.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_app_and_workers_have_no_import_cycle() -> None:
    graph = import_graph()
    assert "app.db" in graph["app.jobs.runner"]  # the walk sees real imports
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph) or [])


def test_the_web_side_never_imports_workers() -> None:
    graph = import_graph()
    offenders = sorted(
        f"{name} imports {target}"
        for name, targets in graph.items()
        if name.startswith("app")
        for target in targets
        if target.startswith("workers")
    )
    assert offenders == []


def test_importing_the_web_app_leaves_torch_out() -> None:
    code = (
        "import sys, app.main, app.cli, app.jobs.broker, app.jobs.runner, app.jobs.sweeper; "
        "app.main.create_app(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'diffusers', "
        "'transformers', 'workers'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_the_browser_has_one_websocket_client() -> None:
    openers = [
        path.relative_to(REPO_ROOT).as_posix()
        for path in BROWSER_FILES
        if "new WebSocket(" in path.read_text()
    ]
    assert openers == ["static/js/live.js"]


def test_the_browser_lists_the_final_job_states_once_as_the_server_does() -> None:
    final = {state.value for state in JobState if state.finished}
    listed = re.search(
        r"const FINAL = new Set\(\[([^\]]*)\]\)", (REPO_ROOT / "static/js/live.js").read_text()
    )
    assert listed is not None
    assert set(re.findall(r'"(\w+)"', listed.group(1))) == final
    copies = [
        path.relative_to(REPO_ROOT).as_posix()
        for path in BROWSER_FILES
        if path.name != "live.js"
        for items in re.findall(r"\[([^\[\]]*)\]", path.read_text())
        if final <= set(re.findall(r"[\"'](\w+)[\"']", items))
    ]
    assert copies == []  # others ask live.js (isFinal)
