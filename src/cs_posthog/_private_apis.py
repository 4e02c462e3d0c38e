"""Every private API of a dependency that cs-posthog relies on, in one place.

pyproject.toml caps each of these dependencies below the next version that could move them, and CI
runs the suite on the lowest versions allowed too (`make test-lowest`), so a change shows up here
first. Light at import: ``cli.py`` imports this module on the ``--help`` path, so anything heavy is
imported inside the function that needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Typer vendors Click from 0.26 (typer._click); its command classes are what `cls=` takes
from typer._click.exceptions import NoArgsIsHelpError
from typer._click.exceptions import UsageError as ClickUsageError
from typer._click.globals import get_current_context
from typer._completion_classes import completion_init
from typer._completion_shared import get_completion_script
from typer.core import TyperArgument, TyperCommand, TyperGroup

__all__ = [
    "ClickUsageError",
    "NoArgsIsHelpError",
    "TyperArgument",
    "TyperCommand",
    "TyperGroup",
    "completion_script",
    "get_current_context",
    "inquirer_control_class",
    "register_completion_shells",
    "set_checkbox_indicators",
    "wrap_prompt_toolkit_writes",
]


def completion_script(*, prog_name: str, complete_var: str, shell: str) -> str:
    """The completion script Typer writes for ``shell`` (Typer's ``--show-completion``)."""
    return get_completion_script(prog_name=prog_name, complete_var=complete_var, shell=shell)


def register_completion_shells() -> None:
    """Typer registers its shells' completion classes only for apps made with add_completion."""
    completion_init()


# --- questionary and prompt_toolkit (the wizard) ----------------------------------------------------
def inquirer_control_class() -> type:
    """questionary's control behind select and checkbox prompts (its choices and selection)."""
    from questionary.prompts.common import InquirerControl  # local: heavy; cli.py loads this module on the --help path

    return InquirerControl


def set_checkbox_indicators(selected: str, unselected: str) -> None:
    """The marks questionary draws for ticked and unticked choices (module constants)."""
    import questionary.prompts.common as q_common  # local: heavy; cli.py loads this module on the --help path

    q_common.INDICATOR_SELECTED = selected  # module constants, by the library's design
    q_common.INDICATOR_UNSELECTED = unselected


def wrap_prompt_toolkit_writes(change: Callable[[Any, str], str]) -> None:
    """Every text prompt_toolkit writes to the terminal passes through ``change(stdout, data)``
    first (its module-level ``flush_stdout``, used by the vt100 and plain-text outputs)."""
    # local: heavy; cli.py loads this module on the --help path
    import prompt_toolkit.output.plain_text as pt_plain
    import prompt_toolkit.output.vt100 as pt_vt100

    for module in (pt_vt100, pt_plain):
        flush = module.flush_stdout  # imported there by name from prompt_toolkit.output.flush_stdout

        def changed_flush(stdout: Any, data: str, _flush: Any = flush) -> None:
            _flush(stdout, change(stdout, data))

        module.flush_stdout = changed_flush  # type: ignore[attr-defined]  # a name imported, not declared
