"""check_credentials / raise_for_check against the sandbox's US and EU PostHog over real HTTP."""

from __future__ import annotations

import pytest

from cs_posthog.errors import (
    AuthError,
    ExitCode,
    MissingScopesError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from cs_posthog.posthog.credentials import CredentialCheck, check_credentials, raise_for_check
from helpers import env_settings
from posthog_testlib import Intercept, dead_url, posthog_error, route_count, sandbox_stats

pytest_plugins = ["conftest_posthog"]

CURRENT = "GET /api/personal_api_keys/{id}/"


def refuse_current_in(base_url: str):
    """Answer ``@current`` in one region as servers that need a scope for it do (PostHog's body
    shape); the other region's sandbox still answers its own 401."""
    host = base_url.split("//", 1)[1]

    def rule(request):
        if request.url.path == "/api/personal_api_keys/@current/" and request.url.netloc.decode() == host:
            return posthog_error(403, "authentication_error", "permission_denied",
                                 "API key missing required scope 'personal_api_key:read'")
        return None

    return rule


def totals(sb) -> tuple[int, int]:
    return sandbox_stats(sb.info["posthog_us"])["total"], sandbox_stats(sb.info["posthog_eu"])["total"]


def test_key_valid_only_in_eu_is_found_there(ph_env):
    info = ph_env.info
    us_before = sandbox_stats(info["posthog_us"])
    check = check_credentials(info["api_key"], info["project_id"], settings=env_settings())
    us_after = sandbox_stats(info["posthog_us"])
    assert check.ok and check.problem is None
    assert (check.key_valid, check.region, check.host) == (True, "eu", info["posthog_eu"])
    assert (check.project_found, check.project_accessible) == (True, True)
    assert (check.project_name, check.timezone) == ("Sandbox web app", "Europe/Prague")
    assert check.missing_scopes == [] and check.scopes_source == "current_key"
    assert check.tried == ["us", "eu"]
    # US was asked too, and refused the key as PostHog does for another region's key
    assert route_count(us_after, CURRENT, "401") - route_count(us_before, CURRENT, "401") == 1
    raise_for_check(check)  # nothing to raise


def test_key_valid_in_neither_region(ph_env):
    info = ph_env.info
    made_up = "phx_" + "Zq7" * 12  # right shape, unknown everywhere (built at run time)
    check = check_credentials(made_up, info["project_id"], settings=env_settings())
    assert not check.ok and not check.key_valid and not check.unreachable
    assert check.region is None and check.tried == ["us", "eu"]
    assert check.problem == ("the API key is not valid in PostHog US or EU Cloud "
                             "(mistyped, revoked, or from another PostHog)")
    with pytest.raises(AuthError) as info_:
        raise_for_check(check)
    assert info_.value.exit_code == ExitCode.NOPERM and "Personal API keys" in info_.value.hint
    assert "\n" not in info_.value.message


def test_a_project_token_is_named_as_such(ph_env):
    check = check_credentials("phc_" + "x" * 40, ph_env.info["project_id"], settings=env_settings())
    assert not check.key_valid and "project API key (phc_" in check.problem
    with pytest.raises(AuthError) as info:
        raise_for_check(check)
    assert "starts with phx_" in info.value.hint


def test_a_url_naming_a_region_asks_that_region_only(ph_env):
    info = ph_env.info
    us_before, eu_before = totals(ph_env)
    check = check_credentials(info["api_key"], f"{info['posthog_eu']}/project/{info['project_id']}/insights",
                              settings=env_settings())
    us_after, eu_after = totals(ph_env)
    assert check.ok and check.region == "eu" and check.tried == ["eu"]
    assert us_after == us_before and eu_after > eu_before



def test_a_url_of_the_other_region_goes_on_where_the_key_works(ph_env):
    """A US Cloud address with an EU key: US refuses it (401), EU knows it: the check goes on in EU
    and says which region the address named, instead of "not valid in PostHog US Cloud"."""
    from cs_posthog.posthog.credentials import region_note

    info = ph_env.info
    check = check_credentials(info["api_key"], f"{info['posthog_us']}/project/{info['project_id']}/insights",
                              settings=env_settings())
    assert check.ok and check.problem is None
    assert (check.region, check.host, check.switched_from) == ("eu", info["posthog_eu"], "us")
    assert check.tried == ["us", "eu"] and check.project_name == "Sandbox web app"
    assert region_note(check) == ("this key works in PostHog EU Cloud (the address is on PostHog US Cloud): "
                                  "going on with PostHog EU Cloud")
    raise_for_check(check)

    made_up = "phx_" + "Zq7" * 12  # unknown in both: both were asked, and the sentence says so
    bad = check_credentials(made_up, f"{info['posthog_us']}/project/{info['project_id']}", settings=env_settings())
    assert not bad.key_valid and bad.switched_from is None and bad.tried == ["us", "eu"]
    assert "not valid in PostHog US or EU Cloud" in bad.problem and region_note(bad) is None


def test_a_self_hosted_host_is_the_only_one_asked(ph_env):
    info = ph_env.info
    port = info["posthog_eu"].rsplit(":", 1)[1]
    host = f"http://localhost:{port}/"  # the same server under a name that is not a region host
    us_before, _ = totals(ph_env)
    check = check_credentials(info["api_key"], str(info["project_id"]), host=host, settings=env_settings())
    assert check.ok and check.region == "self-hosted" and check.host == f"http://localhost:{port}"
    assert check.tried == ["self-hosted"] and totals(ph_env)[0] == us_before

    refused = check_credentials(info["api_key"], info["project_id"], host=info["posthog_us"], settings=env_settings())
    assert not refused.key_valid and refused.tried == ["us"]


def test_missing_scopes_read_from_the_key(ph_env):
    info = ph_env.info
    check = check_credentials(info["api_key_missing_scopes"], info["project_id"], settings=env_settings())
    assert check.key_valid and check.project_found and check.project_accessible and not check.ok
    assert check.scopes_source == "current_key"
    assert check.missing_scopes == ["property_definition:read", "query:read"]
    assert check.missing_labels == ["Property definition", "Query"]
    assert check.problem == ("the API key is missing read access to: Property definition "
                             "(property_definition:read), Query (query:read)")
    with pytest.raises(MissingScopesError) as info_:
        raise_for_check(check)
    err = info_.value
    assert err.missing == ["property_definition:read", "query:read"] and err.exit_code == ExitCode.NOPERM
    assert "Property definition, Query" in err.hint


def test_without_current_every_needed_endpoint_is_probed(ph_env):
    info = ph_env.info
    before = sandbox_stats(ph_env.posthog_url)
    check = check_credentials(info["api_key_no_current"], info["project_id"], settings=env_settings())
    after = sandbox_stats(ph_env.posthog_url)
    assert check.ok and check.scopes_source == "probing" and check.scopes is None
    assert (check.project_name, check.timezone) == ("Sandbox web app", "Europe/Prague")
    assert route_count(after, CURRENT, "403") - route_count(before, CURRENT, "403") == 1
    for route in ("GET /api/projects/{id}/", "GET /api/projects/{id}/event_definitions/",
                  "GET /api/projects/{id}/property_definitions/", "POST /api/projects/{id}/query/",
                  "GET /api/projects/{id}/actions/", "GET /api/organizations/{id}/"):
        assert route_count(after, route, "200") - route_count(before, route, "200") == 1, route


def test_probing_reads_posthogs_missing_scope_details(ph_env):
    """The sandbox has no key that both lacks scopes and is refused @current: refuse @current in
    the transport (a real PostHog answer shape) and let every other request reach the sandbox."""
    info = ph_env.info

    transport = Intercept(refuse_current_in(info["posthog_eu"]))
    check = check_credentials(info["api_key_missing_scopes"], info["project_id"], transport=transport,
                              settings=env_settings())
    assert check.scopes_source == "probing" and check.key_valid and check.project_found and check.region == "eu"
    assert check.missing_scopes == ["property_definition:read", "query:read"]
    assert check.missing_labels == ["Property definition", "Query"]
    probed = {r.url.path.split("/")[-2] for r in transport.seen}
    assert {"event_definitions", "property_definitions", "query", "actions", "@current"} <= probed


def test_a_key_restricted_to_another_project(ph_env):
    info = ph_env.info
    for key in ("api_key_other_project",):
        check = check_credentials(info[key], info["project_id"], settings=env_settings())
        assert check.key_valid and not check.project_accessible and not check.ok
        assert check.scoped_teams == [info["other_project_id"]] and check.missing_scopes == []
        assert check.problem == f"the API key is restricted to other projects and cannot read project {info['project_id']}"
        with pytest.raises(PermissionDeniedError) as err:
            raise_for_check(check)
        assert "allow this project" in err.value.hint and err.value.exit_code == ExitCode.NOPERM
    # the same key on its own project is fine: organization:read cannot be given to such a key
    own = check_credentials(info["api_key_other_project"], info["other_project_id"], settings=env_settings())
    assert own.ok and own.project_name == "Sandbox staging"


def test_a_key_restricted_to_another_project_when_probing(ph_env):
    info = ph_env.info

    transport = Intercept(refuse_current_in(info["posthog_eu"]))
    check = check_credentials(info["api_key_other_project"], info["project_id"], transport=transport,
                              settings=env_settings())
    assert check.scopes_source == "probing" and check.key_valid and check.region == "eu"
    assert not check.project_accessible and check.project_found is None
    # organization endpoints refuse project-restricted keys: not reported as a scope to add
    assert check.missing_scopes == [] and not check.ok


@pytest.mark.parametrize("key", ["api_key", "api_key_no_current"])
def test_an_unknown_project(ph_env, key):
    info = ph_env.info
    check = check_credentials(info[key], "424242", settings=env_settings())
    assert check.key_valid and check.project_found is False and not check.ok
    assert check.problem == "project 424242 does not exist in PostHog EU Cloud (or this key's user cannot see it)"
    with pytest.raises(NotFoundError) as err:
        raise_for_check(check)
    assert err.value.exit_code == ExitCode.CONFIG and "Settings → Project" in err.value.hint


def test_an_unreachable_region_that_could_hold_the_key(ph_env, monkeypatch):
    info = ph_env.info
    monkeypatch.setenv("CS_POSTHOG_EU_HOST", dead_url())
    check = check_credentials(info["api_key"], info["project_id"], settings=env_settings())
    assert check.unreachable and not check.key_valid and not check.ok
    assert check.region == "eu" and "could not check the key with PostHog EU Cloud" in check.problem
    with pytest.raises(UnavailableError) as err:
        raise_for_check(check)
    assert err.value.exit_code == ExitCode.TEMPFAIL
    # the region that knows the key wins even when the other one is down
    monkeypatch.setenv("CS_POSTHOG_EU_HOST", info["posthog_eu"])
    monkeypatch.setenv("CS_POSTHOG_US_HOST", dead_url())
    assert check_credentials(info["api_key"], info["project_id"], settings=env_settings()).ok


def test_a_host_that_is_not_posthog(ph_env):
    info = ph_env.info
    check = check_credentials(info["api_key"], 1, host=ph_env.customerscore_url, settings=env_settings())
    assert check.unreachable and "does not answer like a PostHog API" in check.problem


def test_check_result_is_typed():
    check = CredentialCheck(key_valid=True, project_id=5, project_found=True, project_accessible=True)
    assert check.ok
    check.missing_scopes = ["query:read"]
    assert not check.ok
