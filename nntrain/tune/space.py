"""The `search:` section: its schema, the config paths it names, and the values it samples.

```yaml
search:
  algorithm: bayesian            # random | grid | bayesian | gp | hyperband
  max_trials: 20
  parameters:                    # config path (as --set writes it) -> distribution
    model.layers.2.repeat: {type: int, min: 0, max: 8, default: 2, name: n_hidden}
    compile.optimizer.learning_rate: {type: float, min: 1.0e-4, max: 1.0e-2, log: true}
    compile.optimizer.type: {type: choice, values: [sgd, adam], name: optimizer}
    compile.optimizer.momentum: {type: float, min: 0, max: 0.99, when: {optimizer: sgd}}
```

Paths address the config as written (before `repeat:` is expanded), like `--set`. A
parameter with `when:` is sampled and set only while the parameters it names have one of the
given values; otherwise the config keeps what it writes there (usually nothing).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PositiveInt,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
)

from nntrain.config.entries import Strict

ALGORITHMS = ("random", "grid", "bayesian", "gp", "hyperband")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(s|m|h|d)?\s*$")
_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: Any) -> Any:
    """`3600`, `"90s"`, `"30m"`, `"2h"` -> seconds."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    return value


Seconds = Annotated[float, Field(gt=0), BeforeValidator(_duration)]
Scalar = StrictBool | StrictInt | float | str | None


class _Param(Strict):
    name: Annotated[str, Field(min_length=1)] | None = None  # shown in the leaderboard
    when: dict[str, Scalar | list[Scalar]] | None = None  # {parameter name: value(s)}


def _max_not_below_min(cls, value: float, info: ValidationInfo) -> float:
    low = info.data.get("min")
    if low is not None and value < low:
        raise ValueError(f"max is less than min {low}")
    return value


class IntParam(_Param):
    type: Literal["int"]
    log: bool = False  # declared before min: its check needs to know the scale
    min: StrictInt
    max: StrictInt
    step: PositiveInt = 1
    default: StrictInt | None = None

    @field_validator("min")
    @classmethod
    def _positive_for_log(cls, value: int, info: ValidationInfo) -> int:
        if info.data.get("log") and value < 1:
            raise ValueError("a log scale needs min of 1 or more")
        return value

    _not_below_min = field_validator("max")(_max_not_below_min)

    @field_validator("step")
    @classmethod
    def _step_fits(cls, value: int, info: ValidationInfo) -> int:
        low, high = info.data.get("min"), info.data.get("max")
        if info.data.get("log") and value != 1:
            raise ValueError("a log scale takes no step: leave step out")
        if low is not None and high is not None and (high - low) % value:
            raise ValueError(f"max {high} is not min {low} plus a whole number of steps of "
                             f"{value}")
        return value

    @field_validator("default")
    @classmethod
    def _in_range(cls, value: int | None, info: ValidationInfo) -> int | None:
        low, high, step = info.data.get("min"), info.data.get("max"), info.data.get("step")
        if value is not None and low is not None and high is not None:
            if not low <= value <= high:
                raise ValueError(f"default is outside min {low} .. max {high}")
            if step and (value - low) % step:
                raise ValueError(f"default is not min {low} plus whole steps of {step}")
        return value


class FloatParam(_Param):
    type: Literal["float"]
    log: bool = False
    min: float
    max: float
    step: Annotated[float, Field(gt=0)] | None = None
    default: float | None = None

    @field_validator("min")
    @classmethod
    def _positive_for_log(cls, value: float, info: ValidationInfo) -> float:
        if info.data.get("log") and value <= 0:
            raise ValueError("a log scale needs min > 0")
        return value

    _not_below_min = field_validator("max")(_max_not_below_min)

    @field_validator("step")
    @classmethod
    def _step_fits(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("log"):
            raise ValueError("a log scale takes no step: leave step out")
        low, high = info.data.get("min"), info.data.get("max")
        if value is not None and low is not None and high is not None:
            steps = (high - low) / value
            if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
                raise ValueError(f"max {high} is not min {low} plus a whole number of steps "
                                 f"of {value}")
        return value

    @field_validator("default")
    @classmethod
    def _in_range(cls, value: float | None, info: ValidationInfo) -> float | None:
        low, high = info.data.get("min"), info.data.get("max")
        if value is not None and low is not None and high is not None and \
                not low <= value <= high:
            raise ValueError(f"default is outside min {low} .. max {high}")
        return value


class ChoiceParam(_Param):
    type: Literal["choice"]
    values: Annotated[list[Any], Field(min_length=1)]
    default: Any = None  # given or not: see `has_default`

    @field_validator("values")
    @classmethod
    def _distinct(cls, values: list[Any]) -> list[Any]:
        seen: list[Any] = []
        for value in values:
            if value in seen:
                raise ValueError(f"{value!r} is listed twice")
            seen.append(value)
        return values

    @field_validator("default")
    @classmethod
    def _listed(cls, value: Any, info: ValidationInfo) -> Any:
        values = info.data.get("values")
        if values is not None and value is not None and value not in values:
            raise ValueError(f"default is not one of the values {values}")
        return value


class BoolParam(_Param):
    type: Literal["bool"]
    default: StrictBool | None = None


Param = Annotated[IntParam | FloatParam | ChoiceParam | BoolParam, Field(discriminator="type")]


class ObjectiveConfig(Strict):
    metric: str  # a figure of the epoch logs: val_accuracy, val_loss, loss, ...
    direction: Literal["max", "min", "auto"] = "auto"  # auto: max for accuracies and AUC


class HyperbandConfig(Strict):
    min_epochs: PositiveInt = 1  # the smallest budget a trial gets before it can be pruned
    reduction_factor: Annotated[int, Field(ge=2)] = 3  # keep the best 1/factor at each rung


class SearchConfig(Strict):
    """How `nntrain tune` searches; `nntrain fit` ignores this section."""

    algorithm: Literal[ALGORITHMS] = "bayesian"  # type: ignore[valid-type]
    objective: str | ObjectiveConfig | None = None  # default: val_accuracy or val_loss
    max_trials: PositiveInt = 10
    timeout: Seconds | None = None  # stop starting trials after this long (per command)
    seed: Annotated[int, Field(ge=0)] | None = None  # the sampler's; default: the config's
    startup_trials: PositiveInt | None = None  # bayesian/gp: random trials first
    pruner: Literal["none", "hyperband", "median"] | None = None  # default: by algorithm
    hyperband: HyperbandConfig = HyperbandConfig()
    parameters: Annotated[dict[str, Param], Field(min_length=1)]

    def pruner_name(self) -> str:
        if self.pruner is not None:
            return self.pruner
        return "hyperband" if self.algorithm == "hyperband" else "none"


# -- paths into the config as written ---------------------------------------------------------
Path_ = tuple[str | int, ...]


def parse_path(key: str) -> Path_:
    """`model.layers.2.repeat` -> ("model", "layers", 2, "repeat"), as --set reads it."""
    return tuple(int(p) if p.lstrip("-").isdigit() else p for p in key.split("."))


def get_path(data: Any, path: Path_) -> tuple[bool, Any]:
    """(found, value) at `path` in plain config data."""
    node = data
    for part in path:
        if (isinstance(node, dict) and part in node) or (
                isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)):
            node = node[part]
        else:
            return False, None
    return True, node


def set_path(data: Any, path: Path_, value: Any) -> None:
    """Set a value whose parent exists (checked by `check_paths`)."""
    _, parent = get_path(data, path[:-1])
    parent[path[-1]] = copy.deepcopy(value)


def path_problem(data: Any, path: Path_) -> str | None:
    """Why `path` cannot be set in `data`, or None. Every step but the last must exist; the
    last may be a key the config does not write yet (the schema then judges it)."""
    node = data
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        where = ".".join(str(p) for p in path[:depth]) or "the top level"
        if isinstance(node, list):
            if not isinstance(part, int):
                return f"{where} is a list: expected an index, found '{part}'"
            if not 0 <= part < len(node):
                return f"{where} has {len(node)} entries (0 .. {len(node) - 1}), not {part}"
            node = node[part]
        elif isinstance(node, dict):
            if part in node:
                node = node[part]
            elif last and isinstance(part, str):
                return _short_form(node, path)
            else:
                return f"'{part}' is not in {where}" + _suggest(part, node)
        else:
            return f"{where} is {node!r}, a single value: it has no '{part}'"
    return None


def _short_form(node: dict, path: Path_) -> str | None:
    """The last key of `path` is new to `node`: fine, unless `node` is a short entry like
    `{adam: {learning_rate: 0.01}}` whose one value holds that key."""
    inner = next(iter(node.values())) if len(node) == 1 else None
    if isinstance(inner, dict) and path[-1] in inner:
        where, (name,) = ".".join(str(p) for p in path[:-1]), node
        return f"{where} is written {{{name}: {{...}}}}: search {where}.{name}.{path[-1]}"
    return None


def _suggest(part: Any, node: dict) -> str:
    from nntrain.config.loader import closest

    match = closest(part, [str(k) for k in node])
    return f" (it has {', '.join(map(str, node))}" + (f"; did you mean '{match}'?)" if match
                                                      else ")")


# -- the space --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dimension:
    """One searched value: where it goes, how it is drawn, and when it applies."""

    key: str  # as written under search.parameters
    name: str  # the optuna parameter name, shown in the leaderboard
    path: Path_
    param: IntParam | FloatParam | ChoiceParam | BoolParam
    default: Any
    when: dict[str, list[Any]]

    @property
    def kind(self) -> str:
        return self.param.type

    @property
    def log(self) -> bool:
        return bool(getattr(self.param, "log", False))

    def choices(self) -> list[Any]:
        if isinstance(self.param, ChoiceParam):
            return list(self.param.values)
        if isinstance(self.param, BoolParam):
            return [False, True]
        raise TypeError(self.kind)

    def probe_values(self) -> list[Any]:
        """Values that check every corner of the distribution against the schema."""
        if isinstance(self.param, IntParam):
            return [self.param.min, self.param.max]
        if isinstance(self.param, FloatParam):
            if self.param.step is not None:
                return [self.param.min, self.param.max]
            # and a value between with a fraction, so a float aimed at an integer is caught
            inside = self.param.min + (self.param.max - self.param.min) / math.pi
            return [self.param.min, self.param.max, inside]
        return self.choices()


def dimensions(search: SearchConfig, raw: dict) -> list[Dimension]:
    """The space in declaration order (a `when:` names parameters declared before it)."""
    out = []
    for key, param in search.parameters.items():
        path = parse_path(key)
        when = {k: v if isinstance(v, list) else [v] for k, v in (param.when or {}).items()}
        out.append(Dimension(key, param.name or key, path, param,
                             _default(param, raw, path), when))
    return out


def _default(param: Any, raw: dict, path: Path_) -> Any:
    """The parameter's `default`, else the value the config writes there when the
    distribution allows it, else min (int, float), the first value (choice), false (bool)."""
    if "default" in param.model_fields_set and param.default is not None:
        return param.default
    found, value = get_path(raw, path)
    if isinstance(param, ChoiceParam):
        return value if found and value in param.values else param.values[0]
    if isinstance(param, BoolParam):
        return value if found and isinstance(value, bool) else False
    if found and isinstance(value, int | float) and not isinstance(value, bool) and \
            param.min <= value <= param.max:
        if isinstance(param, IntParam) and isinstance(value, int) and \
                (value - param.min) % param.step == 0:
            return value
        if isinstance(param, FloatParam) and param.step is None:
            return float(value)
    return param.min


def active(dims: list[Dimension], values: dict[str, Any]) -> list[Dimension]:
    """The dimensions whose `when:` holds for `values` (their parents active too)."""
    on: dict[str, Any] = {}
    for dim in dims:
        if dim.name in values and all(parent in on and on[parent] in allowed
                                      for parent, allowed in dim.when.items()):
            on[dim.name] = values[dim.name]
    return [d for d in dims if d.name in on]


def defaults(dims: list[Dimension]) -> dict[str, Any]:
    """The default point: every active dimension at its default."""
    values = {d.name: d.default for d in dims}
    return {d.name: values[d.name] for d in active(dims, values)}


def with_value(dims: list[Dimension], name: str, value: Any) -> dict[str, Any]:
    """The default point with one dimension changed (dimensions it switches on: defaults)."""
    values = {**{d.name: d.default for d in dims}, name: value}
    return {d.name: values[d.name] for d in active(dims, values)}


def apply(raw: dict, dims: list[Dimension], values: dict[str, Any]) -> dict:
    """A copy of the config data with the values set and the search section removed."""
    data = copy.deepcopy(raw)
    data.pop("search", None)
    for dim in dims:
        if dim.name in values:
            set_path(data, dim.path, values[dim.name])
    return data


def suggest(trial: Any, dims: list[Dimension]) -> dict[str, Any]:
    """Draw a point from an optuna trial, define-by-run: a dimension is asked for only while
    its `when:` holds, so samplers see the conditional space as it is."""
    values: dict[str, Any] = {}
    for dim in dims:
        if not all(values.get(p, _MISSING) in allowed for p, allowed in dim.when.items()):
            continue
        p = dim.param
        if isinstance(p, IntParam):
            values[dim.name] = trial.suggest_int(dim.name, p.min, p.max, step=p.step, log=p.log)
        elif isinstance(p, FloatParam):
            values[dim.name] = trial.suggest_float(dim.name, p.min, p.max, step=p.step,
                                                   log=p.log)
        else:
            choices = dim.choices()
            labels = [label(c) for c in choices]  # optuna stores str/int/float/bool/None only
            picked = trial.suggest_categorical(dim.name, labels)
            values[dim.name] = choices[labels.index(picked)]
    return values


def from_params(dims: list[Dimension], params: dict[str, Any]) -> dict[str, Any]:
    """Config values from a trial's stored optuna params (undo `label`)."""
    out = {}
    for dim in dims:
        if dim.name in params:
            value = params[dim.name]
            if dim.kind in ("choice", "bool"):
                choices = dim.choices()
                labels = [label(c) for c in choices]
                value = choices[labels.index(value)] if value in labels else value
            out[dim.name] = value
    return out


def to_params(dims: list[Dimension], values: dict[str, Any]) -> dict[str, Any]:
    """Optuna params (as `enqueue_trial` takes them) for config values."""
    by_name = {d.name: d for d in dims}
    return {k: label(v) if by_name[k].kind in ("choice", "bool") else v
            for k, v in values.items()}


_MISSING = object()


def label(value: Any) -> Any:
    """A choice as optuna can store it: scalars as they are, lists and mappings as text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    import json

    return json.dumps(value, sort_keys=True)


def format_value(value: Any) -> str:
    """A value for tables: short floats, lists and mappings as YAML's flow style (as a config
    writes them), plain text for the rest."""
    if isinstance(value, float) and not isinstance(value, bool):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3g}"
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        import yaml

        return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return str(value)


# -- checks -----------------------------------------------------------------------------------
def check(search: SearchConfig, raw: dict,
          validate: Callable[[dict], list[Any]]) -> tuple[list[Dimension], list[tuple]]:
    """Cross-check the search section against the config. Returns the dimensions and a list
    of (path, message) problems, located by the caller. `validate(data)` returns the config
    issues of one candidate config ([] when valid); each distribution's corners are tried so a
    value the schema refuses (a float where an int belongs, an unknown activation) is found
    before any training."""
    problems: list[tuple] = []
    where = ("search", "parameters")
    dims = dimensions(search, raw)
    names: dict[str, str] = {}
    for dim in dims:
        at = (*where, dim.key)
        problem = path_problem(raw, dim.path)
        if dim.path[:1] == ("search",) or dim.path[:1] == ("name",):
            problem = f"{dim.key} cannot be searched"
        if problem:
            problems.append((at, f"unknown config path: {problem}"))
        if dim.name in names:
            problems.append(((*at, "name"), f"the name '{dim.name}' is already used by "
                                            f"{names[dim.name]}"))
        for parent, allowed in dim.when.items():
            ref = next((d for d in dims if d.name == parent), None)
            if ref is None or ref.name not in names:
                problems.append(((*at, "when", parent), f"'{parent}' is not a parameter "
                                 "declared before this one"))
            elif ref.kind in ("choice", "bool"):
                for value in allowed:
                    if value not in ref.choices():
                        problems.append(((*at, "when", parent),
                                         f"{value!r} is not one of {parent}'s values "
                                         f"{ref.choices()}"))
        names[dim.name] = dim.key
        for other in dims[:dims.index(dim)]:
            inner, outer = sorted((dim, other), key=lambda d: len(d.path))[::-1]
            if inner.path[:len(outer.path)] == outer.path:
                problems.append((at, f"{dim.key} and {other.key} overlap: {outer.key} "
                                     f"replaces the part of the config {inner.key} sets, so "
                                     f"one would undo the other; search one of them"))
        if search.algorithm == "grid" and dim.kind == "float" and dim.param.step is None:
            problems.append((at, "grid search needs a finite set: give this float a step, "
                                 "or make it a choice"))
    if problems:
        return dims, problems
    # the default point, one dimension at a time, so a problem names its parameter
    point = defaults(dims)
    on = [d for d in dims if d.name in point]
    for count, dim in enumerate(on, start=1):
        issues = validate(apply(raw, on[:count], point))
        if issues:
            problems.append(((*where, dim.key), _probe_message(dim, point[dim.name], issues,
                                                               "its default")))
            return dims, problems
    for dim in dims:
        for value in dim.probe_values():
            point = with_value(dims, dim.name, value)
            if dim.name not in point:
                continue  # switched off by its own `when:` at the defaults
            issues = validate(apply(raw, dims, point))
            if issues:
                problems.append(((*where, dim.key), _probe_message(dim, value, issues)))
                break
    return dims, problems


def _probe_message(dim: Dimension, value: Any, issues: list[Any], what: str = "") -> str:
    first = issues[0]
    text = f"{dim.key} = {value!r}{f' ({what})' if what else ''} makes the config invalid: " \
        f"{first.path}: {first.message}"
    if getattr(first, "suggestion", None):
        text += f"; did you mean '{first.suggestion}'?"
    return text


def grid_values(dim: Dimension) -> list[Any]:
    """Every value a grid tries for one dimension ([] for a float without a step)."""
    p = dim.param
    if isinstance(p, IntParam):
        return list(range(p.min, p.max + 1, p.step))
    if isinstance(p, FloatParam):
        if p.step is None:
            return []
        return [p.min + i * p.step for i in range(int(round((p.max - p.min) / p.step)) + 1)]
    return dim.choices()


def grid_size(dims: list[Dimension]) -> int:
    """How many points a grid holds, a conditional dimension counted only where it applies."""
    total = 0

    def walk(index: int, values: dict[str, Any], product: int) -> None:
        nonlocal total
        if index == len(dims):
            total += product
            return
        dim = dims[index]
        if not all(values.get(p, _MISSING) in allowed for p, allowed in dim.when.items()):
            walk(index + 1, values, product)
        elif any(dim.name in d.when for d in dims):  # it gates others: one branch per value
            for value in grid_values(dim):
                walk(index + 1, {**values, dim.name: value}, product)
        else:
            walk(index + 1, values, product * len(grid_values(dim)))

    walk(0, {}, 1)
    return total
