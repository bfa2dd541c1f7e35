"""The webhook sources of the config in force, ready to serve: each one's verifier, its
compiled expressions, its metric children and its targets by event type, bound once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client import Counter

from bridge import metrics
from bridge.client_address import Network
from bridge.compare.merge import member_targets
from bridge.config import Config, MergeConfig, TargetConfig, WebhookConfig
from bridge.receive.presets import Extractor, Search, compile_search, fields_for
from bridge.receive.schemes import Verifier, build_verifier, has_costly_keys
from bridge.routing import targets_for

# Each source remembers the targets of this many event types (a cache, not a limit).
_TARGET_CACHE_SIZE = 1024


@dataclass(slots=True)
class WebhookSource:
    """One webhook source, ready to serve: its verifier and compiled expressions."""

    name: str
    hook: WebhookConfig
    verify: Verifier
    allow_from: list[Network]
    extractor: Extractor
    targets: Mapping[str, TargetConfig]
    # The metric children of this source, looked up once rather than per request.
    new: Counter
    duplicate: Counter
    events: Counter
    # Whether every check costs enough to run off the event loop (Ed25519 keys), decided once.
    costly_keys: bool
    # In a merge: the merge, the version expression (match: version), and the targets that
    # name this source itself (only they get its own events; the rest get the merged ones).
    merge: MergeConfig | None = None
    version: Search | None = None
    own_targets: frozenset[str] = frozenset()
    _targets_by_type: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, name: str, hook: WebhookConfig, config: Config) -> WebhookSource:
        """Bind a source's config once: secrets, scheme options, JMESPath expressions."""
        return cls(
            name=name,
            hook=hook,
            verify=build_verifier(hook),
            allow_from=list(hook.allow_from),
            extractor=Extractor(fields_for(hook)),
            targets=config.targets,
            new=metrics.INBOUND_ACCEPTED.labels(name, "new"),
            duplicate=metrics.INBOUND_ACCEPTED.labels(name, "duplicate"),
            events=metrics.EVENTS.labels(name, "push"),
            costly_keys=has_costly_keys(hook),
            merge=config.merge_of(name),
            version=compile_search(hook.version) if hook.version else None,
            own_targets=frozenset(member_targets(config, name)),
        )

    def targets_for(self, type: str) -> list[str]:
        """The targets of an event of this type (remembered per type)."""
        found = self._targets_by_type.get(type)
        if found is None:
            if len(self._targets_by_type) >= _TARGET_CACHE_SIZE:
                self._targets_by_type.clear()
            found = targets_for(self.targets, self.name, type)
            if self.merge is not None:
                found = [t for t in found if t in self.own_targets]
            self._targets_by_type[type] = found
        return found

    def merged_targets(self, type: str) -> list[str]:
        """The targets of this source's merged event of this type."""
        assert self.merge is not None
        return targets_for(self.targets, self.merge.name, type)


def build_sources(config: Config) -> dict[str, WebhookSource]:
    """The webhook sources of `config`, by URL path."""
    return {
        config.webhook_path(name): WebhookSource.build(name, source.webhook, config)
        for name, source in config.sources.items()
        if source.webhook is not None
    }
