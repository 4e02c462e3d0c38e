"""Every private API of a dependency that cs-posthog relies on, in one place.

pyproject.toml caps each of these dependencies below the next version that could move them, and CI
runs the suite on the lowest versions allowed too (`make test-lowest`), so a change shows up here
first. Light at import: ``cli.py`` imports this module on the ``--help`` path, so anything heavy is
imported inside the function that needs it.
"""

from __future__ import annotations

# Typer vendors Click from 0.26 (typer._click); its command classes are what `cls=` takes
from typer._click.exceptions import NoArgsIsHelpError
from typer._click.exceptions import UsageError as ClickUsageError
from typer.core import TyperArgument, TyperCommand, TyperGroup

__all__ = [
    "ClickUsageError",
    "NoArgsIsHelpError",
    "TyperArgument",
    "TyperCommand",
    "TyperGroup",
    "completion_script",
    "register_completion_shells",
]


def completion_script(*, prog_name: str, complete_var: str, shell: str) -> str:
    """The completion script Typer writes for ``shell`` (Typer's ``--show-completion``)."""
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name=prog_name, complete_var=complete_var, shell=shell)


def register_completion_shells() -> None:
    """Typer registers its shells' completion classes only for apps made with add_completion."""
    from typer._completion_classes import completion_init

    completion_init()
