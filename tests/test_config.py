from __future__ import annotations

import os
import stat

import pytest
import tomli_w

from cs_posthog import config as cfgmod
from cs_posthog.config import Config, Draft, Operator, PersonFilter, load_config, load_draft, save_config, save_draft
from cs_posthog.errors import ExitCode, InvalidConfigError, NotConnectedError
from helpers import env_paths, run_cli, sample_config_dict


def test_round_trip_preserves_every_field(home):
    cfg = Config.model_validate(sample_config_dict())
    path = save_config(cfg, env_paths().config_file)
    assert path == home / "config.toml"
    loaded = load_config(env_paths().config_file)
    assert loaded == cfg
    assert loaded.persons.filters[0] == PersonFilter(property="plan", operator=Operator.EQUALS, value="pro")
    assert loaded.sync.backfill_days == 30  # defaults survive a round trip
    assert loaded.version == cfgmod.CONFIG_VERSION


def test_saved_at_0600_in_a_0700_directory(home):
    save_config(Config.model_validate(sample_config_dict()), env_paths().config_file)
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(home / "config.toml").st_mode) == 0o600
    save_draft(Draft(identification={"property": "org"}), env_paths().draft_file)
    assert stat.S_IMODE(os.stat(home / "draft.toml").st_mode) == 0o600


def test_existing_loose_directory_is_tightened(home):
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    save_config(Config.model_validate(sample_config_dict()), env_paths().config_file)
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700


def test_failed_write_leaves_old_file_intact(home, monkeypatch):
    cfg = Config.model_validate(sample_config_dict())
    save_config(cfg, env_paths().config_file)
    before = (home / "config.toml").read_bytes()

    def boom(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    changed = cfg.model_copy(deep=True)
    changed.events.selected = ["only_this"]
    from cs_posthog.errors import FileError

    with pytest.raises(FileError) as info:  # the file and the OS's reason, exit 74 (disk full)
        save_config(changed, env_paths().config_file)
    assert info.value.exit_code == 74 and str(home / "config.toml") in info.value.message
    assert (home / "config.toml").read_bytes() == before
    assert [p.name for p in home.iterdir() if p.name.endswith(".tmp")] == []


def test_secrets_are_not_part_of_the_config(home):
    save_config(Config.model_validate(sample_config_dict()), env_paths().config_file)
    text = (home / "config.toml").read_text()
    assert "api_key" not in text and "phx_" not in text


def test_locked_condition_comes_first_and_once():
    data = sample_config_dict()
    data["persons"]["filters"].append({"property": "organization_id", "operator": "is_set"})
    cfg = Config.model_validate(data)
    filters = cfg.all_filters()
    assert filters[0] == PersonFilter(property="organization_id", operator=Operator.IS_SET)
    assert [f.property for f in filters] == ["organization_id", "plan", "phone"]


def test_draft_round_trip_with_missing_sections(home):
    assert load_draft(env_paths().draft_file) is None
    save_draft(Draft(events={"selected": ["a", "b", "a"]}), env_paths().draft_file)
    d = load_draft(env_paths().draft_file)
    assert d is not None and d.events.selected == ["a", "b"] and d.posthog is None


def test_missing_config_is_not_connected(home):
    with pytest.raises(NotConnectedError) as exc:
        load_config(env_paths().config_file)
    assert exc.value.exit_code == ExitCode.CONFIG


def _write(home, text: str | bytes):
    home.mkdir(parents=True, exist_ok=True)
    p = home / "config.toml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def _good_text(**changes) -> str:
    data = sample_config_dict()
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for k in parents:
            node = node[k]
        node[last] = value
    return tomli_w.dumps(data)


BROKEN = [
    # (description, file text, expected pieces of the one-line message)
    ("bad toml", "version = 1\n[posthog\nregion = 'us'\n", ["line 2", "invalid TOML"]),
    ("wrong type", _good_text(**{"posthog.project_id": "abc"}), ["posthog.project_id", "line "]),
    ("unknown key", _good_text().replace("[customerscore]\n", "[customerscore]\ncolour = \"blue\"\n"),
     ["customerscore.colour", "unknown key", "line "]),
    ("newer version", _good_text(version=99), ["version", "newer cs-posthog", "line 1"]),
    ("missing section", tomli_w.dumps({k: v for k, v in sample_config_dict().items() if k != "events"}),
     ["events", "required key is missing"]),
    ("bad operator", _good_text(**{"persons.filters": [{"property": "p", "operator": "contains", "value": "x"}]}),
     ["persons.filters[0].operator"]),
    ("value on is_set", _good_text(**{"persons.filters": [{"property": "p", "operator": "is_set", "value": "x"}]}),
     ["persons.filters[0]", "takes no value"]),
    ("http host", _good_text(**{"posthog.host": "http://eu.posthog.com"}), ["posthog.host", "only https"]),
    ("not utf-8", b"version = 1\n\xff\xfe\n", ["not UTF-8"]),
    ("bad tracker key", _good_text(**{"customerscore.tracker_key": "XX-1"}), ["customerscore.tracker_key", "CS-"]),
]


@pytest.mark.parametrize("desc,text,pieces", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_config_is_one_line_naming_file_key_and_line(home, desc, text, pieces):
    path = _write(home, text)
    with pytest.raises(InvalidConfigError) as exc:
        load_config(env_paths().config_file)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(str(path))
    for piece in pieces:
        assert piece in msg, (piece, msg)


@pytest.mark.parametrize("desc,text,pieces", BROKEN[:4], ids=[b[0] for b in BROKEN[:4]])
def test_broken_config_through_the_cli_exits_78_without_traceback(home, desc, text, pieces):
    _write(home, text)
    r = run_cli("status")
    assert r.exit_code == 78, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and str(home / "config.toml") in lines[0]
    assert lines[1].startswith("hint: ")


def test_key_line_is_found_for_nested_keys():
    text = _good_text(**{"posthog.project_id": "abc"})
    line = cfgmod.find_key_line(text, ["posthog", "project_id"])
    assert text.splitlines()[line - 1].startswith("project_id")


def test_paths_default_to_platform_dirs(monkeypatch):
    monkeypatch.delenv("CS_POSTHOG_HOME")
    p = env_paths()
    assert p.config_file.name == "config.toml" and "cs-posthog" in str(p.config_dir)
    assert "cs-posthog" in str(p.state_dir)


def test_identification_fields_given_as_none_are_left_out_not_a_crash():
    from cs_posthog.config import Identification

    group = Identification(kind="group", property=None, group_type=None, group_type_index=1)
    assert group.is_group and group.group_property is None and group.describe() == "group type 1 group key"
    person = Identification(property="org", group_type=None, group_type_index=None)
    assert person.person_property == "org"
    with pytest.raises(ValueError, match="needs `property`"):
        Identification(property=None)
    with pytest.raises(ValueError, match="group_type_index"):
        Identification(kind="group", group_type="company")
