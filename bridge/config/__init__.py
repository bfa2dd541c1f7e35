"""The YAML config, validated into typed models (`models.py`) by the loader (`loader.py`).

Any mistake raises one `ConfigError` naming the file, the line and the key path, e.g.

    config.yaml:14: sources.orders.poll.every: "5x" is not a duration
"""

from bridge.config.loader import (
    MAX_VALUES,
    Path_,
    dotted,
    load_config,
    parse_config,
)
from bridge.config.models import (
    BudgetConfig,
    CircuitConfig,
    ComparePair,
    Config,
    MergeConfig,
    RetentionConfig,
    ServerConfig,
    SourceConfig,
    TargetConfig,
    Verify,
    WebhookConfig,
    iter_secrets,
)
from bridge.config.polling import (
    AdaptiveEvery,
    Change,
    CursorPages,
    DeletesConfig,
    Every,
    FeedConfig,
    IncrementalCursor,
    NextUrlPages,
    Pages,
    PollConfig,
)
from bridge.config.values import (
    DEFAULT_RETRY_S,
    NAME_RE,
    SECRET_KEYS,
    Duration,
    HttpURL,
    JMESPath,
    Secrets,
    Size,
    field_path,
    parse_duration,
    parse_size,
)

__all__ = [
    "DEFAULT_RETRY_S",
    "MAX_VALUES",
    "NAME_RE",
    "SECRET_KEYS",
    "AdaptiveEvery",
    "BudgetConfig",
    "Change",
    "CircuitConfig",
    "ComparePair",
    "Config",
    "CursorPages",
    "DeletesConfig",
    "Duration",
    "Every",
    "FeedConfig",
    "HttpURL",
    "IncrementalCursor",
    "JMESPath",
    "MergeConfig",
    "NextUrlPages",
    "Pages",
    "Path_",
    "PollConfig",
    "RetentionConfig",
    "Secrets",
    "ServerConfig",
    "Size",
    "SourceConfig",
    "TargetConfig",
    "Verify",
    "WebhookConfig",
    "dotted",
    "field_path",
    "iter_secrets",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
]
