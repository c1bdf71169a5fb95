"""The package's layers: a stage module (one with a CLI, run as `python -m snakechat.<stage>`) is
a recipe, never a library; what two stages share lives in a library module."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "snakechat"


def cli_modules():
    return {p.stem for p in PACKAGE.glob("*.py") if 'if __name__ == "__main__":' in p.read_text()}


def snakechat_imports(path):
    """Names of the snakechat modules a file imports (at any depth of its code)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "snakechat":
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("snakechat."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("snakechat.")}
    return found


def test_no_module_imports_a_stage_module():
    clis = cli_modules()
    assert {"base_train", "mid_train", "chat_sft", "chat_rl", "plan", "dataset"} <= clis  # the check sees the stages
    offenders = sorted(f"{p.stem} imports {name}" for p in PACKAGE.glob("*.py") for name in snakechat_imports(p) & clis if name != p.stem)
    assert not offenders, offenders
