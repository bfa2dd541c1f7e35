"""The checks of a config that validated: names, and every name that refers to something.

Each mistake is recorded on the loader's `_Loaded` (`report`) and the checks go on, so
that `bridge check` names all of them in one run; a source, target or budget that had a
mistake of its own (`left_out`) is not reported again by every reference to it. A misspelt
name is named with the one it is closest to.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.config.auth import OAuth2Config, load_service_key
from bridge.config.keys import suggestion
from bridge.config.models import Config
from bridge.config.outbound import tls_context
from bridge.config.polling import MODE_KEYS, NOT_FEED_KEYS, PollConfig
from bridge.config.values import NAME_RE
from bridge.events import BRIDGE_SOURCE, MAX_ATTRIBUTE_BYTES, long_attribute, render_type

if TYPE_CHECKING:
    from bridge.config.loader import _Loaded

CHANGES = ("created", "updated", "deleted")


def quote(text: str) -> str:
    text = text if len(text) <= 60 else text[:57] + "..."
    return '"' + text.replace('"', '\\"') + '"'


def check_names(config: Config, loaded: _Loaded) -> None:
    for group in ("sources", "targets", "budgets", "credentials"):
        for name in getattr(config, group):
            if not NAME_RE.match(name):
                loaded.report(
                    (group, name),
                    f"{quote(name)} is not a valid name (use a-z, 0-9, _ and -, "
                    "starting with a letter or digit)",
                )
    if BRIDGE_SOURCE in config.sources:
        loaded.report(
            ("sources", BRIDGE_SOURCE),
            f'"{BRIDGE_SOURCE}" is the source of the bridge\'s own events: name this source'
            " otherwise",
        )
    for i, merge in enumerate(config.merge):
        if merge.name == BRIDGE_SOURCE:
            loaded.report(
                ("merge", i, "name"),
                f'"{BRIDGE_SOURCE}" is the source of the bridge\'s own events: name this merge'
                " otherwise",
            )
    _check_references(config, loaded)


def _not_a(name: str, what: str, known: Any) -> str:
    """`"nmae" is not a source`, with the name it is closest to."""
    meant = suggestion(name, sorted(known))
    hint = f'; did you mean "{meant}"?' if meant else ""
    return f"{quote(name)} is not {what}{hint}"


def _check_references(config: Config, loaded: _Loaded) -> None:
    sources = config.sources
    for i, pair in enumerate(config.compare):
        for side, kind in (("poll", "poll"), ("push", "webhook")):
            name = getattr(pair, side)
            if name in loaded.left_out:
                continue
            if name not in sources:
                loaded.report(("compare", i, side), _not_a(name, "a source", sources))
            elif sources[name].kind != kind:
                loaded.report(("compare", i, side), f"{quote(name)} is not a {kind} source")
    _check_merges(config, loaded)
    merges = {m.name for m in config.merge}
    for tname, target in config.targets.items():
        for i, name in enumerate(target.sources or []):
            if name == BRIDGE_SOURCE:
                continue  # the bridge's own events (bridge/operational.py)
            if name not in sources and name not in merges and name not in loaded.left_out:
                where = ("targets", tname, "sources", i)
                known = [*sources, *merges, *loaded.left_out]
                loaded.report(where, _not_a(name, "a source or a merge", known))
    _check_auth(config, loaded)
    _check_hooks(config, loaded)
    _check_types(config, loaded)
    _check_modes(config, loaded)
    _check_tls(config, loaded)


def _check_auth(config: Config, loaded: _Loaded) -> None:
    """Every `auth: {credential: NAME}` names a credential; every jwt_bearer key file reads."""
    base = config.path.parent if config.path else Path.cwd()
    oauth2s: list[tuple[tuple[str | int, ...], OAuth2Config]] = [
        (("credentials", name, "oauth2"), c.oauth2) for name, c in config.credentials.items()
    ]
    for sname, source in config.sources.items():
        auth = source.poll.auth if source.poll else None
        if auth is None:
            continue
        if auth.credential is not None and auth.credential not in config.credentials:
            loaded.report(
                ("sources", sname, "poll", "auth", "credential"),
                _not_a(auth.credential, "a credential", config.credentials),
            )
        if auth.oauth2 is not None:
            oauth2s.append((("sources", sname, "poll", "auth", "oauth2"), auth.oauth2))
    for place, oauth2 in oauth2s:
        if oauth2.grant == "jwt_bearer" and oauth2.key_file is not None:
            try:
                load_service_key(oauth2.key_file, base)
            except ValueError as exc:
                loaded.report((*place, "key_file"), str(exc))


def _check_tls(config: Config, loaded: _Loaded) -> None:
    """Every target's certificate, key and CA load (a mistake shows at `bridge check`)."""
    base = config.path.parent if config.path else Path.cwd()
    for tname, target in config.targets.items():
        if target.tls is None:
            continue
        try:
            tls_context(target.tls, base)
        except ValueError as exc:
            key, _, message = str(exc).partition(": ")
            loaded.report(("targets", tname, "tls", key), message)


def _check_types(config: Config, loaded: _Loaded) -> None:
    """A poll's type template must not make types longer than events may have."""
    for sname, source in config.sources.items():
        if source.poll is None:
            continue
        types = [render_type(source.poll.type, sname, c) for c in CHANGES]
        longest = max(types, key=lambda t: len(t.encode("utf-8", "surrogatepass")))
        if long_attribute(type=longest) is not None:
            where = ("sources", sname, "poll", "type")
            loaded.report(where, f"makes types longer than {MAX_ATTRIBUTE_BYTES} bytes")


def _check_modes(config: Config, loaded: _Loaded) -> None:
    """Keys of one polling mode used in another: named on their own line."""
    for sname, source in config.sources.items():
        poll = source.poll
        if poll is None:
            continue
        others = set().union(*(keys for mode, keys in MODE_KEYS.items() if mode != poll.mode))
        if poll.mode == "feed":
            others |= NOT_FEED_KEYS
        for key in sorted((poll.model_fields_set - MODE_KEYS[poll.mode]) & others):
            alias = PollConfig.model_fields[key].alias or key
            loaded.report(("sources", sname, "poll", alias), f"is not a key of mode {poll.mode}")


def _check_merges(config: Config, loaded: _Loaded) -> None:
    """Each merge: a free valid name, one webhook and one polled source, each in one merge."""
    sources = config.sources
    used: dict[str, str] = {}
    for i, merge in enumerate(config.merge):
        if not NAME_RE.match(merge.name):
            loaded.report(("merge", i, "name"), f"{quote(merge.name)} is not a valid name")
        if merge.name in sources or [m.name for m in config.merge].count(merge.name) > 1:
            loaded.report(("merge", i, "name"), f"{quote(merge.name)} is already a name")
        complete = True
        for j, name in enumerate(merge.sources):
            where = ("merge", i, "sources", j)
            if name in loaded.left_out:
                complete = False
            elif name not in sources:
                loaded.report(where, _not_a(name, "a source", [*sources, *loaded.left_out]))
                complete = False
            elif name in used:
                loaded.report(where, f"{quote(name)} is already in merge {used[name]}")
            else:
                used[name] = merge.name
        if not complete:
            continue
        kinds = sorted(sources[name].kind for name in merge.sources)
        if kinds != ["poll", "webhook"]:
            loaded.report(("merge", i, "sources"), "needs one webhook and one poll source")
            continue
        _check_match(config, loaded, i)


def _check_match(config: Config, loaded: _Loaded, i: int) -> None:
    merge = config.merge[i]
    by_kind = {config.sources[name].kind: config.sources[name] for name in merge.sources}
    poll, hook = by_kind["poll"].poll, by_kind["webhook"].webhook
    assert poll is not None and hook is not None
    if merge.match == "id" and poll.mode != "feed":
        loaded.report(
            ("merge", i, "match"), "match: id needs a poll source with mode: feed (upstream events)"
        )
    if merge.match == "version":
        if poll.mode == "feed" or poll.version is None:
            loaded.report(
                ("merge", i, "match"), "match: version needs a poll source with a version"
            )
        elif hook.version is None:
            loaded.report(
                ("merge", i, "match"), "match: version needs a webhook source with a version"
            )


def _check_hooks(config: Config, loaded: _Loaded) -> None:
    sources = config.sources
    paths: dict[str, str] = {}
    for sname, source in sources.items():
        if source.poll and source.poll.on_push:
            hint = source.poll.on_push
            if hint in loaded.left_out:
                pass
            elif hint not in sources:
                where = ("sources", sname, "poll", "on_push")
                webhooks = [n for n, s in sources.items() if s.kind == "webhook"]
                loaded.report(where, _not_a(hint, "a webhook source", webhooks))
            elif sources[hint].kind != "webhook":
                where = ("sources", sname, "poll", "on_push")
                loaded.report(where, f"{quote(hint)} is not a webhook source")
        budget = source.poll.budget if source.poll else None
        if budget and budget not in config.budgets and budget not in loaded.left_out:
            loaded.report(
                ("sources", sname, "poll", "budget"),
                _not_a(budget, "a budget (see the top-level budgets)", config.budgets),
            )
        if source.webhook:
            path = config.webhook_path(sname)
            if path in paths:
                loaded.report(
                    ("sources", sname, "webhook", "path"),
                    f"{quote(path)} is already the path of source {paths[path]}",
                )
            paths[path] = sname
