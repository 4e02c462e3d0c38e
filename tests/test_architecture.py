"""The map in docs/architecture.md, checked: who may import whom, where HTTP and the terminal live.

Read from the source (every import, at module level or inside a function), so a shortcut taken
anywhere fails here with the line to look at.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cs_posthog"

# a room may import rooms of a lower rank only (and itself)
RANK = {
    "__init__": 0, "errors": 0, "paths": 0, "_private_apis": 0, "timeutil": 0, "settings": 0,
    "interrupts": 1, "fsutil": 1,
    "secrets": 2,
    "urls": 3, "output": 3, "http": 3,
    "config": 4,
    "posthog": 5, "customerscore": 5,
    "sync": 6,
    "wizard": 7,
    "app": 8,
    "commands": 9,
    "cli": 10,
    "__main__": 11,
}
# the sandbox stands alone (it is the other side of the wire); only commands (the demo) start it
SANDBOX_USERS = {"commands"}
# the core: no terminal, no prompts
CORE = {"errors", "paths", "timeutil", "settings", "interrupts", "fsutil", "secrets", "urls", "http", "config",
        "posthog", "customerscore", "sync"}
TERMINAL = ("rich", "questionary", "prompt_toolkit", "typer", "click")
# HTTP goes through the two clients (and http.py under them)
HTTP_ROOMS = {"http", "urls", "posthog", "customerscore", "sandbox"}


def room_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "cs_posthog":
                found += [(node.lineno, f"cs_posthog.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return found


FILES = sorted(p for p in SRC.rglob("*.py"))


def test_every_room_has_a_rank():
    rooms = {room_of(p) for p in FILES} - {"sandbox"}
    assert rooms <= set(RANK), f"rooms missing from the map: {sorted(rooms - set(RANK))}"


PRIVATE = ("typer._", "typer.core", "questionary.prompts", "questionary.question", "prompt_toolkit.output.vt100", "prompt_toolkit.output.plain_text")


def test_private_apis_of_dependencies_are_used_in_one_module():
    """pyproject caps these dependencies for them; one module to read when raising a cap."""
    users = {str(p.relative_to(SRC)) for p in FILES for _, m in imports(p) if m.startswith(PRIVATE)}
    assert users <= {"_private_apis.py"}, sorted(users)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_follow_the_map(path):
    room = room_of(path)
    wrong = []
    for line, module in imports(path):
        top = module.split(".")[0]
        if top == "cs_posthog":
            parts = module.split(".")
            target = parts[1] if len(parts) > 1 else "__init__"
            target = "__init__" if target == "__version__" else target
            if target == room:
                continue
            if room == "sandbox":
                wrong.append(f"line {line}: the sandbox imports {module}")
            elif target == "sandbox":
                if room not in SANDBOX_USERS:
                    wrong.append(f"line {line}: {room} starts the sandbox ({module})")
            elif RANK[target] >= RANK[room]:
                wrong.append(f"line {line}: {room} (rank {RANK[room]}) imports {module} (rank {RANK[target]})")
        elif room in CORE and top in TERMINAL:
            wrong.append(f"line {line}: the core ({room}) imports the terminal library {top}")
        elif top == "httpx" and room not in HTTP_ROOMS:
            wrong.append(f"line {line}: {room} speaks HTTP itself (httpx); go through a client")
    assert not wrong, f"{path.relative_to(SRC)}:\n" + "\n".join(wrong)


def _names_used(path: Path) -> set[str]:
    """Every ``os.environ`` / ``os.getenv`` / ``environ`` reference and every call of ``get_paths``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
            found.add(f"os.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            found |= {f"os.{a.name}" for a in node.names if a.name in ("environ", "getenv", "environb")}
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "get_paths":
            found.add("get_paths()")
    return found


def test_the_environment_is_read_once_where_the_app_is_made():
    """``Settings.from_environ`` is handed ``os.environ`` by cli.py (which also answers Click's
    completion hook); the App works out the paths; everything else gets them handed down. The
    sandbox, the other side of the wire, is its own program."""
    allowed = {"cli.py": {"os.environ"}, "app.py": {"get_paths()"}}
    wrong = {}
    for path in FILES:
        rel = str(path.relative_to(SRC))
        if room_of(path) == "sandbox":
            continue
        extra = _names_used(path) - allowed.get(rel, set())
        if extra:
            wrong[rel] = sorted(extra)
    assert not wrong, wrong
