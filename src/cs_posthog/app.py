"""The application object: what one invocation of cs-posthog works with, made once and handed down.

``cli.py`` makes one per command (``App.from_environ(os.environ, ...)``) and passes it to the
command; the command passes each lower layer the part it needs: the ``Paths`` to the config, the
wizard and the state, the ``SecretStore`` to whatever reads or stores a key, the ``Settings`` (region
hosts, timeouts, pacing, page size) to the API clients and the engine, the ``Output`` to whatever
talks to the user. Nothing below reads the environment or works out the paths on its own, so the
demo runs the whole program against its temporary home and sandbox by making a second App
(``App.with_settings``), without touching ``os.environ``.

The shape is pypa/hatch's ``Application``: one object per invocation, no module state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cs_posthog.output import Output
from cs_posthog.paths import Paths, get_paths
from cs_posthog.secrets import SecretStore
from cs_posthog.settings import Settings


@dataclass(frozen=True)
class App:
    out: Output
    paths: Paths
    secrets: SecretStore
    settings: Settings
    debug: bool = False  # --debug or CS_POSTHOG_DEBUG=1: debug logging, tracebacks on errors

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, debug: bool = False, json_mode: bool = False,
                     quiet: bool = False) -> App:
        """The App of an invocation: the environment read once (``Settings.from_environ``);
        ``debug`` is the --debug flag (CS_POSTHOG_DEBUG=1 turns it on too)."""
        return cls.from_settings(Settings.from_environ(environ), debug=debug, json_mode=json_mode, quiet=quiet)

    @classmethod
    def from_settings(cls, settings: Settings, *, debug: bool = False, json_mode: bool = False,
                      quiet: bool = False, out: Output | None = None) -> App:
        """An App for ``settings``: its paths (the home's, or the platform's places) and its own
        secret store. ``out`` shares an existing output sink (the demo's App writes where the
        command does)."""
        debug = debug or settings.debug
        paths = get_paths(settings.home)
        store = SecretStore(paths.secrets_file, mode=settings.secret_store,
                            env={"posthog": settings.posthog_key, "customerscore": settings.customerscore_key})
        if out is None:
            out = Output(json_mode=json_mode, quiet=quiet, debug=debug)
        return cls(out=out, paths=paths, secrets=store, settings=settings, debug=debug)

    def with_settings(self, **changes: Any) -> App:
        """Another App, for these settings changed (``home``, ``us_host``, the keys...): its own
        paths and secret store, the same output sink. This App and the environment are unchanged."""
        return App.from_settings(dataclasses.replace(self.settings, **changes), debug=self.debug, out=self.out)

    def know_keys(self) -> None:
        """Register every key this App's store could use for redaction, before anything is printed
        or validated (a key pasted into a config field, a server's error quoting a header). Never
        fails: an unreadable store is reported where it is used."""
        try:
            self.secrets.register_known()
        except Exception:
            pass
