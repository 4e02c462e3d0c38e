"""`cs-posthog schedule`: the crontab line for regular syncs; ``--install`` / ``--remove``.

The line runs ``cs-posthog sync --quiet`` (silent unless something needs attention) and appends
its output to the log file. It ends with a marker comment naming this installation's config dir,
so that ``--install`` replaces our own line (never duplicates it) and leaves other installations
and the user's other lines alone.

The crontab program is ``crontab`` (``crontab -l`` / ``crontab -``); env ``CS_POSTHOG_CRONTAB``
(``app.settings.crontab``) points at another program with the same interface (tests use a fake one,
never the real crontab).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

from cs_posthog.errors import ConfigError, CsPosthogError, ExitCode, UsageError
from cs_posthog.paths import ensure_private_dir
from cs_posthog.secrets import SPECS
from cs_posthog.settings import HOME_ENV

if TYPE_CHECKING:
    from cs_posthog.app import App

MARKER = "# cs-posthog sync:"

INTERVALS = {
    "15m": "*/15 * * * *",
    "30m": "*/30 * * * *",
    "1h": "7 * * * *",
    "2h": "7 */2 * * *",
    "3h": "7 */3 * * *",
    "6h": "7 */6 * * *",
    "12h": "7 */12 * * *",
    "1d": "7 3 * * *",
}
ALIASES = {"hourly": "1h", "daily": "1d", "60m": "1h", "24h": "1d", "15min": "15m", "30min": "30m"}


def cron_expr(every: str) -> str:
    key = ALIASES.get(every.strip().lower(), every.strip().lower())
    if key not in INTERVALS:
        raise UsageError(
            f"--every: {every!r} is not an interval I can schedule",
            hint="Choose one of " + ", ".join(INTERVALS) + ".",
        )
    return INTERVALS[key]


def marker(app: App) -> str:
    return f"{MARKER} {app.paths.config_dir}"


def command_words() -> list[str]:
    """How cron should start this cs-posthog: the console script beside this Python, else
    ``python -m cs_posthog``."""
    exe = Path(sys.executable)
    script = exe.parent / "cs-posthog"
    if script.exists():
        return [str(script)]
    found = shutil.which("cs-posthog")
    if found:
        return [str(Path(found).resolve())]
    return [str(exe), "-m", "cs_posthog"]


def _cron_escape(text: str) -> str:
    return text.replace("%", "\\%")  # a bare % ends the command in a crontab line


def _check_one_line(what: str, text: str) -> None:
    """A crontab line is one line: a line break (or another control character) in a path would end it
    and start another job with the rest. Refused, naming where it is (78: the environment to fix)."""
    bad = next((c for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
    if bad is not None:
        shown = text.encode("unicode_escape").decode("ascii")
        raise ConfigError(
            f"the {what} contains a control character ({bad.encode('unicode_escape').decode('ascii')}): "
            f"{shown}; it cannot go into a crontab line",
            hint="Use a directory whose path has no line breaks or control characters (CS_POSTHOG_HOME), "
            "or schedule `cs-posthog sync --quiet` by hand.",
        )


def cron_line(app: App, every: str = "1h") -> str:
    paths = app.paths
    words = [*command_words(), "sync", "--quiet"]
    _check_one_line(f"directory of this installation ({HOME_ENV} or the config dir)", str(paths.config_dir))
    _check_one_line("log file's path", str(paths.log_file))
    _check_one_line(f"{HOME_ENV} path", app.settings.home or "")
    _check_one_line("path of the cs-posthog program", " ".join(words))
    cmd = " ".join(shlex.quote(w) for w in words)
    env = ""
    home = app.settings.home
    if home:
        env = f"{HOME_ENV}={shlex.quote(str(Path(home).expanduser().resolve()))} "
    log = shlex.quote(str(paths.log_file))
    return _cron_escape(f"{cron_expr(every)} {env}{cmd} >> {log} 2>&1 {marker(app)}")


# --- crontab I/O -------------------------------------------------------------------------------
def _crontab_program(app: App) -> list[str]:
    prog = app.settings.crontab
    path = shutil.which(prog)
    if path is None:
        err = CsPosthogError(
            f"no crontab program found ({prog!r})",
            hint="Install cron, or add the line printed by `cs-posthog schedule` to your scheduler by hand.",
        )
        err.exit_code = ExitCode.CONFIG
        raise err
    return [path]


def read_crontab(app: App) -> str:
    """The user's crontab ("" when there is none)."""
    proc = subprocess.run([*_crontab_program(app), "-l"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        if "no crontab" in (proc.stderr or "").lower():
            return ""
        raise CsPosthogError(f"`crontab -l` failed: {(proc.stderr or '').strip() or proc.returncode}")
    return proc.stdout


def write_crontab(app: App, text: str) -> None:
    proc = subprocess.run([*_crontab_program(app), "-"], input=text, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CsPosthogError(f"`crontab -` failed: {(proc.stderr or '').strip() or proc.returncode}")


def our_lines(app: App, text: str) -> list[str]:
    """Our line(s) in a crontab: those ending with our marker as it is written there (a % escaped)."""
    m = _cron_escape(marker(app))
    return [ln for ln in text.splitlines() if ln.rstrip().endswith(m)]


def installed_line(app: App) -> str | None:
    """This installation's line in the crontab, or None (never raises: for ``status``)."""
    try:
        lines = our_lines(app, read_crontab(app))
    except Exception:
        return None
    return lines[0] if lines else None


def install_line(app: App, line: str) -> str:
    """Add ``line``, replacing a previous line of ours. Returns "installed", "replaced" or "unchanged"."""
    current = read_crontab(app)
    ours = our_lines(app, current)
    if ours == [line]:
        return "unchanged"
    kept = [ln for ln in current.splitlines() if ln not in ours]
    while kept and not kept[-1].strip():
        kept.pop()
    write_crontab(app, "\n".join([*kept, line]) + "\n")
    return "replaced" if ours else "installed"


def remove_lines(app: App) -> int:
    """Take our line(s) out. Returns how many were removed."""
    current = read_crontab(app)
    ours = our_lines(app, current)
    if not ours:
        return 0
    kept = [ln for ln in current.splitlines() if ln not in ours]
    write_crontab(app, "\n".join(kept) + ("\n" if kept else ""))
    return len(ours)


# --- the command -------------------------------------------------------------------------------
def run(app: App, *, every: str = "1h", install: bool = False, remove: bool = False) -> None:
    out = app.out
    if remove:
        n = remove_lines(app)
        if n:
            out.success("Removed the scheduled sync from your crontab.")
        else:
            out.info("No scheduled sync of this installation was in your crontab: nothing to remove.")
        return
    line = cron_line(app, every)
    if not install:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        out.info("[dim]Add it with `cs-posthog schedule --install` (or paste it into `crontab -e`).[/dim]")
        _warn_about_keys(app)
        return
    paths = app.paths
    ensure_private_dir(paths.log_file.parent)
    result = install_line(app, line)
    if result == "unchanged":
        out.success("Already scheduled with this line; crontab unchanged.")
    elif result == "replaced":
        out.success("Replaced the scheduled sync in your crontab.")
    else:
        out.success("Scheduled: cron will run `cs-posthog sync --quiet` " + _describe(every) + ".")
    out.info(f"[dim]Log: {paths.log_file}[/dim]")
    if not paths.config_file.exists():
        out.warn("not connected yet: the scheduled sync will fail until you run `cs-posthog connect`")
    _warn_about_keys(app)


def _describe(every: str) -> str:
    key = ALIASES.get(every.strip().lower(), every.strip().lower())
    return {"15m": "every 15 minutes", "30m": "every 30 minutes", "1h": "every hour", "1d": "once a day"}.get(
        key, f"every {key[:-1]} hours"
    )


def _warn_about_keys(app: App) -> None:
    """Cron has neither the shell's environment nor, usually, the desktop keyring."""
    out = app.out
    for name in ("posthog", "customerscore"):
        try:
            found = app.secrets.find(name)
        except Exception:
            continue
        if found is None:
            continue
        if found.source == "env":
            out.warn(
                f"the {SPECS[name].label} comes from ${SPECS[name].env}, which cron will not have: "
                "store it with `cs-posthog edit credentials` (set CS_POSTHOG_SECRET_STORE=file on servers)"
            )
        elif found.source == "keyring":
            out.warn(
                f"the {SPECS[name].label} is in the OS keyring, which cron often cannot reach: if the scheduled sync "
                "exits 78, store keys in the file instead "
                "(CS_POSTHOG_SECRET_STORE=file, then `cs-posthog edit credentials`)"
            )
