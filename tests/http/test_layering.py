"""The data flows one way: protocol/ and serving/ never import the web framework or http/."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "glm_api"
FORBIDDEN = {
    "protocol": ("fastapi", "starlette", "glm_api.http", "glm_api.serving", "torch"),
    "serving": ("fastapi", "starlette", "glm_api.http", "torch"),
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_imports_point_down_the_chain() -> None:
    for folder, forbidden in FORBIDDEN.items():
        files = sorted((PACKAGE / folder).glob("*.py"))
        assert files
        for path in files:
            bad = [
                n for n in _imports(path) if n.split(".")[0] in forbidden or n.startswith(forbidden)
            ]
            assert not bad, f"{path.name} imports {bad}"
