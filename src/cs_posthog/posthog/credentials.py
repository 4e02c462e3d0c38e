"""Check a personal API key against a project: region, project, scopes. No terminal I/O.

``check_credentials`` answers with a typed ``CredentialCheck`` (what is wrong, in data and in one
human sentence); ``raise_for_check`` turns a failed check into the error the CLI renders.

How (docs/posthog-api.md; PostHog's source where named):

- Region: US and EU are separate; a key of the other region gets the same 401 as a bad key. Without
  a region in the pasted reference both are asked at once (threads) and the one that knows the key
  wins. A URL naming a region asks that one first; when it refuses the key (401), the other region
  is asked, and a key it knows goes on there (``switched_from`` names the region of the URL: people
  paste an address of the wrong Cloud more often than a key of it). ``host`` (self-hosted, or a
  region's host given as ``--host``) asks only that host.
- Scopes: ``GET /api/personal_api_keys/@current/`` lists the key's scopes (``*`` = all; ``x:write``
  implies ``x:read``) and ``scoped_teams`` (a key restricted to other projects cannot read this
  one). Where ``@current`` is refused (403), each needed endpoint is probed and PostHog's
  "API key missing required scope 'x'" details are collected.
- ``organization:read`` cannot be granted to a key restricted to projects: PostHog's key form
  disables the Organization scope for such keys (frontend lib/scopes.tsx,
  ``disabledWhenProjectScoped: true``) and answers organization endpoints with "API keys with scoped
  projects are only supported on project-based endpoints.". Such a key is not reported as missing
  it: nothing cs-posthog reads from a project needs it.
- An organization may not allow its members' personal API keys (``members_can_use_personal_api_keys``
  off; admins and owners are exempt): every project endpoint answers 403 "Organization 'X' does not
  allow using personal API keys." (``posthog/permissions.py``), while ``@current`` still answers.
  That is an organization policy, not a scope or a project restriction: ``org_policy`` holds it and
  it is the problem reported, before anything else.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cs_posthog.errors import (
    ApiError,
    AuthError,
    CsPosthogError,
    MissingScopesError,
    NotFoundError,
    PermissionDeniedError,
    PersonalKeysNotAllowedError,
    ThrottledError,
    UnavailableError,
)
from cs_posthog.http import RetryPolicy
from cs_posthog.posthog.client import GROUP_SCOPE, NEEDED_SCOPES, ApiKeyInfo, PostHogClient, scope_label
from cs_posthog.posthog.regions import (
    EU,
    REGIONS,
    SELF_HOSTED,
    US,
    normalize_host,
    parse_project_ref,
    region_hosts,
    region_of_host,
)
from cs_posthog.settings import Settings

if TYPE_CHECKING:
    import httpx

SERVICE = "PostHog"
REGION_NAMES = {US: "US Cloud", EU: "EU Cloud", SELF_HOSTED: "self-hosted"}


@dataclass
class CredentialCheck:
    """The outcome of ``check_credentials``; ``ok`` when nothing is wrong, else ``problem`` says what."""

    key_valid: bool
    project_id: int
    region: str | None = None  # "us", "eu" or "self-hosted" (where the key is valid)
    host: str | None = None  # base URL of that PostHog
    project_found: bool | None = None  # None: could not tell (the key may not read projects)
    project_accessible: bool = False
    project_name: str | None = None
    timezone: str | None = None
    missing_scopes: list[str] = field(default_factory=list)
    missing_labels: list[str] = field(default_factory=list)
    scopes: list[str] | None = None  # the key's scopes when @current answered
    scoped_teams: list[int] = field(default_factory=list)
    scopes_source: str | None = None  # "current_key" or "probing"
    tried: list[str] = field(default_factory=list)  # regions asked ("us", "eu", "self-hosted"), in order
    # the region a pasted project URL named when the key was refused there and found in the other
    # region, whose region/host the check then holds; None otherwise
    switched_from: str | None = None
    unreachable: bool = False  # no answer could tell (timeouts, refused connections, 5xx): try later
    # PostHog's detail when the organization does not allow members' personal API keys
    org_policy: str | None = None
    problem: str | None = None  # one human sentence when something is wrong, else None

    @property
    def ok(self) -> bool:
        return (
            self.key_valid
            and not self.unreachable
            and self.org_policy is None
            and self.project_found is not False
            and self.project_accessible
            and not self.missing_scopes
        )


def _client(host: str, api_key: str, project_id: int, **kw: Any) -> PostHogClient:
    # A person waits for this answer: fewer retries than a sync, short throttle waits.
    policy = RetryPolicy(max_attempts=3, max_throttled=5, backoff_base=0.25, backoff_cap=2.0, max_throttle_wait=60.0)
    return PostHogClient(host, api_key, project_id, policy=policy, **kw)


@dataclass
class _RegionAnswer:
    region: str
    host: str
    client: Any
    valid: bool = False
    key_info: Any = None  # ApiKeyInfo when @current answered 200
    policy: PersonalKeysNotAllowedError | None = None
    error: CsPosthogError | None = None  # unreachable, or another surprise


def _ask_region(region: str, host: str, api_key: str, project_id: int, client_kw: dict[str, Any]) -> _RegionAnswer:
    client = _client(host, api_key, project_id, **client_kw)
    ans = _RegionAnswer(region, host, client)
    try:
        ans.key_info = client.current_key()
        ans.valid = True
    except AuthError as exc:
        ans.error = exc
    except PersonalKeysNotAllowedError as exc:  # the key is known; its organization refuses it
        ans.valid = True
        ans.policy = exc
    except PermissionDeniedError:  # the key is known; this server will not show its scopes
        ans.valid = True
    except NotFoundError as exc:  # PostHog answers 401 on this route for an unknown key: not PostHog?
        ans.error = NotFoundError(
            f"{host} does not answer like a PostHog API (404 on /api/personal_api_keys/@current/)",
            hint="Check the PostHog address: the base URL of your PostHog, e.g. https://posthog.example.com.",
            service=SERVICE,
            status=404,
            detail=exc.detail,
        )
    except CsPosthogError as exc:
        ans.error = exc
    return ans


def check_credentials(
    api_key: str,
    project_ref: str | int,
    *,
    host: str | None = None,
    timeout: httpx.Timeout | float | None = None,
    transport: httpx.BaseTransport | None = None,
    needed: tuple[str, ...] | None = None,
    settings: Settings,
) -> CredentialCheck:
    """Check ``api_key`` against the project ``project_ref`` (an id or a pasted project URL).

    Where: ``host`` when given (only that one, whatever the reference says); else the host or the
    region the pasted URL names; else US and EU at once, keeping the one that knows the key.

    Raises UsageError for an unreadable reference or host. Every other outcome, good or bad, is in
    the returned ``CredentialCheck``; when no region could tell whether the key is valid (one
    refused it, another could not be reached) it has ``unreachable`` set and ``key_valid`` False.
    """

    needed = tuple(needed or NEEDED_SCOPES)
    ref = parse_project_ref(project_ref, settings)
    pid = ref.id
    hosts = region_hosts(settings)
    if host is not None:
        base = normalize_host(host, settings)
        candidates = [(region_of_host(base, settings) or SELF_HOSTED, base)]
    elif ref.host is not None:
        candidates = [(SELF_HOSTED, ref.host)]
    elif ref.region is not None:
        candidates = [(ref.region, hosts[ref.region])]
    else:
        candidates = [(r, hosts[r]) for r in REGIONS]
    client_kw: dict[str, Any] = {k: v for k, v in (("timeout", timeout), ("transport", transport)) if v is not None}
    client_kw["settings"] = settings

    if len(candidates) == 1:
        answers = [_ask_region(*candidates[0], api_key, pid, client_kw)]
    else:
        with ThreadPoolExecutor(max_workers=len(candidates), thread_name_prefix="cs-posthog-region") as pool:
            futures = [pool.submit(_ask_region, r, h, api_key, pid, client_kw) for r, h in candidates]
            answers = [f.result() for f in futures]

    switched_from = None
    if (host is None and ref.region is not None and len(answers) == 1 and not answers[0].valid
            and isinstance(answers[0].error, AuthError) and not api_key.strip().startswith("phc_")):
        # the URL's region refused the key: is it a key of the other region (a wrong address)?
        other = next(r for r in REGIONS if r != ref.region)
        answers.append(_ask_region(other, hosts[other], api_key, pid, client_kw))
        if answers[-1].valid:
            switched_from = ref.region

    check = CredentialCheck(key_valid=False, project_id=pid, tried=[a.region for a in answers],
                            switched_from=switched_from)
    valid = [a for a in answers if a.valid]
    try:
        if not valid:
            unreachable = [a for a in answers if a.error is not None and not isinstance(a.error, AuthError)]
            if unreachable:
                first = unreachable[0]
                check.unreachable = True
                check.region, check.host = first.region, first.host
                check.problem = f"could not check the key with {_where(first.region, first.host)}: {first.error}"
                return check
            check.problem = _invalid_key_problem(api_key, [a.region for a in answers], [a.host for a in answers])
            return check
        if len(valid) > 1:  # a key both regions know: keep the one where the project is
            valid.sort(key=lambda a: 0 if _has_project(a.client, pid) else 1)
        chosen = valid[0]
        check.key_valid = True
        check.region = chosen.region
        check.host = chosen.host
        try:
            if chosen.policy is not None:
                raise chosen.policy
            _check_project_and_scopes(check, chosen, needed)
        except PersonalKeysNotAllowedError as exc:
            _org_policy(check, exc)
        except (UnavailableError, ThrottledError) as exc:
            check.unreachable = True
            check.problem = f"could not finish the check with {_where(check.region, check.host)}: {exc}"
            return check
        check.problem = _problem(check)
        return check
    finally:
        for a in answers:
            a.client.close()


def _org_policy(check: CredentialCheck, exc: PersonalKeysNotAllowedError) -> None:
    """The organization refuses members' personal API keys: nothing else about the key can be known."""
    check.org_policy = exc.detail or exc.message
    check.project_found = None
    check.project_accessible = False
    check.missing_scopes, check.missing_labels = [], []


def _has_project(client: Any, pid: int) -> bool:
    try:
        client.project(pid)
        return True
    except CsPosthogError:
        return False


def _check_project_and_scopes(check: CredentialCheck, ans: _RegionAnswer, needed: tuple[str, ...]) -> None:
    """The project and the key's missing scopes: read from the key itself when PostHog shows it
    (``@current``), else found out by asking each scope's endpoint once."""
    if ans.key_info is not None:
        _from_key_info(check, ans.client, ans.key_info, needed)
    else:
        _from_probes(check, _probe(ans.client, check.project_id, needed), needed)
    check.missing_labels = [scope_label(s) for s in check.missing_scopes]


def _from_key_info(check: CredentialCheck, client: PostHogClient, info: ApiKeyInfo, needed: tuple[str, ...]) -> None:
    pid = check.project_id
    check.scopes_source = "current_key"
    check.scopes = list(info.scopes)
    check.scoped_teams = list(info.scoped_teams)
    missing = info.missing(needed)
    if info.scoped_teams and "organization:read" in missing:
        missing.remove("organization:read")  # cannot be granted to a project-restricted key
    check.missing_scopes = missing
    if not info.can_access_project(pid):
        check.project_accessible = False
        check.project_found = None
    elif "project:read" in missing:
        # the project's name and timezone cannot be read; another project endpoint tells whether it exists
        check.project_found, check.project_accessible = _project_exists_via(client, pid, info)
    else:
        _read_project(check, client, pid)


def _missing_from_probes(outcomes: dict[str, Any], needed: tuple[str, ...]) -> list[str]:
    """The scopes the probes were refused for, the needed ones first, in their order."""
    missing: list[str] = []
    for scope in needed:
        outcome = outcomes.get(scope)
        if isinstance(outcome, MissingScopesError):
            missing.extend(s for s in outcome.missing if s not in missing)
    return [s for s in needed if s in missing] + [s for s in missing if s not in needed]


def _from_probes(check: CredentialCheck, outcomes: dict[str, Any], needed: tuple[str, ...]) -> None:
    """``outcomes``: per scope, what its endpoint answered (a dict or True, or the error)."""
    check.scopes_source = "probing"
    check.missing_scopes = _missing_from_probes(outcomes, needed)
    project_outcome = outcomes.get("project:read")
    others = [outcomes[s] for s in needed if s in outcomes and s not in ("project:read", "organization:read")]
    if isinstance(project_outcome, dict):
        check.project_found = True
        check.project_accessible = True
        check.project_name = str(project_outcome.get("name") or "") or None
        check.timezone = str(project_outcome.get("timezone") or "") or None
        return
    outcomes_for_project = [project_outcome, *others]
    if any(isinstance(o, NotFoundError) for o in outcomes_for_project):
        check.project_found = False
        check.project_accessible = False
        check.missing_scopes = []
        return
    if any(_is_project_denied(o) for o in outcomes_for_project):
        check.project_found = None
        check.project_accessible = False
        # "organization:read" is refused for the same reason on such keys: not a scope to add
        check.missing_scopes = [s for s in check.missing_scopes if s != "organization:read"]
        return
    check.project_found, check.project_accessible = _project_from_other_probes(others, outcomes_for_project)
    if "organization:read" in check.missing_scopes and _scoped_org_refusal(outcomes.get("organization:read")):
        check.missing_scopes.remove("organization:read")


def _project_from_other_probes(others: list[Any], outcomes_for_project: list[Any]) -> tuple[bool | None, bool]:
    """(found, accessible) when the project's own endpoint told nothing: another project endpoint
    that answered proves it exists; no error other than a missing scope leaves it accessible."""
    if any(o is True or isinstance(o, dict) for o in others):
        return True, True
    refused = any(isinstance(o, CsPosthogError) and not isinstance(o, MissingScopesError) for o in outcomes_for_project)
    return None, not refused


def _read_project(check: CredentialCheck, client: Any, pid: int) -> None:
    try:
        project = client.project(pid)
    except NotFoundError:
        check.project_found = False
        check.project_accessible = False
        return
    except MissingScopesError as exc:
        check.missing_scopes = sorted(set(check.missing_scopes) | set(exc.missing))
        check.project_found = None
        check.project_accessible = True
        return
    except PersonalKeysNotAllowedError:
        raise
    except PermissionDeniedError:
        check.project_found = None
        check.project_accessible = False
        return
    check.project_found = True
    check.project_accessible = True
    check.project_name = project.name or None
    check.timezone = project.timezone or None


def _project_exists_via(client: Any, pid: int, info: Any) -> tuple[bool | None, bool]:
    """Without project:read: does another project endpoint the key may call see the project?"""
    for scope, call in _project_probes(client, pid):
        if not info.has_scope(scope):
            continue
        try:
            call()
            return True, True
        except NotFoundError:
            return False, False
        except PersonalKeysNotAllowedError:
            raise
        except PermissionDeniedError as exc:
            if _is_project_denied(exc):
                return None, False
        except ApiError:
            continue
    return None, True


def _project_probes(client: Any, pid: int) -> list[tuple[str, Callable[[], Any]]]:
    return [
        ("event_definition:read", lambda: client.get(f"/api/projects/{pid}/event_definitions/", {"limit": 1})),
        ("property_definition:read",
         lambda: client.get(f"/api/projects/{pid}/property_definitions/", {"type": "person", "limit": 1})),
        ("action:read", lambda: client.actions(pid, limit=1)),
        ("query:read", lambda: client.query("SELECT 1", name="cs-posthog credential check", project_id=pid)),
    ]


def _probe(client: Any, pid: int, needed: tuple[str, ...]) -> dict[str, Any]:
    """Call one endpoint per needed scope (concurrently); each outcome is the answer (a dict, or
    True) or the typed error PostHog's answer became."""
    calls: dict[str, Callable[[], Any]] = dict(_project_probes(client, pid))
    calls["project:read"] = lambda: client.project(pid).raw
    calls["organization:read"] = client.organization

    def run(fn: Callable[[], Any]) -> Any:
        try:
            out = fn()
        except CsPosthogError as exc:
            return exc
        return out if isinstance(out, dict) else True

    todo = [s for s in needed if s in calls]
    with ThreadPoolExecutor(max_workers=max(1, min(4, len(todo))), thread_name_prefix="cs-posthog-probe") as pool:
        results = dict(zip(todo, pool.map(lambda s: run(calls[s]), todo), strict=False))
    for outcome in results.values():
        if isinstance(outcome, (UnavailableError, ThrottledError, PersonalKeysNotAllowedError)):
            raise outcome
    return results


def _is_project_denied(outcome: Any) -> bool:
    return (
        isinstance(outcome, PermissionDeniedError)
        and not isinstance(outcome, MissingScopesError)
        and "does not have access to the requested project" in (outcome.detail or "")
    )


def _scoped_org_refusal(outcome: Any) -> bool:
    return isinstance(outcome, PermissionDeniedError) and "scoped projects" in (outcome.detail or "")


# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------


def _where(region: str | None, host: str | None) -> str:
    if region in (US, EU):
        return f"PostHog {REGION_NAMES[region]}"
    return f"the PostHog at {host}" if host else "PostHog"


def region_note(check: CredentialCheck) -> str | None:
    """One sentence when the check went on in the other region than the pasted URL's, else None."""
    named = getattr(check, "switched_from", None)  # a test's stand-in check may not have it
    region = getattr(check.region, "value", check.region)
    if named not in (US, EU) or region not in (US, EU):
        return None
    return (f"this key works in PostHog {REGION_NAMES[region]} (the address is on PostHog "
            f"{REGION_NAMES[named]}): going on with PostHog {REGION_NAMES[region]}")


def _invalid_key_problem(api_key: str, regions: list[str], hosts: list[str]) -> str:
    key = api_key.strip()
    if key.startswith("phc_"):
        return "this is a project API key (phc_...), not a personal API key (phx_...)"
    if set(regions) == {US, EU}:
        where = "PostHog US or EU Cloud"
    else:
        where = _where(regions[0] if regions else None, hosts[0] if hosts else None)
    return f"the API key is not valid in {where} (mistyped, revoked, or from another PostHog)"


def _problem(check: CredentialCheck) -> str | None:
    where = _where(check.region, check.host)
    if check.org_policy is not None:
        return ("the PostHog organization does not allow personal API keys of members (an organization "
                "policy set by an admin, not a scope of the key)")
    if check.project_found is False:
        return f"project {check.project_id} does not exist in {where} (or this key's user cannot see it)"
    if not check.project_accessible:
        return f"the API key is restricted to other projects and cannot read project {check.project_id}"
    if check.missing_scopes:
        return missing_scopes_sentence(check.missing_scopes, check.missing_labels)
    return None


def missing_scopes_sentence(scopes: list[str], labels: list[str] | None = None) -> str:
    """"the API key is missing read access to: Group (group:read)": each scope by the name PostHog's
    key form shows, then its code."""
    labels = labels or [scope_label(s) for s in scopes]
    pairs = ", ".join(f"{label} ({scope})" for label, scope in zip(labels, scopes, strict=False))
    return f"the API key is missing read access to: {pairs}"


def group_scope_error(why: str) -> MissingScopesError:
    """The key lacks Group (Read), which listing the group types needs (``why``: what for, e.g.
    "to find the group type 'company' by its name"): exit 77, named like the other scopes."""
    err = MissingScopesError([GROUP_SCOPE], [scope_label(GROUP_SCOPE)], service=SERVICE, status=403)
    err.message = f"{missing_scopes_sentence([GROUP_SCOPE])}, {why}"
    err.hint = (f"In PostHog: Settings → Personal API keys → edit the key, add Read access to "
                f"{scope_label(GROUP_SCOPE)}, then retry.")
    err.args = (err.message,)
    return err


def raise_for_check(check: CredentialCheck) -> None:
    """Nothing when ``check.ok``; else the typed error the CLI renders (one line and a hint)."""
    if check.ok:
        return
    where = _where(check.region, check.host)
    if check.unreachable:
        raise UnavailableError(check.problem or "could not reach PostHog", service=SERVICE)
    if check.org_policy is not None:
        raise PersonalKeysNotAllowedError(
            check.problem or "the PostHog organization does not allow personal API keys",
            service=SERVICE,
            status=403,
            detail=check.org_policy,
        )
    if not check.key_valid:
        hint = (
            "Create a personal API key in PostHog → Settings → Personal API keys (it starts with phx_)."
            if (check.problem or "").startswith("this is a project API key")
            else "Copy the key again from PostHog → Settings → Personal API keys; check you are on the right "
            "PostHog (US or EU Cloud, or your own host)."
        )
        raise AuthError(check.problem or "the API key is not valid", hint=hint, service=SERVICE, status=401)
    if check.project_found is False:
        raise NotFoundError(
            check.problem or f"project {check.project_id} not found",
            hint=f"Check the project id in {where} → Settings → Project, or paste the address of a page of "
                 "the project.",
            service=SERVICE,
            status=404,
        )
    if not check.project_accessible:
        raise PermissionDeniedError(
            check.problem or "the API key cannot read this project",
            hint="In PostHog: Settings → Personal API keys → edit the key, and allow this project (or all "
            "projects) under Organization & project access.",
            service=SERVICE,
            status=403,
        )
    if check.missing_scopes:
        raise MissingScopesError(check.missing_scopes, check.missing_labels, service=SERVICE, status=403)
