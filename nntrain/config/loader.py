"""YAML in, validated Config out; every problem reported at once, at its file:line:col."""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from nntrain.config.callbacks import CALLBACKS
from nntrain.config.compile import LOSSES, METRICS, OPTIMIZERS, SCHEDULES
from nntrain.config.entries import BOOL_FOR_NUMBER, Registry, lazy_entry, snake_case
from nntrain.config.layers import (
    CONSTRAINTS,
    INITIALIZERS,
    LAYERS,
    NODE_NAME_PATTERN,
    NODE_REF_PATTERN,
    RECURRENT,
    REGULARIZERS,
)
from nntrain.config.schema import CODE_PATTERN, RUN_NAME_PATTERN, SIZE_PATTERN, Config
from nntrain.errors import UserError
from nntrain.fsutil import special_file

Path_ = tuple[str | int, ...]
REGISTRIES: dict[str, Registry] = {
    r.kind: r for r in (LAYERS, LOSSES, METRICS, OPTIMIZERS, CALLBACKS, REGULARIZERS,
                        CONSTRAINTS, INITIALIZERS, RECURRENT)
}
# A YAML document whose aliases expand past this many nodes is refused ("billion laughs").
MAX_NODES = 100_000
# `repeat:` beyond this many copies of a layer is a slip (and would take minutes to check).
MAX_REPEAT = 1000
# A config is a few kilobytes; past this it is data given where a config was meant.
MAX_CONFIG_BYTES = 1 << 20


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader without YAML 1.1's base-60 numbers, which read `5:00` as 300
    (YAML 1.2 dropped them; in a config they are a slip, not a number), and without its
    dates: no config value is one, and `2001-01-01` stays text a message can quote."""


# PyYAML's own patterns (resolver.py) less their base-60 alternatives
_NUMBERS = {
    "tag:yaml.org,2002:int": (r"""^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)
                                  |[-+]?0x[0-9a-fA-F_]+)$""", "-+0123456789"),
    "tag:yaml.org,2002:float": (r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
                                    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)
                                    |\.(?:nan|NaN|NAN))$""", "-+0123456789."),
}
ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers
            if tag not in _NUMBERS and tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _tag, (_pattern, _first) in _NUMBERS.items():
    ConfigLoader.add_implicit_resolver(_tag, re.compile(_pattern, re.X), list(_first))


@dataclass(frozen=True)
class Issue:
    """One problem in a config: where it is, what is wrong, and what might fix it."""

    where: str  # "file:line:col" or "--set a.b=c"
    path: str  # "model.layers[1].dense.units"
    message: str
    suggestion: str | None = None

    def __str__(self) -> str:
        text = f"{self.where}: {self.path or '<top>'}: {self.message}"
        return f"{text}; did you mean '{self.suggestion}'?" if self.suggestion else text


class ConfigError(UserError):
    """All the problems found in a config, each on its own line."""

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues = list(issues)
        count = f"{len(self.issues)} problem{'s' if len(self.issues) > 1 else ''}"
        super().__init__(
            f"invalid config ({count}):\n" + "\n".join(f"  {i}" for i in self.issues),
            "fix the places listed above; `nntrain schema` prints every key and its type",
        )


@dataclass
class LoadedConfig:
    """A validated config with the raw data and source positions kept for later checks."""

    config: Config
    source: Path
    raw: dict[str, Any]
    positions: dict[Path_, tuple[int, int]]
    overrides: dict[Path_, str]
    search_dir: Path | None = None  # where user code named by the config lives
    # a run's own config.yaml: rules added after an older nntrain trained it let it through
    saved: bool = False


    def where(self, path: Path_) -> str:
        return _where(self.source, self.positions, self.overrides, path)

    def issue(self, path: Path_, message: str, suggestion: str | None = None) -> Issue:
        return Issue(self.where(path), format_path(path), message, suggestion)


def format_path(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# names from other libraries (Keras 2, PyTorch) that mean one of nntrain's
KNOWN_AS = {"lr": "learning_rate", "decay": "weight_decay", "betas": "beta_1",
            # Keras 1's names, still in older books and posts
            "nb_epoch": "epochs", "output_dim": "units", "init": "kernel_initializer",
            "W_regularizer": "kernel_regularizer", "b_regularizer": "bias_regularizer",
            "W_constraint": "kernel_constraint", "b_constraint": "bias_constraint",
            "border_mode": "padding", "nb_filter": "filters", "subsample": "strides",
            "dim_ordering": "data_format", "p": "rate"}


def closest(name: object, choices: Iterable[str]) -> str | None:
    if not isinstance(name, str):
        return None
    choices = list(choices)
    if KNOWN_AS.get(name) in choices:
        return KNOWN_AS[name]
    same_but_case = [c for c in choices if c.lower() == name.lower()]  # Relu -> relu
    if same_but_case:
        return same_but_case[0]
    matches = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if not matches:
        lowered = {c.lower(): c for c in choices}
        matches = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
        matches = [lowered[m] for m in matches]
    return matches[0] if matches else None


def _where(source: Path, positions, overrides, path: Path_) -> str:
    # a value an override replaced comes from it, wherever the file had its old one
    bare = tuple(p for p in path if p != "<key>")
    for cut in range(len(bare), -1, -1):
        if bare[:cut] in overrides:
            return f"--set {overrides[bare[:cut]]}"
    for target, assignment in overrides.items():  # a key an override created (`--set
        # a.b=1`) at or under the failing place
        if target[:len(bare)] == bare and (bare not in positions or target not in positions):
            return f"--set {assignment}"
    for cut in range(len(path), -1, -1):
        prefix = tuple(path[:cut])
        if prefix in positions:
            line, col = positions[prefix]
            return f"{source}:{line}:{col}"
    return str(source)


def read_yaml(source: Path) -> tuple[Any, dict[Path_, tuple[int, int]]]:
    """Parse one YAML document safely, returning data and the line:col of every value."""
    # a pipe may be `nntrain validate <(...)`, read once to its end; a device may never end
    if special_file(source, pipes=False):
        raise UserError(f"{source} is a device or a socket, not a config file",
                        "give a .yaml file, e.g. configs/fashion_mlp.yaml")
    try:
        with source.open("rb") as f:  # not read_text: a device or a huge file never ends
            data = f.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise UserError(f"{source} is over {MAX_CONFIG_BYTES // 2**20} MiB, too big for a "
                            "config", "a config names its data files (data.train, "
                            "data.source) rather than holding the data")
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"config file not found: {source}", "check the path") from None
    except IsADirectoryError:
        raise UserError(f"{source} is a folder, not a config file",
                        "give a .yaml file, e.g. configs/fashion_mlp.yaml") from None
    except UnicodeDecodeError:
        raise UserError(f"{source} is not a text file", "a config is YAML text") from None
    except OSError as e:
        raise UserError(f"cannot read config file {source}: {e.strerror or e}",
                        "check the path and its permissions") from None
    try:
        loader = ConfigLoader(text)
    except yaml.reader.ReaderError as e:  # a control character, found before parsing starts
        raise _reader_error(source, text, e) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise UserError(f"config file is empty: {source}",
                            "start from one in configs/, or see `nntrain schema`")
        _check_size(node, str(source))
        _check_unique_keys(node, source)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else str(source)
        tag = isinstance(e, yaml.constructor.ConstructorError)
        raise UserError(
            f"{where}: not valid YAML: {e.problem or e.context}",
            "nntrain reads plain YAML: no tags like !!python/..." if tag else
            "check the indentation, quotes and brackets at and just before that place",
        ) from None
    except yaml.reader.ReaderError as e:
        raise _reader_error(source, text, e) from None
    except yaml.YAMLError as e:
        raise UserError(f"{source}: not valid YAML: {e}") from None
    except RecursionError:
        raise UserError(f"{source}: nested too deeply to be a config",
                        "a config is a few levels of mappings and lists") from None
    finally:
        loader.dispose()
    positions: dict[Path_, tuple[int, int]] = {}
    _record_positions(node, (), positions, set())
    return _unshared(data, source, ()), positions


def _unshared(value: Any, source: Path | str, within: tuple[int, ...]) -> Any:
    """The data with every YAML alias (`*h`) a copy of its anchor's value, not the same
    object: a `--set` on one place must change that place only. `within`: the containers
    around `value`, for an alias inside its own anchor (`&l [*l]`), which never ends."""
    if not isinstance(value, dict | list):
        return value
    if id(value) in within:
        raise UserError(f"{source}: a YAML alias (*name) stands inside the value its anchor "
                        "(&name) names, which makes it endless",
                        "write the value out, or anchor a part that does not hold the alias")
    within = (*within, id(value))
    if isinstance(value, dict):
        return {key: _unshared(item, source, within) for key, item in value.items()}
    return [_unshared(item, source, within) for item in value]


def _reader_error(source: Path, text: str, e: yaml.reader.ReaderError) -> UserError:
    line = text.count("\n", 0, e.position) + 1
    column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
    code = e.character if isinstance(e.character, int) else ord(e.character)
    return UserError(f"{source}:{line}:{column}: not valid YAML: character U+{code:04X} is not "
                     "allowed", "remove it, or save the file as text")


def _check_size(root: yaml.Node, where: str) -> None:
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = 1  # guards recursive aliases
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(v) for v in node.value)
        else:
            total = 1
        sizes[id(node)] = total
        return total

    if size(root) > MAX_NODES:
        raise UserError(
            f"{where}: expands to more than {MAX_NODES:,} values (YAML aliases?)",
            "write it out without deeply nested aliases",
        )


def _check_unique_keys(root: yaml.Node, source: Path) -> None:
    """A key twice in one mapping: YAML keeps the last silently, dropping the first (a whole
    `fit:` section, say)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, yaml.Node] = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if key is not None and key != "<<" and key in first:
                    mark, before = key_node.start_mark, first[key].start_mark
                    raise UserError(
                        f"{source}:{mark.line + 1}:{mark.column + 1}: '{key}' is given twice "
                        f"in the same mapping (first at line {before.line + 1})",
                        "YAML would keep only the last one: merge the two")
                first.setdefault(key, key_node)
                stack.append(value_node)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _record_positions(node: yaml.Node, path: Path_, out: dict, seen: set[int]) -> None:
    out.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            if key_node.tag.endswith(":int"):
                key = int(key)
            # the key's own position, for "unknown key" errors
            mark = key_node.start_mark
            out[(*path, key, "<key>")] = (mark.line + 1, mark.column + 1)
            _record_positions(value_node, (*path, key), out, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_positions(item, (*path, index), out, seen)


def _searched_key(data: dict, dotted: str, path: list[str | int],
                  value: Any) -> list[str | int]:
    """`search.parameters.model.layers.2.dense.units.max`: the keys under search.parameters
    are config paths, dots and all; the longest one the text starts with is one step."""
    params = (data.get("search") or {}).get("parameters") if isinstance(data, dict) else None
    if path[:2] != ["search", "parameters"] or len(path) < 4 or not isinstance(params, dict):
        return path
    rest = dotted.split(".", 2)[2]
    for key in sorted(map(str, params), key=len, reverse=True):
        if rest == key:  # the whole parameter, replaced
            return ["search", "parameters", key]
        if rest.startswith(key + "."):
            tail = rest[len(key) + 1:].split(".")
            return ["search", "parameters", key,
                    *(int(p) if p.lstrip("-").isdigit() else p for p in tail)]
    if isinstance(value, dict):  # a new parameter, declared whole
        return ["search", "parameters", rest]
    return path


def apply_override(data: dict, assignment: str) -> Path_:
    """Apply `a.b.0.c=value` to the raw data; the value is parsed as YAML (`3`, `true`, `[1]`)."""
    key, sep, value_text = assignment.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {assignment}: expected KEY.PATH=VALUE", "e.g. --set fit.epochs=5")
    value = _override_value(assignment, value_text) if value_text.strip() else None
    # `layers.1` or, as error messages write it, `layers[1]`
    dotted = re.sub(r"\[(-?\d+)\]", r".\1", key.strip())
    path: list[str | int] = [int(p) if p.lstrip("-").isdigit() else p for p in dotted.split(".")]
    path = _searched_key(data, dotted, path, value)
    node: Any = data
    for depth, part in enumerate(path):
        if isinstance(node, list) and isinstance(part, int) and -len(node) <= part < len(node):
            path[depth] = part = part % len(node)  # -1 becomes the index errors will name
        elif not isinstance(node, dict):
            where = format_path(path[: depth + 1])
            raise UserError(f"--set {assignment}: {where} is neither a mapping key nor a list "
                            "index in range", "the keys are those the config file has, with "
                            "list items counted from 0 (see `nntrain schema`)")
        if depth == len(path) - 1:
            node[part] = value
            _from_working_dir(data, tuple(path))
        else:
            _expand_shorthand(node, part, path[depth + 1])
            node = node.setdefault(part, {}) if isinstance(node, dict) else node[part]
    return tuple(path)


def _override_value(assignment: str, text: str) -> Any:
    """A --set value, read as a config file is: plain YAML, a bounded size (no alias bomb),
    every alias a copy of its anchor's value."""
    where = f"--set {assignment}"
    loader = ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:  # a comment alone
            return None
        _check_size(node, where)
        value = loader.construct_document(node)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{where}: value is not valid YAML: {problem}",
                        "quote the value if it is text; close brackets and braces: "
                        "--set 'compile.metrics=[accuracy]'") from None
    except RecursionError:
        raise UserError(f"{where}: nested too deeply to be a config value",
                        "a config is a few levels of mappings and lists") from None
    finally:
        loader.dispose()
    return _unshared(value, where, ())


def _expand_shorthand(node: Any, part: str | int, inner: str | int) -> None:
    """Let --set reach into an entry written short: `- flatten` becomes `- flatten: {}`, and
    `dense: 32` becomes `dense: {units: 32}` (the value under its positional argument)."""
    if isinstance(node, list) and isinstance(node[part], str) and node[part] == inner:
        node[part] = {inner: {}}
    elif isinstance(node, dict) and isinstance(part, str) and not isinstance(
            node.get(part, {}), dict | list):
        positional = {getattr(r.args.get(r.canonical(part)), "positional", None)
                      for r in (*REGISTRIES.values(), SCHEDULES) if r.canonical(part) in r.args}
        if node[part] is None:
            node[part] = {}
        elif len(positional) == 1 and None not in positional:
            node[part] = {positional.pop(): node[part]}


def load_config(source: str | Path, overrides: Sequence[str] = (),
                search_dir: Path | None = None, saved: bool = False) -> LoadedConfig:
    """Read, override and validate a config. Raises ConfigError listing every problem.
    `search_dir` is where the config's own Python modules live (default: its folder).
    `saved`: a run's own config.yaml, which an older nntrain may have written and accepted:
    the rules added since (one kind of gradient clipping, finite numbers) do not refuse it,
    so the run can still be evaluated, predicted with and resumed."""
    source = Path(source)
    try:
        data, positions = read_yaml(source)
        if not isinstance(data, dict):
            raise UserError(f"{source}: a config is a mapping (name:, data:, model:, ...)",
                            "start from one in configs/, or see `nntrain schema`")
    except UserError as e:
        if saved and source.exists():  # nntrain wrote it: the fix is not a new config
            raise UserError(e.message, "the run's config.yaml was changed or damaged after "
                            "nntrain wrote it: restore it from a backup, or train the config "
                            "anew") from None
        raise
    override_paths: dict[Path_, str] = {}
    for assignment in overrides:
        override_paths[apply_override(data, assignment)] = assignment
    return validate_config(data, source, positions, override_paths, search_dir, saved)


# the data files a config names: relative to the config's folder, or given with --set, to
# the folder the command runs in (as any path typed on a command line)
FILE_KEYS = {("data", "source"), ("data", "train"), ("data", "validation", "path"),
             ("data", "test", "path")}


def _from_working_dir(data: dict, set_at: Path_) -> None:
    """The data files an override set (itself, or in a section it set), made absolute from
    the current folder."""
    for key in FILE_KEYS:
        if key[:len(set_at)] != tuple(set_at):
            continue
        *parents, name = key
        node: Any = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        value = node.get(name) if isinstance(node, dict) else None
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            node[name] = str(Path.cwd() / value)


def validate_config(data: dict, source: Path, positions: dict[Path_, tuple[int, int]],
                    overrides: dict[Path_, str], search_dir: Path | None = None,
                    saved: bool = False) -> LoadedConfig:
    """Expand `repeat:` in the layer list, then validate. `data` is changed in place; error
    locations point into `source` (positions are remapped onto the expanded layer list)."""
    positions, overrides = dict(positions), dict(overrides)
    issues = expand_repeats(data, source, positions, overrides)
    config = None
    try:
        config = Config.model_validate(data, context={"saved": saved})
    except ValidationError as e:
        issues += [_issue(err, data, source, positions, overrides) for err in e.errors()]
    if issues:
        issues = _once_per_place(_merge_alternatives(_drop_implied(issues)))
        raise ConfigError(sorted(issues, key=_line_order))
    return LoadedConfig(config, source, data, positions, overrides, search_dir, saved)


def _once_per_place(issues: list[Issue]) -> list[Issue]:
    """A problem in an entry with `repeat: 3` is found in each copy: say it once, for the
    first copy (the file has one place to fix)."""
    seen, kept = set(), []
    for issue in issues:
        key = (issue.where, re.sub(r"^model\.layers\[\d+\]", "", issue.path), issue.message,
               issue.suggestion)
        if key not in seen or issue.where.startswith("--set"):
            seen.add(key)
            kept.append(issue)
    return kept


def expand_repeats(data: dict, source: Path, positions: dict[Path_, tuple[int, int]],
                   overrides: dict[Path_, str]) -> list[Issue]:
    """`- dense: 100` with `repeat: 3` beside it becomes three copies of the layer (`repeat: 0`
    removes it), so a search can vary the number of layers. Named copies get suffixes
    (`hidden_1`, `hidden_2`, ...); copies after the first take the copy before them, not the
    entry's `inputs`. `positions` and `overrides` are remapped to the new indices."""
    model = data.get("model")
    layers = model.get("layers") if isinstance(model, dict) else None
    if not isinstance(layers, list) or not any(
            isinstance(e, dict) and "repeat" in e and len(e) > 1 for e in layers):
        return []
    issues: list[Issue] = []
    expanded: list[Any] = []
    origin: list[int] = []  # new index -> index in the file
    for index, entry in enumerate(layers):
        count = 1
        if isinstance(entry, dict) and "repeat" in entry and len(entry) > 1:
            entry = {k: v for k, v in entry.items() if k != "repeat"}
            count = layers[index]["repeat"]
            if isinstance(count, bool) or not isinstance(count, int) or \
                    not 0 <= count <= MAX_REPEAT:
                path = ("model", "layers", index, "repeat")
                issues.append(Issue(_where(source, positions, overrides, path),
                                    format_path(path), "expected a number of copies, 0 to "
                                    f"{MAX_REPEAT:,}, found {count!r}"))
                count = 1
        for copy in range(count):
            expanded.append(_layer_copy(entry, copy, count))
            origin.append(index)
    model["layers"] = expanded
    prefix = ("model", "layers")
    for table in (positions, overrides):
        moved = {key: value for key, value in table.items()
                 if key[:2] == prefix and len(key) > 2 and isinstance(key[2], int)}
        for key in moved:
            del table[key]
        for new, old in enumerate(origin):
            for key, value in moved.items():
                if key[2] == old:
                    table[(*prefix, new, *key[3:])] = value
    return issues


def _layer_copy(entry: Any, copy: int, count: int) -> Any:
    """Copy `copy` (from 0) of `count` of a layer entry: a suffixed name, and the chain."""
    import copy as copying

    if count == 1:
        return entry
    entry = copying.deepcopy(entry)
    args = entry if "type" in entry else next(iter(entry.values()))
    if isinstance(args, dict):
        if isinstance(args.get("name"), str):
            args["name"] = f"{args['name']}_{copy + 1}"
        if copy > 0:
            args.pop("inputs", None)
    return entry


def _drop_implied(issues: list[Issue]) -> list[Issue]:
    """`unit: 16` gives "unknown key 'unit'; did you mean 'units'" and "missing 'units'":
    the second says nothing new. Nor does a union's other form ("input should be a valid
    dictionary" for a list of metrics) beside a problem found inside the value."""
    suggested = {(i.path.rpartition(".")[0], i.suggestion) for i in issues if i.suggestion}

    def inside(path: str) -> bool:
        return any(o.path.startswith((f"{path}[", f"{path}.")) for o in issues)

    return [i for i in issues if not (
        (i.message.startswith("missing required key")
         and (i.path, i.message.split("'")[1]) in suggested)
        or (i.message.startswith("input should be a valid ") and inside(i.path)))]


def _line_order(issue: Issue) -> tuple[int, int]:
    parts = issue.where.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return int(parts[1]), int(parts[2])
    return (1 << 30, 0)  # --set overrides last


# pydantic's names for the branches of a union (`int | Literal["auto"]`): not config keys
WRAPPERS = ("bidirectional", "time_distributed")  # layers whose entry holds a layer's entry
UNION_TAGS = {"single", "per_output", "int", "float", "str", "bool", "list", "dict", "none"}
# what a pattern asks for, in words
PATTERN_WORDS = {
    SIZE_PATTERN: "a size such as 512MB or 1.5GiB",
    CODE_PATTERN: "module:function (a function in a Python file beside the config)",
    RUN_NAME_PATTERN: "a name of letters, digits, '_', '.' and '-' (up to 100, starting with "
                      "a letter or digit)",
    NODE_NAME_PATTERN: "a node name of letters, digits and '_', not starting with a digit",
    NODE_REF_PATTERN: "a node name of letters, digits and '_', not starting with a digit, "
                      "or a recurrent layer's final state: NAME.h, NAME.c (an LSTM's), or "
                      "a bidirectional layer's NAME.forward_h, NAME.backward_h, ...",
}


def _merge_alternatives(issues: list[Issue]) -> list[Issue]:
    """A value that fits no branch of a union gives one problem per branch, at one place:
    one issue, the branches joined with "or"."""
    merged: dict[tuple[str, str], Issue] = {}
    for issue in issues:
        key = (issue.where, issue.path)
        if key not in merged:
            merged[key] = issue
            continue
        first = merged[key]
        found = re.search(r", found .*$", first.message)
        parts = [re.sub(r", found .*$", "", m) for m in (first.message, issue.message)]
        if parts[1] in parts[0].split("; or "):
            continue
        merged[key] = dataclasses.replace(
            first, message="; or ".join(parts) + (found[0] if found else ""),
            suggestion=first.suggestion or issue.suggestion)
    return [_missing_keys_together(issue) for issue in merged.values()]


def _missing_keys_together(issue: Issue) -> Issue:
    """The config's own required keys, several missing: all needed, not alternatives (deeper
    down, a union's branches may each need another key)."""
    keys = re.findall(r"missing required key '([^']+)'", issue.message)
    if issue.path or len(keys) < 2 or issue.message != "; or ".join(
            f"missing required key '{k}'" for k in keys):
        return issue
    listed = ", ".join(f"'{k}'" for k in keys[:-1]) + f" and '{keys[-1]}'"
    return dataclasses.replace(issue, message=f"missing required keys {listed}")


def _clean_loc(loc: Sequence[str | int], data: Any) -> Path_:
    """Map a pydantic error location onto the YAML's keys: drop union tags pydantic inserts."""
    out: list[str | int] = []
    node, entered_entry = data, False
    for part in loc:
        repeated_tag, entered_entry = entered_entry and part == out[-1], False
        if repeated_tag:
            continue  # {l2: {l2: 0.1}}: an entry's tag repeated, not its argument
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        ):
            entered_entry = isinstance(node, dict) and len(node) == 1
            node = node[part]
            out.append(part)
        elif isinstance(part, str) and (part in UNION_TAGS or "[" in part
                                        or part.startswith("constrained-")):
            continue  # union tags and "function-after[...]" markers
        elif part == "custom" and isinstance(node, dict) and len(node) == 1 \
                and ":" in str(next(iter(node))):  # a user's module:Class entry
            key = next(iter(node))
            node, entered_entry = node[key], False
            out.append(key)
        elif part == "args" and out and ":" in str(out[-1]):
            continue
        elif out and part == out[-1]:
            continue  # a discriminated entry repeats its tag: dense.dense.units
        elif isinstance(node, dict) and node.get("type") == part:
            continue  # a union told apart by its `type:` value (search parameters)
        elif part == "layer" and out and out[-1] in WRAPPERS and isinstance(node, dict):
            continue  # a wrapper's short form, {lstm: 64}: no `layer:` in the file
        elif isinstance(part, str) and part[:1].isupper() and part.isidentifier() \
                and isinstance(node, dict):
            continue  # a union's model member, by its class name (ObjectiveConfig)
        else:
            node = None
            out.append(part)
    return tuple(out)


def _fields_at(path: Path_) -> list[str]:
    """The keys allowed at a path of the schema, for suggestions."""
    tp: Any = Config
    for part in path:
        tp = _step(tp, part)
        if tp is None:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return []


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is not None and get_origin(tp).__name__ == "Annotated":
        tp = get_args(tp)[0]
    return tp


def _step(tp: Any, part: str | int) -> Any:
    lazy = lazy_entry(tp)
    if lazy is not None:  # an entry's model has one key, its name: made only if it is that
        return _step(lazy.model(), part) if lazy.name in (None, part) else None
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(part) if isinstance(part, str) else None
        if field is not None:
            return field.annotation
        # a key of the main argument's entry written in its place (bidirectional: {lstm: ..})
        positional = getattr(tp, "positional", None)
        main = tp.model_fields.get(positional) if positional else None
        return _step(main.annotation, part) if main is not None else None
    origin, args = get_origin(tp), get_args(tp)
    if origin is list:
        return args[0] if isinstance(part, int) else None
    if origin is dict:
        return args[1]
    for member in args:  # a union: the first member that has this key
        found = _step(member, part)
        if found is not None:
            return found
    return None


# Keras arguments that live elsewhere here, or do not exist: said instead of "did you mean"
KERAS_ELSEWHERE = {
    "validation_split": "Keras's validation_split is data.validation here: {last: N} takes "
                        "the last N rows, as Keras does ({fraction: 0.1} draws them at random)",
    "input_shape": "the input's shape is model.input here, e.g. input: [28, 28]",
    "validation_data": "validation data is data.validation here (a split, or a folder/file)",
    "steps_per_epoch": "an epoch is one pass over the training data here; data.limit takes "
                       "fewer examples",
    "initial_epoch": "continue a run with `nntrain fit --resume RUN`",
    "verbose": "the command line decides: -q for quiet, --log-format json for one line an "
               "epoch",
}


# where a bare number stands for an entry's main argument, the entry it most likely means
NUMBER_EXAMPLES = {"regularizer": "l2", "constraint": "max_norm", "optimizer": "sgd",
                   "initializer": "constant"}
# Keras's per-weight arguments: on a layer without that weight they are refused as such
WEIGHT_ARGUMENT = re.compile(r"^(kernel|bias|embeddings|gamma|beta|moving_mean|moving_variance)"
                             r"_(regularizer|constraint|initializer)$")


def _args_fields(class_name: str) -> str:
    for registry in REGISTRIES.values():
        for args in registry.args.values():
            if args.__name__ == class_name:
                return ", ".join(f for f in args.model_fields if f not in ("name", "inputs"))
    return "keys and values"


def _arguments_beside_the_name(registry, found: dict) -> str | None:
    """`{dense: 3, activation: softmax}` written as meant, `{dense: {units: 3, activation:
    softmax}}`, when the keys after the first are all its arguments; else None."""
    def takes_the_rest(key: Any) -> bool:
        args = registry.args.get(registry.canonical(registry.spelled(str(key))))
        return args is not None and all(k in args.model_fields for k in found if k != key)

    names = [k for k in found if takes_the_rest(k)]  # in any order: {activation: ..., dense: 3}
    if len(names) != 1:
        return None
    first, rest = names[0], [k for k in found if k != names[0]]
    args = registry.args[registry.canonical(registry.spelled(str(first)))]
    value = found[first]
    inner = dict(value) if isinstance(value, dict) else {} if value is None else \
        {args.positional: value} if args.positional else None
    if inner is None:
        return None
    inner.update({k: found[k] for k in rest})
    return yaml.safe_dump({first: inner}, default_flow_style=True, sort_keys=False).strip()


def _issue(err: dict, data: Any, source: Path, positions, overrides) -> Issue:
    kind, loc, found = err["type"], _clean_loc(err["loc"], data), err.get("input")
    where = _where(source, positions, overrides, loc)
    path = format_path(loc)
    if kind == "extra_forbidden":
        key = loc[-1]
        key_where = _where(source, positions, overrides, (*loc, "<key>"))
        if key in KERAS_ELSEWHERE:
            return Issue(key_where, path, f"unknown key '{key}': {KERAS_ELSEWHERE[key]}")
        weight = WEIGHT_ARGUMENT.match(str(key))
        if weight and "layers" in loc:  # not "did you mean activity_regularizer"
            return Issue(key_where, path, f"unknown key '{key}': this layer has no "
                         f"{weight[1]} weight")
        return Issue(key_where, path, f"unknown key '{key}'", closest(key, _fields_at(loc[:-1])))
    if kind.startswith("unknown_") and kind[8:] in REGISTRIES:
        registry = REGISTRIES[kind[8:]]
        name = next(iter(found)) if isinstance(found, dict) and len(found) == 1 else found
        if isinstance(found, dict) and len(found) != 1:
            names = ", ".join(map(str, found))
            message = f"expected one {registry.kind} name as the only key, found {len(found)} " \
                f"keys ({names})"
            nested = _arguments_beside_the_name(registry, found)
            if registry is REGULARIZERS and set(found) <= {"l1", "l2"}:
                message += ": l1 and l2 together are l1_l2: {l1: ..., l2: ...}"
            elif nested:  # Keras's Dense(3, activation="softmax") as {dense: 3, activation: ...}
                message += f": the arguments go inside the {registry.kind}'s mapping: {nested}"
            elif len(found) == 2 and all(registry.canonical(str(k)) in registry.args
                                         for k in found):
                # `--set compile.optimizer.sgd.learning_rate=...` added a second name
                last = list(found)[-1]
                message += f": one at a time; to switch to {last}, replace the whole entry " \
                    f"(--set '{path}={{{last}: {{...}}}}')"
            return Issue(where, path, message)
        message = f"unknown {registry.kind} {name!r}"
        call = re.fullmatch(r"\s*(\w+)\s*\((.*)\)\s*", name) if isinstance(name, str) else None
        if call and registry.canonical(call[1]) in registry.args:  # Keras's l2(0.01)
            return Issue(where, path, f"{message}: write a call as a mapping, "
                         f"{{{call[1]}: {call[2] or '{}'}}}")
        example = NUMBER_EXAMPLES.get(registry.kind)
        if example and isinstance(name, int | float) and not isinstance(name, bool):
            return Issue(where, path, f"{message}: name the {registry.kind}, e.g. "
                         f"{{{example}: {name}}}")
        snake = registry.canonical(snake_case(name)) if isinstance(name, str) else None
        suggestion = snake if snake in registry.args else closest(name, registry.names)
        if suggestion is None and len(registry.args) <= 8:  # a short list: name them all
            custom = ", or your own package.module:Class" if registry.custom_args else ""
            message += f" (one of: {', '.join(registry.args)}{custom})"
        return Issue(where, path, message, suggestion)
    if kind in ("union_tag_not_found", "union_tag_invalid"):  # a search parameter's type
        tag = err.get("ctx", {}).get("discriminator", "'type'").strip("'")
        tags = err.get("ctx", {}).get("expected_tags", "'int', 'float', 'choice', 'bool'")
        choices = [t.strip(" '") for t in tags.split(",")]
        given = err.get("ctx", {}).get("tag")
        said = f"unknown {tag} {given!r}" if given is not None else f"no '{tag}' key"
        return Issue(where, path, f"{said}: expected a mapping with {tag}: one of "
                     f"{', '.join(choices)}", closest(given, choices) if given else None)
    if kind == BOOL_FOR_NUMBER:
        loc = (*loc, err["ctx"]["field"])
        return Issue(_where(source, positions, overrides, loc), format_path(loc),
                     f"expected a number, found {err['ctx']['found']!r} (YAML reads yes, no, "
                     "on, off, true and false as booleans)")
    if kind == "missing":
        return Issue(where, format_path(loc[:-1]), f"missing required key '{loc[-1]}'")
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        choices = [c.strip().strip("'") for c in expected.replace(" or ", ", ").split(",")]
        return Issue(where, path, f"expected one of {expected}, found {found!r}",
                     closest(found, choices))
    if kind == "model_type":  # not "instance of MinMaxNormArgs"
        fields = _args_fields(err.get("ctx", {}).get("class_name", ""))
        return Issue(where, path, f"expected its arguments as a mapping ({fields}), "
                     f"found {found!r}")
    pattern = err.get("ctx", {}).get("pattern") if kind == "string_pattern_mismatch" else None
    if pattern in PATTERN_WORDS:
        return Issue(where, path, f"expected {PATTERN_WORDS[pattern]}, found {found!r}")
    message = err["msg"][0].lower() + err["msg"][1:]
    message = message.removeprefix("value error, ")
    if found is not None and not isinstance(found, dict | list):
        message += f", found {found!r}"
    return Issue(where, path, message)
