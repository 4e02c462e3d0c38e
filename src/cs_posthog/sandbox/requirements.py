"""What the sandbox needs beyond cs-posthog's own code: PostHog's HogQL parser (PyPI hogql-parser).

The parser is a C++ extension published as wheels for CPython 3.10-3.14 on Linux (glibc 2.27+,
x86_64 and aarch64) and macOS (arm64 from macOS 14, x86_64 from macOS 15), and as an sdist that
only builds with a C++20 compiler and the ANTLR 4 C++ runtime installed. pyproject.toml therefore
makes it a dependency only where a wheel exists (``PARSER_MARKER``, kept equal to the marker there
by a test), and keeps the ``sandbox`` extra for everyone else. Where it is missing, the demo and the
sandbox say so at once (exit 69) instead of answering HogQL queries with 500.

Cheap to import: the demo checks before it starts anything, and ``--help`` never imports this.
"""

from __future__ import annotations

import importlib.util
import platform
import shlex
import sys
import tomllib
from pathlib import Path

PARSER_MODULE = "hogql_parser"
PARSER_REQUIREMENT = "hogql-parser==1.3.88"
# The environment marker of the parser in pyproject.toml's dependencies (a test keeps them equal).
# No platform_release (the macOS version): older pip releases fail to evaluate it on Linux, whose
# kernel versions are not PEP 440 versions (pypa/packaging#774), and would then refuse to install
# cs-posthog at all. Intel Macs are left to the extra: their wheel needs macOS 15, which many of
# them cannot run, and a failed source build would stop the whole install.
PARSER_MARKER = (
    'platform_python_implementation == "CPython" and python_version < "3.15" and '
    '(sys_platform == "linux" and (platform_machine == "x86_64" or platform_machine == "aarch64") '
    'or sys_platform == "darwin" and platform_machine == "arm64")'
)
# Exit code of `python -m cs_posthog.sandbox` (and of `cs-posthog demo`) when the parser is missing:
# EX_UNAVAILABLE, as ExitCode.UNAVAILABLE.
PARSER_MISSING_EXIT = 69


def parser_installed() -> bool:
    """Whether the parser's module can be found (not loaded: it needs PostHog's error classes, which
    only the sandbox stands in for)."""
    return importlib.util.find_spec(PARSER_MODULE) is not None


def platform_has_wheel() -> bool:
    """Whether this interpreter and platform are among those ``PARSER_MARKER`` installs the parser on."""
    machine = platform.machine()
    return (
        platform.python_implementation() == "CPython"
        and sys.version_info < (3, 15)
        and (
            (sys.platform == "linux" and machine in ("x86_64", "aarch64"))
            or (sys.platform == "darwin" and machine == "arm64")
        )
    )


def install_command() -> str:
    """The command that adds the parser to the environment cs-posthog runs in: pipx and uv mark
    the virtualenvs they make (pipx_metadata.json, uv-receipt.toml); anything else has pip."""
    prefix = Path(sys.prefix)
    if (prefix / "pipx_metadata.json").is_file():
        return f"pipx inject {shlex.quote(prefix.name)} {PARSER_REQUIREMENT}"
    if (prefix / "uv-receipt.toml").is_file():
        return f"uv tool install --force --with {PARSER_REQUIREMENT} {_uv_source(prefix / 'uv-receipt.toml')}"
    return f"{shlex.quote(sys.executable)} -m pip install '{PARSER_REQUIREMENT}'"


def _uv_source(receipt: Path) -> str:
    """Where ``uv tool install`` took cs-posthog from (a wheel or a directory), from its receipt."""
    try:
        for req in tomllib.loads(receipt.read_text(encoding="utf-8"))["tool"]["requirements"]:
            if req.get("name") == "cs-posthog":
                where = req.get("path") or req.get("directory")
                if isinstance(where, str) and where:
                    return shlex.quote(where)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return "<the wheel or directory you installed cs-posthog from>"


def parser_problem(subject: str = "the demo") -> tuple[str, str] | None:
    """``(message, hint)`` when ``subject`` cannot run here for want of the parser, else None."""
    if parser_installed():
        return None
    return missing_parser_error(subject)


def missing_parser_error(subject: str, detail: str | None = None) -> tuple[str, str]:
    """The one-line error (and hint) for a parser that is absent, or present but not loadable."""
    what = f"PostHog's HogQL parser ({PARSER_REQUIREMENT})"
    where = (f"{platform.python_implementation()} {platform.python_version()} on {sys.platform} "
             f"{platform.machine()}")
    if detail:
        message = f"{subject} cannot run: {what} does not load ({detail})"
    elif platform_has_wheel():
        message = f"{subject} cannot run: it needs {what}, which is not installed"
    else:
        message = (f"{subject} cannot run: it needs {what}, which is not installed "
                   f"(it is not installed by default on {where})")
    hint = f"Install it with: {install_command()}"
    if not platform_has_wheel():
        hint += (" (it ships for CPython 3.10-3.14 on Linux x86_64/aarch64 and macOS 14+ arm64 / 15+ x86_64; "
                 "elsewhere pip builds it, which needs a C++20 compiler and the ANTLR 4 C++ runtime)")
    return message, hint
