"""The wizard's building blocks: the --filter grammar, the cached completer, the debounced live
count and the checklist's live counter."""

from __future__ import annotations

import threading
import time

import pytest
from wizard_fakes import CTRL_A, DOWN, ENTER, TAB, UP, piped_keys

from cs_posthog.config import Operator, PersonFilter

# --- --filter grammar ------------------------------------------------------------------------
F = PersonFilter


@pytest.mark.parametrize(
    "rule, expected",
    [
        ("plan = pro", F(property="plan", operator=Operator.EQUALS, value="pro")),
        ("plan=pro", F(property="plan", operator=Operator.EQUALS, value="pro")),
        ("plan != free", F(property="plan", operator=Operator.NOT_EQUALS, value="free")),
        ("email is set", F(property="email", operator=Operator.IS_SET)),
        ("phone is not set", F(property="phone", operator=Operator.IS_NOT_SET)),
        ("Phone IS NOT SET", F(property="Phone", operator=Operator.IS_NOT_SET)),
        ("plan tier = gold", F(property="plan tier", operator=Operator.EQUALS, value="gold")),
        ("it's = it's complicated", F(property="it's", operator=Operator.EQUALS, value="it's complicated")),
        ("url = https://x.test/?a=b", F(property="url", operator=Operator.EQUALS, value="https://x.test/?a=b")),
        ('plan = ""', F(property="plan", operator=Operator.EQUALS, value="")),
        ('plan tier = "Gold "', F(property="plan tier", operator=Operator.EQUALS, value="Gold ")),
        ('"a = b" = c', F(property="a = b", operator=Operator.EQUALS, value="c")),
        ('"a = b" is set', F(property="a = b", operator=Operator.IS_SET)),
        ("seats != 10", F(property="seats", operator=Operator.NOT_EQUALS, value="10")),
        ("status = 'is set'", F(property="status", operator=Operator.EQUALS, value="is set")),
    ],
)
def test_filter_rules(rule, expected):
    from cs_posthog.wizard.filters import format_filter, parse_filter

    parsed = parse_filter(rule)
    assert parsed == expected
    assert parse_filter(format_filter(parsed)) == parsed  # round trip through the printed form


@pytest.mark.parametrize(
    "rule, why",
    [
        ("", "empty"),
        ("plan", "no operator"),
        ("plan ~ pro", "no operator"),
        ("= pro", "property name is missing"),
        ("plan =", "value is missing"),
        (" is set", "property name is missing"),
        ('plan = "pro', "not closed"),
    ],
)
def test_filter_rules_refused_with_a_reason(rule, why):
    from cs_posthog.wizard.filters import FilterSyntaxError, parse_filter

    with pytest.raises(FilterSyntaxError, match=why):
        parse_filter(rule)


# --- completer -------------------------------------------------------------------------------
def test_name_completer_min_prefix_cache_and_ranking():
    from cs_posthog.wizard.ui import NameCompleter

    searches: list[str] = []
    names = ["organization_id", "$initial_os", "org_name", "plan", "plan tier", "company_org"]

    def search(text):
        searches.append(text)
        return [n for n in names if text.lower() in n.lower()]

    c = NameCompleter(search, min_prefix=2)
    assert c.completions("o", requested=False) == []  # below the prefix: no request
    assert searches == []
    assert c.completions("or", requested=False) == ["org_name", "organization_id", "company_org"]
    assert c.completions("orga", requested=False) == ["organization_id"]  # narrowed locally
    assert searches == ["or"]
    # Tab asks even below the prefix; names starting with the text first
    assert c.completions("p", requested=True) == ["plan", "plan tier", "company_org"]
    assert searches == ["or", "p"]


def test_name_completer_never_breaks_typing_on_errors():
    from cs_posthog.errors import UnavailableError
    from cs_posthog.wizard.ui import NameCompleter

    def search(text):
        raise UnavailableError("PostHog is down")

    assert NameCompleter(search).completions("plan", requested=True) == []


def test_threaded_completion_in_a_prompt_accepts_a_custom_name():
    import questionary

    from cs_posthog.wizard.ui import NameCompleter, threaded

    gate = threading.Event()

    def slow_search(text):
        gate.wait(5)  # the network is slow: typing must not wait for it
        return ["organization_id"]

    c = NameCompleter(slow_search)
    with piped_keys() as keys:
        keys.send_text("my_custom_prop" + ENTER)
        t0 = time.monotonic()
        answer = questionary.text("Property:", completer=threaded(c), complete_while_typing=True).unsafe_ask()
        elapsed = time.monotonic() - t0
    gate.set()
    assert answer == "my_custom_prop"
    assert elapsed < 3


def test_tab_completes_a_name_with_spaces():
    import questionary

    from cs_posthog.wizard.ui import NameCompleter, threaded

    c = NameCompleter(lambda text: ["plan tier", "plan"])
    with piped_keys() as keys:
        # a Tab in the same burst as the typing would arrive before the completion thread: pause
        keys.send_text("plan t")
        threading.Timer(0.3, keys.send_text, args=("\t",)).start()
        threading.Timer(0.8, keys.send_text, args=(ENTER,)).start()
        answer = questionary.text("Property:", completer=threaded(c)).unsafe_ask()
    assert answer == "plan tier"


# --- live count ------------------------------------------------------------------------------
def test_live_count_is_debounced_and_shows_only_the_newest_answer():
    from cs_posthog.wizard.ui import LiveCount

    counted: list[int] = []

    def count(arg):
        counted.append(arg)
        return arg * 10

    live = LiveCount(count, delay=0.05, render=lambda n: f"{n:,} persons will be synced")
    assert live.plain() == "counting…"
    for i in range(1, 6):  # five quick changes: one count
        live.request(i)
    assert live.wait(5) == 50
    assert counted == [5]
    assert live.plain() == "50 persons will be synced"
    live.request(200)
    assert live.plain() == "50 persons will be synced (updating…)"
    live.wait(5)
    assert live.plain() == "2,000 persons will be synced"


def test_live_count_error_is_shown_not_raised():
    from cs_posthog.errors import UnavailableError
    from cs_posthog.wizard.ui import LiveCount

    def count(arg):
        raise UnavailableError("PostHog did not answer")

    live = LiveCount(count, delay=0.01)
    live.request(None)
    live.wait(5)
    assert live.plain() == "could not count: PostHog did not answer"


def test_live_count_redraws_the_running_prompt():
    """The prompt is drawn while the count runs ("counting…"); when the count ends, the prompt is
    drawn again with it, without a key press. Ordered by events, not sleeps: the count answers only
    once "counting…" has been drawn, and Enter is pressed only once the count has been drawn (or
    after 10 s without that redraw, and the test fails)."""
    import questionary

    from cs_posthog.wizard.ui import LiveCount, add_footer

    seen: list[str] = []
    drawn_counting = threading.Event()
    drawn_count = threading.Event()

    def count(arg):
        drawn_counting.wait(10)
        return 1248

    def footer():
        plain = live.plain()
        seen.append(plain)
        fragments = live.text()  # remembers the running prompt, to redraw it later
        if plain == "counting…":
            drawn_counting.set()
        elif plain == "1,248 persons will be synced":
            drawn_count.set()
        return fragments

    live = LiveCount(count, delay=0.01)
    with piped_keys() as keys:
        q = questionary.select("Next?", choices=["Save", "Add"])
        add_footer(q, footer, index=2)
        live.request("x")

        def answer_later():
            drawn_count.wait(10)
            keys.send_text(ENTER)

        threading.Thread(target=answer_later, daemon=True).start()
        assert q.unsafe_ask() == "Save"
    assert drawn_counting.is_set(), seen
    assert drawn_count.is_set(), seen  # drawn again, without a key press
    assert seen.index("1,248 persons will be synced") > seen.index("counting…")


# --- checklist counter -----------------------------------------------------------------------
def test_checklist_counter_follows_selection_and_search():
    from cs_posthog.wizard.ui import checklist, inquirer_control

    q = checklist("Events", [("a", "a", True), ("purchase", "purchase", False), ("refund", "refund", False)],
                  noun="events selected")
    ic = inquirer_control(q)
    footer = q.application.layout.container.children[2].content.content  # the counter's control

    def text():
        return "".join(t for _, t in footer.text())

    assert text() == "  1 of 3 events selected"
    ic.selected_options.append("refund")
    assert text() == "  2 of 3 events selected"
    ic.add_search_character("u")
    assert text() == "  2 of 3 events selected · 2 match 'u'"


def test_checklist_ctrl_a_selects_all_then_none():
    from cs_posthog.wizard.ui import checklist

    with piped_keys() as keys:
        keys.send_text(CTRL_A + CTRL_A + DOWN + " " + ENTER)
        q = checklist("Events", [("a", "a", False), ("b", "b", False)])
        assert q.unsafe_ask() == ["b"]


def test_checklist_ctrl_a_acts_on_the_search_matches_only():
    """After searching, Ctrl-A ticks what the person sees, not every hidden choice too."""
    from cs_posthog.wizard.ui import checklist

    choices = [("invoice_paid", "invoice_paid", False), ("invoice_failed", "invoice_failed", False),
               ("$pageview", "$pageview", False), ("report_created", "report_created", True)]
    with piped_keys() as keys:
        keys.send_text("invoice" + CTRL_A + ENTER)
        q = checklist("Events", choices)
        assert sorted(q.unsafe_ask()) == ["invoice_failed", "invoice_paid", "report_created"]
    with piped_keys() as keys:
        # all matches ticked: Ctrl-A unticks them and leaves the others alone
        keys.send_text("invoice" + CTRL_A + ENTER)
        q = checklist("Events", [(v, t, v != "$pageview") for v, t, _ in choices])
        assert q.unsafe_ask() == ["report_created"]
    with piped_keys() as keys:
        keys.send_text(CTRL_A + ENTER)  # no search: every choice
        q = checklist("Events", choices)
        assert len(q.unsafe_ask()) == 4


def test_checklist_says_when_the_list_scrolls():
    from cs_posthog.wizard.ui import checklist, inquirer_control

    q = checklist("Events", [(f"e{i}", f"e{i}", False) for i in range(20)], noun="events selected", max_rows=12)
    footer = q.application.layout.container.children[2].content.content

    def text():
        return "".join(t for _, t in footer.text())

    assert text() == "  0 of 20 events selected · 8 more below, ↑↓ to scroll"
    inquirer_control(q).add_search_character("1")  # e1, e10..e19: 11 rows fit
    assert text() == "  0 of 20 events selected · 11 match '1'"


# --- issue 12 item 7: search with spaces, Space/Tab, the scroll hint, the codename note ------------
BACKSPACE = "\x7f"
CTRL_U = "\x15"


def footer_texts(q) -> list[str]:
    """The lines under the list as drawn now: the counter, the keys, the note (when shown)."""
    from prompt_toolkit.layout import ConditionalContainer, Window
    from prompt_toolkit.layout.controls import FormattedTextControl

    texts = []
    for child in q.application.layout.container.children[2:]:
        if isinstance(child, ConditionalContainer) and isinstance(child.content, Window) \
                and isinstance(child.content.content, FormattedTextControl) and child.filter():
            texts.append("".join(t for _, t in child.content.content.text()))
    return texts


def drive(make, keys: list[str]):
    """Ask the checklist ``make()`` builds, one key per drawn screen: after each screen is drawn
    (prompt_toolkit's after_render), what it shows is recorded and the next key is sent."""
    from cs_posthog.wizard import ui

    records: list[dict] = []
    with piped_keys() as inp:
        q = make()
        ic = ui.inquirer_control(q)
        window = next(w for w in q.application.layout.find_all_windows() if w.content is ic)
        pending = list(keys)

        def after(_app):
            info = window.render_info
            if not ic.is_answered and info is not None:
                records.append({"footer": footer_texts(q), "first": info.first_visible_line(),
                                "last": info.last_visible_line(), "pointer": ic.pointed_at,
                                "search": ic.search_filter})
            if pending:
                inp.send_text(pending.pop(0))

        q.application.after_render += after
        answer = q.unsafe_ask()
    return answer, records


EVENTS = ["invoice_paid", "Checkout Completed", "checkout_started", "order completed", "$pageview", "purchase"]


def events_checklist(**kw):
    from cs_posthog.wizard.ui import checklist

    return lambda: checklist("Events", [(n, n, False) for n in EVENTS], noun="events selected", **kw)


def test_checklist_search_takes_a_space_and_tab_ticks_the_match():
    answer, records = drive(events_checklist(), [*"Checkout Completed", TAB, ENTER])
    assert answer == ["Checkout Completed"]
    assert records[-1]["search"] == "Checkout Completed"
    assert records[-1]["footer"][0] == "  1 of 6 events selected · 1 match 'Checkout Completed'"


def test_checklist_space_types_while_searching_and_toggles_otherwise():
    # no search: Space toggles the row at the pointer
    answer, _ = drive(events_checklist(), [" ", ENTER])
    assert answer == ["invoice_paid"]
    # while the search is typed, Space is part of it: "order " finds "order completed", nothing ticked
    answer, records = drive(events_checklist(), [*"order ", ENTER])
    assert answer == [] and records[-1]["search"] == "order "
    assert records[-1]["footer"][0].endswith("· 1 match 'order '")
    assert records[-1]["footer"][1].startswith("  Space types a space · Tab toggles")
    # after an arrow key the search is done being typed: Space toggles again, and says so
    answer, records = drive(events_checklist(), [*"checkout", DOWN, " ", ENTER])
    assert answer == ["checkout_started"]
    assert records[-1]["search"] == "checkout"
    assert records[-1]["footer"][1].startswith("  Space or Tab toggles · type to search")
    # a letter starts typing again; Backspace keeps editing the search; Tab toggles in any case
    answer, records = drive(events_checklist(), [*"checkout", DOWN, "s", BACKSPACE, " ", TAB, ENTER])
    assert records[-1]["search"] == "checkout "
    assert answer == ["Checkout Completed"]


def test_checklist_ctrl_u_clears_the_search():
    answer, records = drive(events_checklist(), [*"order ", CTRL_U, " ", ENTER])
    assert records[-1]["search"] is None
    assert records[-1]["footer"][0] == "  1 of 6 events selected"
    assert answer == ["invoice_paid"]  # the whole list again, the pointer at its top: Space toggles


def test_checklist_tab_toggles_one_row_not_every_hidden_one():
    """questionary binds Tab (Ctrl-I) to "invert every choice", hidden ones too."""
    answer, _ = drive(events_checklist(), [*"purch", TAB, TAB, TAB, ENTER])
    assert answer == ["purchase"]


def test_checklist_scroll_hint_follows_the_pointer_and_matches_the_window():
    from cs_posthog.wizard.ui import checklist

    n, rows = 20, 12

    def make():
        return checklist("Events", [(f"e{i}", f"e{i}", False) for i in range(n)], noun="events selected",
                         max_rows=rows)

    keys = [DOWN] * 14 + [UP] * 15 + [UP] + [ENTER]  # down past the window, back to the top, wrap to the end
    _, records = drive(make, keys)
    seen = []
    for r in records:
        first, last = r["first"], r["last"]
        assert first <= r["pointer"] <= last  # the pointer is in view
        above, below = first, n - 1 - last
        hint = ", ".join(([f"{above} more above"] if above else []) + ([f"{below} more below"] if below else []))
        assert r["footer"][0] == f"  0 of {n} events selected · {hint}, ↑↓ to scroll", r
        seen.append((above, below))
    assert (0, 8) in seen and (1, 7) in seen and (3, 5) in seen and (8, 0) in seen  # it moved both ways


def test_checklist_codename_note_for_odd_names_only_once():
    from cs_posthog.wizard.step_events import codename_note

    # snake_case names: no note
    answer, records = drive(events_checklist(note=codename_note), [" ", DOWN, DOWN, " ", ENTER])
    assert answer == ["invoice_paid", "checkout_started"]
    assert all(len(r["footer"]) == 2 for r in records)  # counter and keys, no third line
    # a name with capitals and a space, then a $-prefixed one: one line naming both
    answer, records = drive(events_checklist(note=codename_note), [DOWN, " ", DOWN, DOWN, DOWN, " ", ENTER])
    assert answer == ["Checkout Completed", "$pageview"]
    notes = [r["footer"][2] for r in records if len(r["footer"]) == 3]
    assert notes, records
    assert all(len(line) <= 80 and line.startswith("  ") for line in notes[-1].split("\n"))  # wrapped whole
    last = " ".join(notes[-1].split())
    assert last == ('Customerscore keeps "Checkout Completed", "$pageview" only if a metric\'s codename is '
                    "exactly the event name, spaces, capitals and $ included.")
    assert codename_note(["invoice_paid", "purchase"]) is None
    assert codename_note(["A", "b c", "$d", "e"]).startswith('Customerscore keeps "A", "b c" and 1 more only')


def test_checklist_lines_under_the_list_break_between_words_at_60_columns():
    from prompt_toolkit.application import create_app_session
    from prompt_toolkit.data_structures import Size
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    class Narrow(DummyOutput):
        def get_size(self) -> Size:
            return Size(rows=30, columns=60)

    from cs_posthog.wizard.ui import checklist

    words = "Space or Tab toggles · type to search · Ctrl-A all/none · Enter confirms".split()
    with create_pipe_input() as inp, create_app_session(input=inp, output=Narrow()):
        q = checklist("Events", [(f"Event Number {i}", f"Event Number {i}", True) for i in range(30)],
                      noun="events selected")
        drawn: list[list[str]] = []

        def after(_app):  # what the running prompt drew, at its width
            if not drawn:
                drawn.append(footer_texts(q))
                inp.send_text(ENTER)

        q.application.after_render += after
        q.unsafe_ask()
    texts = drawn[0]
    assert len(texts) == 2  # the counter, the keys
    for text in texts:
        lines = text.split("\n")
        assert all(len(line) <= 60 and line.startswith("  ") for line in lines), lines
    assert texts[1].split() == words  # every word whole, in order
