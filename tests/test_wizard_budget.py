"""The wizard's live count and preview stay inside PostHog's query budget: one query per settled
input, none while the budget is spent (the prompt says "paused" and never waits for it), and the
count comes by itself once the budget has room.

The budget is a real ``Pacer`` (the one a ``PostHogClient`` paces ``/query/`` with), filled up."""

from __future__ import annotations

import time

from cs_posthog.config import Draft, Identification, PostHogSettings, Region
from cs_posthog.http import Pacer
from cs_posthog.output import Output
from cs_posthog.wizard.context import WizardContext
from helpers import wizard_parts
from wizard_fakes import ENTER, FakeSource, piped_keys, sample_persons


def spent_pacer(per_window: int, window_s: float) -> Pacer:
    pacer = Pacer([(per_window, window_s)], margin=0.0)
    for _ in range(per_window):
        pacer.acquire()
    return pacer


class BudgetSource(FakeSource):
    """The fake source with a PostHog query budget: each count or preview takes a slot of ``pacer``."""

    def __init__(self, pacer: Pacer, per_hour: int = 120, **kw) -> None:
        kw.setdefault("events", ["e"])
        kw.setdefault("volumes", {})
        kw.setdefault("persons", sample_persons())
        super().__init__(**kw)
        self.pacer = pacer
        self.per_hour = per_hour

    def query_wait(self) -> float:
        return self.pacer.delay()

    def query_budget(self) -> int:
        return self.per_hour

    def count_persons(self, filters):
        self.pacer.acquire()
        return super().count_persons(filters)

    def preview_persons(self, filters, extra_columns=()):
        self.pacer.acquire()
        return super().preview_persons(filters, extra_columns)


def test_live_count_pauses_while_the_budget_is_spent_and_resumes_by_itself():
    from cs_posthog.wizard.ui import LiveCount, budget_of

    pacer = spent_pacer(3, 1.5)
    src = BudgetSource(pacer)
    counted: list[int] = []

    def count(arg):
        counted.append(arg)
        pacer.acquire()
        return arg * 10

    live = LiveCount(count, delay=0.05, budget=budget_of(src), render=lambda n: f"{n:,} persons")
    t0 = time.monotonic()
    live.request(7)
    assert live.wait(5) is None and time.monotonic() - t0 < 1.0  # nobody waits for the budget
    text = live.plain()
    assert text.startswith("counts paused: PostHog query budget (120/hour) — resumes in ")
    assert text.endswith(" s") and counted == []
    deadline = time.monotonic() + 5
    while live.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live.plain() == "70 persons" and counted == [7]  # counted once the window had room


def test_live_count_asks_once_per_settled_input_and_remembers_answers():
    from cs_posthog.wizard.ui import LiveCount

    counted: list[str] = []

    def count(arg):
        counted.append(arg)
        return len(arg)

    live = LiveCount(count, delay=0.05)
    for text in ("p", "pr", "pro"):  # typed quickly: one query, for what was settled on
        live.request(text)
    assert live.wait(5) == 3
    live.request("free")
    assert live.wait(5) == 4
    live.request("pro")  # back to a value already counted: no query
    assert live.wait(5) == 3
    assert counted == ["pro", "free"] and live.queries == 2


def persons_ctx(src) -> WizardContext:
    settings = PostHogSettings(region=Region.EU, host="https://eu.posthog.com", project_id=101, project_name="Acme")
    draft = Draft(posthog=settings, identification=Identification(property="organization_id"))
    ctx = WizardContext(out=Output(), draft=draft, make_source=lambda s, k: src, **wizard_parts())
    ctx.prefill.secrets["posthog"] = ("phx_test", "test")
    return ctx


def test_persons_step_says_counts_and_preview_are_paused_instead_of_waiting(home, capsys):
    from cs_posthog.wizard.step_persons import ask_persons

    src = BudgetSource(spent_pacer(2, 30.0))
    t0 = time.monotonic()
    with piped_keys() as keys:
        keys.send_text(ENTER)  # "Save configuration"
        settings = ask_persons(persons_ctx(src))
    assert settings.filters == [] and time.monotonic() - t0 < 10  # not the 30 s the budget needs
    err = capsys.readouterr().err
    assert "preview paused: PostHog query budget (120/hour) — resumes in" in err
    assert "Preview (up to 5 matching Persons)" not in err
    assert "persons will be synced" not in err  # no count was asked, none is claimed
    assert [c for c in src.calls if c[0] in ("count_persons", "preview_persons")] == []


def test_persons_step_with_room_counts_and_previews_once(home, capsys):
    from cs_posthog.wizard.step_persons import ask_persons

    src = BudgetSource(Pacer([(100, 60.0)]))
    with piped_keys() as keys:
        keys.send_text(ENTER)
        ask_persons(persons_ctx(src))
    err = capsys.readouterr().err
    assert "Preview (up to 5 matching Persons)" in err and "persons will be synced." in err
    assert [c[0] for c in src.calls].count("count_persons") == 1
    assert [c[0] for c in src.calls].count("preview_persons") == 1
