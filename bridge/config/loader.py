"""Loading the YAML config file: line numbers, duplicate keys, `${...}`, one-line errors.

`load_config(path)` reads the file, rejects duplicate keys, interpolates `${...}` in string
values, validates the result with the models in `models.py` and checks that every name
refers to something. Every mistake is one `ConfigError` naming the file, the line and the
key path, e.g.

    config.yaml:14: sources.orders.poll.every: "5x" is not a duration

and all the mistakes of a file are found in one run (`ConfigErrors`, in the file's order),
but for broken YAML, which stops the reading at its line. A mistake inside a source, target
or budget leaves that entry out of the checks of names that follow, so that one mistake is
not reported again as every reference to it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bridge.config.keys import known_keys, suggestion
from bridge.config.models import Config, ServerConfig
from bridge.config.presets import PresetError, expand
from bridge.config.references import check_names, quote
from bridge.config.values import SECRET_KEYS
from bridge.errors import ConfigError, ConfigErrors
from bridge.masking import mask_url

_INTERP_RE = re.compile(r"\$\{([^}]*)\}")

# The most values a config file may hold: far more than any real one, few enough to check fast.
MAX_VALUES = 100_000

# -- loading -------------------------------------------------------------------------------

Path_ = tuple[str | int, ...]


class _Loaded:
    """The plain data of a YAML file, with the line of every key path."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[Path_, int] = {}
        self.raw: dict[Path_, str] = {}  # the text before interpolation, shown in errors
        self.multiline: set[Path_] = set()  # values written over several lines
        self._constructor = yaml.constructor.SafeConstructor()
        self._values = 0  # values built so far, aliases counted each time they are used
        self._open: set[int] = set()  # the nodes being built (an alias to one is a cycle)
        self.mistakes: list[ConfigError] = []
        # Paths already blamed (a missing variable, a broken preset): the validation's own
        # complaints under them follow from the first one and are not shown.
        self.blamed: set[Path_] = set()
        # Sources, targets and budgets left out of the name checks (they had a mistake).
        self.left_out: set[str] = set()

    def error(self, path: Path_, message: str) -> ConfigError:
        return ConfigError(self.file, self.line_of(path), dotted(path), message)

    def report(self, path: Path_, message: str) -> None:
        """Record a mistake at `path`; the checks go on to find the others."""
        self.mistakes.append(self.error(path, message))
        self.blamed.add(path)

    def is_blamed(self, path: Path_) -> bool:
        """Whether `path` is under a blamed path, or is the source, target or part of one
        holding it (a check of the whole entry failing because of the blamed value)."""
        return any(
            path[: len(p)] == p or (len(path) >= 2 and p[: len(path)] == path) for p in self.blamed
        )

    def line_of(self, path: Path_) -> int | None:
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        self._values += 1
        if self._values > MAX_VALUES:
            # Aliases of aliases can expand a small file into billions of values.
            raise self.error(path, f"the file expands to more than {MAX_VALUES} values (aliases?)")
        if id(node) in self._open:
            raise self.error(path, "an alias refers to a value that contains it")
        self._open.add(id(node))
        try:
            return self._build(node, path)
        finally:
            self._open.discard(id(node))

    def _build(self, node: yaml.Node, path: Path_) -> Any:
        if isinstance(node, yaml.MappingNode):
            self._constructor.flatten_mapping(node)
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self._constructor.construct_object(key_node, deep=True)
                if not isinstance(key, str | int):
                    raise ConfigError(
                        self.file, key_node.start_mark.line + 1, dotted(path), "keys must be text"
                    )
                key = str(key)
                if key in out:
                    self.mistakes.append(
                        ConfigError(
                            self.file,
                            key_node.start_mark.line + 1,
                            dotted((*path, key)),
                            "duplicate key (an earlier line sets it already)",
                        )
                    )
                    continue
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                out[key] = self.build(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        value = self._constructor.construct_object(node, deep=True)
        if node.end_mark.line > node.start_mark.line and isinstance(node, yaml.ScalarNode):
            # A value over several lines may have swallowed the next keys (a quote left open),
            # secrets included: messages do not quote it.
            self.multiline.add(path)
        if isinstance(value, str) and "${" in value:
            self.raw[path] = value
            value = self.interpolate(value, path)
        return value

    def interpolate(self, text: str, path: Path_) -> str:
        def replace(match: re.Match[str]) -> str:
            try:
                return _resolve(match.group(1), lambda msg: self.error(path, msg))
            except ConfigError as exc:
                self.mistakes.append(exc)
                self.blamed.add(path)
                return ""

        return _INTERP_RE.sub(replace, text)


def resolve(text: str) -> str:
    """`text` with each `${...}` resolved, outside any file; ConfigError if one cannot be."""

    def error(message: str) -> ConfigError:
        return ConfigError("", None, "", message)

    return _INTERP_RE.sub(lambda match: _resolve(match.group(1), error), text)


def _resolve(expr: str, error: Any) -> str:
    kind, sep, arg = expr.partition(":")
    if sep and kind == "file":
        try:
            return Path(arg).read_text().rstrip("\n")
        except OSError as exc:
            raise error(f"${{file:{arg}}}: cannot read the file ({exc.strerror})") from None
    if sep and kind == "credential":
        folder = os.environ.get("CREDENTIALS_DIRECTORY")
        if not folder:
            raise error(f"${{credential:{arg}}}: $CREDENTIALS_DIRECTORY is not set")
        try:
            return (Path(folder) / arg).read_text().rstrip("\n")
        except OSError:
            raise error(f"${{credential:{arg}}}: no such credential") from None
    name, has_default, default = expr.partition(":-")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise error(f"${{{expr}}} is not a valid reference")
    if name in os.environ:
        return os.environ[name]
    if has_default:
        return default
    raise error(f"${{{name}}}: the environment variable {name} is not set")


def dotted(path: Path_) -> str:
    """`("sources", "a", "poll")` -> `sources.a.poll`."""
    return ".".join(str(p) for p in path)


def _is_secret_path(path: Path_) -> bool:
    return any(isinstance(p, str) and p in SECRET_KEYS for p in path)


def _show(loaded: _Loaded, path: Path_, value: Any) -> str:
    if _is_secret_path(path):
        return '"***"'
    if path in loaded.multiline:
        return "this value"
    if path in loaded.raw:
        return quote(mask_url(loaded.raw[path]))
    if isinstance(value, str):
        return quote(mask_url(value))
    if isinstance(value, dict | list):
        return "this value"
    return quote(str(value)) if value is not None else "null"


_PYDANTIC_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "is not a known key",
    "int_type": "is not a whole number",
    "int_parsing": "is not a whole number",
    "float_type": "is not a number",
    "float_parsing": "is not a number",
    "bool_type": "is not true or false",
    "bool_parsing": "is not true or false",
    "string_type": "is not text",
    "dict_type": "is not a mapping",
    "list_type": "is not a list",
    "model_type": "is not a mapping",
    "model_attributes_type": "is not a mapping",
}


def _unknown_key(path: Path_) -> str:
    """`is not a known key`, with the known key it is closest to."""
    if not path or not isinstance(path[-1], str):
        return "is not a known key"
    meant = suggestion(path[-1], known_keys(Config, path[:-1]))
    return f'is not a known key; did you mean "{meant}"?' if meant else "is not a known key"


def _message(error: Any, loaded: _Loaded, path: Path_) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return _unknown_key(path)
    if kind == "missing":
        return "is required"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        shown = f"{_show(loaded, path, error['input'])} is not one of {expected}"
        choices = re.findall(r"'([^']*)'", expected)
        meant = suggestion(str(error["input"]), choices) if choices else None
        return f'{shown}; did you mean "{meant}"?' if meant else shown
    msg = _PYDANTIC_MESSAGES.get(kind)
    if msg is None:
        msg = str(error["msg"]).removeprefix("Value error, ")
        msg = msg[0].lower() + msg[1:] if msg else msg
        if isinstance(error["input"], dict):
            return msg
        if not msg.startswith(("is ", "needs ", "must ")):
            msg = f"is not valid: {msg}"
    if kind.startswith(("model_", "dict_")) or isinstance(error["input"], dict | type(None)):
        return msg
    return f"{_show(loaded, path, error['input'])} {msg}"


def _validation_mistakes(exc: ValidationError, loaded: _Loaded) -> list[ConfigError]:
    """One mistake per key path the validation blames, the most specific of each."""
    errors = [(e, _clean_loc(e["loc"])) for e in exc.errors()]
    # Unions report one error per branch: where one branch blames a key deeper than another
    # branch blames its parent, the deeper one explains best.
    paths = {path for _, path in errors}
    chosen: dict[Path_, Any] = {}
    for error, path in errors:
        deeper = any(len(other) > len(path) and other[: len(path)] == path for other in paths)
        if deeper or path in chosen or loaded.is_blamed(path):
            continue
        if error["type"] == "missing" and any(
            e["type"] == "extra_forbidden"
            and p[:-1] == path[:-1]
            and suggestion(str(p[-1]), known_keys(Config, p[:-1])) == path[-1]
            for e, p in errors
        ):
            continue  # a required key missing beside an unknown one was misspelt as it
        chosen[path] = error
    mistakes = []
    for path, error in chosen.items():
        if "[key]" in error["loc"]:
            mistakes.append(loaded.error(path, "is not a valid name"))
        else:
            mistakes.append(loaded.error(path, _message(error, loaded, path)))
    return mistakes


def _clean_loc(loc: tuple[Any, ...]) -> Path_:
    # Drop pydantic's union branch tags (e.g. "float", "AdaptiveEvery", "function-before[...]")
    # so the path is the key path the user wrote.
    out: list[str | int] = []
    for part in loc:
        if isinstance(part, int) or not _is_branch_tag(part, out):
            out.append(part)
    return tuple(out)


def _is_branch_tag(part: str, before: list[str | int]) -> bool:
    if part == "[key]" or part[:1].isupper() or "[" in part:
        return True
    if part in ("float", "int", "str", "bool", "list"):
        return True
    tags = ("fixed", "adaptive", "link", "links", "next_url", "cursor", "graphql")
    if part in tags and bool(before) and before[-1] in ("every", "pages"):
        return True
    # A delta token's way of being sent (`delta.token`, `delta.page`: param, url or body).
    tokens = ("param", "url", "body")
    return (
        part in tokens
        and len(before) > 1
        and before[-2] == "delta"
        and before[-1]
        in (
            "token",
            "page",
        )
    )


def _expand_presets(data: dict[str, Any], loaded: _Loaded) -> dict[str, Any]:
    """Each `poll` that names a preset, expanded into plain keys (see `presets.py`).

    The keys the preset adds take the line of `preset:`, so that a mistake in one (a bad
    override merged into it) still names a line; the user's own keys keep theirs.
    """
    sources = data.get("sources")
    if not isinstance(sources, dict):
        return data
    out = dict(sources)
    for name, source in sources.items():
        poll = source.get("poll") if isinstance(source, dict) else None
        if not isinstance(poll, dict) or "preset" not in poll:
            continue
        where: Path_ = ("sources", name, "poll")
        line = loaded.line_of((*where, "preset"))
        try:
            expanded = expand(poll)
        except PresetError as exc:
            if line is not None:
                loaded.lines.setdefault((*where, exc.key), line)
            loaded.report((*where, exc.key), exc.message)
            # Unexpanded, the source would only add mistakes that follow from this one.
            del out[name]
            loaded.left_out.add(name)
            continue
        for key in expanded.keys() - poll.keys():
            if line is not None:
                loaded.lines[(*where, key)] = line
        out[name] = {**source, "poll": expanded}
    return {**data, "sources": out}


# The largest GraphQL query file read.
MAX_QUERY_BYTES = 1024 * 1024


def _read_query_files(data: dict[str, Any], loaded: _Loaded, folder: Path) -> dict[str, Any]:
    """Each `request.graphql.query_file` read into `query` (relative to `folder`, the config
    file's): a file that cannot be read, or a `query` beside it, is a mistake at its line."""
    sources = data.get("sources")
    if not isinstance(sources, dict):
        return data
    out = dict(sources)
    for name, source in sources.items():
        poll = source.get("poll") if isinstance(source, dict) else None
        request = poll.get("request") if isinstance(poll, dict) else None
        graphql = request.get("graphql") if isinstance(request, dict) else None
        if not isinstance(graphql, dict) or graphql.get("query_file") is None:
            continue
        assert isinstance(poll, dict) and isinstance(request, dict)
        where: Path_ = ("sources", name, "poll", "request", "graphql", "query_file")
        file = graphql["query_file"]
        if "query" in graphql:
            loaded.report(where, "give query or query_file, not both")
            del out[name]  # left out: it would only add mistakes that follow from this one
            loaded.left_out.add(name)
            continue
        path = folder / Path(str(file)).expanduser()
        try:
            with path.open("rb") as handle:
                raw = handle.read(MAX_QUERY_BYTES + 1)
            if len(raw) > MAX_QUERY_BYTES:
                raise ValueError(f"larger than {MAX_QUERY_BYTES} bytes")
            query = raw.decode()
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            loaded.report(where, f"cannot read {str(path)!r} ({why})")
            del out[name]
            loaded.left_out.add(name)
            continue
        graphql = {**graphql, "query": query}
        out[name] = {**source, "poll": {**poll, "request": {**request, "graphql": graphql}}}
    return {**data, "sources": out}


def _respell(data: dict[str, Any], loaded: _Loaded) -> tuple[dict[str, Any], list[str]]:
    """A target's old `secret` key as `secrets`, with a note for each; both is a mistake."""
    targets = data.get("targets")
    if not isinstance(targets, dict):
        return data, []
    notes: list[str] = []
    out: dict[str, Any] = {}
    for name, target in targets.items():
        if isinstance(target, dict) and "secret" in target:
            where = ("targets", name)
            if "secrets" in target:
                loaded.report((*where, "secret"), "give secrets or secret, not both")
                out[name] = {k: v for k, v in target.items() if k != "secret"}
                continue
            line = loaded.line_of((*where, "secret"))
            if line is not None:
                loaded.lines[(*where, "secrets")] = line
            n = len(where) + 1
            loaded.blamed |= {
                (*where, "secrets", *p[n:]) for p in loaded.blamed if p[:n] == (*where, "secret")
            }
            target = {("secrets" if k == "secret" else k): v for k, v in target.items()}
            notes.append(
                f"{loaded.file}:{line}: targets.{name}.secret: the old spelling of secrets"
                " (it still works)"
            )
        out[name] = target
    return {**data, "targets": out}, notes


def parse_config(text: str, file: str = "config.yaml", path: Path | None = None) -> Config:
    """Validate the YAML `text` of a config file named `file`.

    Raises `ConfigError` for one mistake, `ConfigErrors` for several (all that were found).
    """
    loaded = _Loaded(file)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = {} if node is None else loaded.build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(file, line, "", f"not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        # Its text has a second line pointing into "<unicode string>": keep the first.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(file, None, "", f"not valid YAML: {reason}") from None
    except RecursionError:
        raise ConfigError(file, None, "", "not valid YAML: nested too deeply") from None
    except ConfigError:
        raise  # an alias bomb or cycle: the rest of the file cannot be read
    if not isinstance(data, dict):
        raise ConfigError(file, 1, "", "the file must hold a mapping of keys")
    for key in ("path", "notes"):
        if key in data:
            loaded.report((key,), "is not a known key")
            del data[key]
    data, notes = _respell(data, loaded)
    if not data and not loaded.mistakes:
        notes.append(f"{file}: the file is empty: nothing is polled, received or delivered")
    data = _expand_presets(data, loaded)
    data = _read_query_files(data, loaded, path.parent if path is not None else Path.cwd())
    config = _validate({**data, "notes": tuple(notes)}, path, loaded)
    if config is not None:
        check_names(config, loaded)
    if loaded.mistakes:
        raise _all_of(loaded.mistakes)
    assert config is not None  # a config that did not validate has a mistake
    return config


# Each round of validation leaves out what the one before blamed: a few rounds find all.
_ROUNDS = 4


def _validate(data: dict[str, Any], path: Path | None, loaded: _Loaded) -> Config | None:
    """The config, or None when it does not validate; every mistake found is recorded."""
    for _ in range(_ROUNDS):
        try:
            return Config.model_validate({**data, "path": path})
        except ValidationError as exc:
            failed = [_clean_loc(e["loc"]) for e in exc.errors()]
            loaded.mistakes.extend(_validation_mistakes(exc, loaded))
            loaded.blamed.update(failed)
            left = _leave_out(data, failed, loaded)
            if left is None:
                return None
            data = left
    return None


def _leave_out(data: dict[str, Any], failed: list[Path_], loaded: _Loaded) -> dict[str, Any] | None:
    """`data` without what failed, so that the rest can be checked: the key itself where it
    is there to remove (its default then applies, or its absence is blamed already), else
    the source, target or budget holding it, else its top-level key. None when nothing can
    be left out."""
    out = dict(data)
    for where in failed:
        if not where or where[0] == "notes" or where[0] not in out:
            return None
        # A list's items cannot go without moving the paths of the ones after them.
        # A mapping is a part with checks of its own: without it, the part holding it fails.
        fewer = None if any(isinstance(s, int) for s in where) else _without(out, where)
        if fewer is not None and len(where) >= 2 and not isinstance(_at(out, where), dict):
            out = fewer
        else:
            _remove_entry(out, where, loaded)
    return out


def _at(node: Any, where: Path_) -> Any:
    for step in where:
        node = node[step]
    return node


def _without(node: Any, where: Path_) -> dict[str, Any] | None:
    """The mapping `node` without the key at `where` (copied, not changed); None if absent."""
    if not isinstance(node, dict) or where[0] not in node:
        return None
    if len(where) == 1:
        return {k: v for k, v in node.items() if k != where[0]}
    inner = _without(node[where[0]], where[1:])
    return None if inner is None else {**node, str(where[0]): inner}


def _remove_entry(data: dict[str, Any], where: Path_, loaded: _Loaded) -> None:
    group = where[0]
    entries = data.get(str(group))
    is_entry = group in ("sources", "targets", "budgets") and len(where) >= 2
    if is_entry and isinstance(entries, dict):
        if where[1] in entries:  # (else it is left out already)
            data[str(group)] = {k: v for k, v in entries.items() if k != where[1]}
            loaded.left_out.add(str(where[1]))
        return
    data.pop(str(group), None)


def _all_of(mistakes: list[ConfigError]) -> ConfigError:
    """The mistakes in the file's order, each once: one ConfigError, or ConfigErrors."""
    unique = list({str(m): m for m in mistakes}.values())
    unique.sort(key=lambda m: m.line if m.line is not None else 0)
    return unique[0] if len(unique) == 1 else ConfigErrors(unique)


def load_config(file: str | os.PathLike[str] | None = None) -> Config:
    """Load the config from `file`, else `$BRIDGE_CONFIG`, else `./config.yaml`."""
    name = str(file or os.environ.get("BRIDGE_CONFIG") or "config.yaml")
    path = Path(name)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(name, None, "", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(name, None, "", f"cannot read the file ({exc})") from None
    return parse_config(text, name, path.resolve())


@dataclass(slots=True, frozen=True)
class Salvaged:
    """What a config file that does not load still says: each None when it does not say."""

    database: str | None  # the database's location, resolved as `Config.database_path`
    server: ServerConfig | None


def salvage(file: str | os.PathLike[str]) -> Salvaged:
    """Where a config file that does not load still says things are: its `database` and its
    `server` section (each its default when the file has no such key), each taken only when
    valid on its own, the rest of the file left out.

    For the commands that read what a running bridge left behind (`bridge status`) when
    the file has since been broken: a mistake elsewhere does not hide the database.
    """
    path = Path(file)
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        loaded = _Loaded(str(file))
        data = {} if node is None else loaded.build(node, ())
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError, ConfigError):
        return Salvaged(None, None)
    if not isinstance(data, dict):
        return Salvaged(None, None)
    parts: dict[str, Any] = {}
    for key in ("database", "server"):
        # A value with a `${...}` that could not be filled is no value.
        if key not in data or any(p[:1] == (key,) for p in loaded.blamed):
            continue
        try:
            Config.model_validate({key: data[key]})
        except ValidationError:
            continue
        parts[key] = data[key]
    config = Config.model_validate({**parts, "path": path.resolve()})
    # A key the file does not have is its default: what the daemon that read it used.
    return Salvaged(
        config.database_path if "database" in parts or "database" not in data else None,
        config.server if "server" in parts or "server" not in data else None,
    )
