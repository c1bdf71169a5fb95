"""The package's layout is its architecture (docs/architecture.md): stages at the top, libraries in
subpackages below, imports only going downward. Checked from the source, so a violating import
fails here before anything runs."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "snakechat"

STAGES = {"tok_train", "tok_eval", "dataset", "eval_bundle", "chat_data", "base_train", "base_loss", "base_eval",
          "mid_train", "chat_sft", "chat_rl", "chat_eval", "chat_cli", "chat_web", "export_hf", "report", "plots", "plan", "sweep"}


def module_names(package=PACKAGE):
    """{dotted name: path} of every module in the package."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        names[".".join(parts)] = path
    return names


def imported_modules(path, known):
    """The snakechat modules a file imports (`from snakechat.x import y` counts y where y is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m in known and m != "snakechat"}


def layer(module, known):
    """'stage' for a top-level module, else the subpackage it lives in."""
    parts = module.split(".")
    return "stage" if len(parts) == 2 and known[module].name != "__init__.py" else parts[1]


def violations(package=PACKAGE):
    """Imports that go against the layout, as readable lines."""
    known = module_names(package)
    problems, edges = [], {}
    for name, path in known.items():
        if name == "snakechat":
            continue
        for target in imported_modules(path, known):
            src, dst = layer(name, known), layer(target, known)
            if dst == "stage":
                problems.append(f"{name} imports the stage {target}: stages import libraries, nothing imports a stage")
            elif src not in ("stage", dst):
                edges.setdefault((src, dst), []).append(f"{name} -> {target}")
    for (a, b), lines in sorted(edges.items()):
        if (b, a) in edges and a < b:
            problems.append(f"subpackages {a} and {b} import each other: {lines[0]}; {edges[(b, a)][0]}")
    return problems, edges


def test_stages_are_exactly_the_top_level_modules():
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert top == STAGES
    for stage in STAGES:
        text = (PACKAGE / f"{stage}.py").read_text()
        assert "def main(" in text and '__name__ == "__main__"' in text, f"{stage} is not a runnable stage"


def test_imports_only_go_downward():
    problems, edges = violations()
    assert problems == []
    # the library layers form no cycle at all (a cycle through three packages is as bad as one of two)
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    order, state = [], {}

    def visit(node, trail):
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", f"import cycle between subpackages: {' -> '.join(trail + [node])}"
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, trail + [node])
        state[node] = "done"
        order.append(node)

    for node in sorted(graph):
        visit(node, [])
    # runtime is the floor: it imports no other subpackage
    assert not graph.get("runtime")


def test_a_violating_import_is_caught(tmp_path):
    """The checks above fail on the imports they forbid: a library importing a stage, and two
    subpackages importing each other."""
    import shutil

    copy = tmp_path / "snakechat"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert violations(copy)[0] == []
    trainer = copy / "train" / "trainer.py"
    trainer.write_text("from snakechat import base_train\n" + trainer.read_text())
    assert any("imports the stage snakechat.base_train" in p for p in violations(copy)[0])
    trainer.write_text(trainer.read_text().split("\n", 1)[1])
    gpt = copy / "model" / "gpt.py"
    gpt.write_text("from snakechat.train import optim\n" + gpt.read_text())
    assert any("model and train import each other" in p for p in violations(copy)[0])


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_has_help(stage):
    out = subprocess.run([sys.executable, "-m", f"snakechat.{stage}", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout
