"""Nothing let in: `nntrain validate` on generated and mutated configs never shows a traceback;
every rejection exits 2 and says where (a key path, or the file and line for YAML errors)."""

from __future__ import annotations

import copy
import math
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from clirunner import nntrain
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted([*ROOT.glob("configs/*.yaml"), *(ROOT / "tests" / "configs").glob("*.yaml")])
BASES = [yaml.safe_load(p.read_text()) for p in SHIPPED]
TOP_KEYS = ("name", "seed", "data", "model", "compile", "fit")
# a key path: a top-level key, maybe followed by .key / [index] parts, or the top itself
KEY_PATH = re.compile(r"(?:^|[\s:(])(?:<top>|(?:" + "|".join(TOP_KEYS) + r")(?:[.\[]|[:\s,]))")

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 10**30, -10**30, 0.5, 1e-300, 1e308, "", "auto", "relu",
                     "dense", "adam", "softmax", "mse", "same", "channels_last", "x:Y",
                     "val_loss", "max", "-1", "1e3", "[1, 2]", "{a: 1}", "yes", "~"]),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8,
)


def _paths(node: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*path, index))
    return out


def _parent(data: Any, path: tuple) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


def _typo(key: str, draw) -> str:
    if not key:
        return "x"
    i = draw(st.integers(0, len(key) - 1))
    kind = draw(st.sampled_from(["drop", "double", "swap", "upper"]))
    if kind == "drop":
        return key[:i] + key[i + 1:] or "x"
    if kind == "double":
        return key[:i] + key[i] + key[i:]
    if kind == "swap" and i + 1 < len(key):
        return key[:i] + key[i + 1] + key[i] + key[i + 2:]
    return key.upper()


@st.composite
def mutated_configs(draw) -> str:
    data = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["delete", "replace", "unknown_key", "typo", "number",
                                   "wrap_list", "wrap_dict", "unwrap"]))
        if not path:  # the whole document
            if op in ("replace", "wrap_list"):
                data = draw(values) if op == "replace" else [data]
            continue
        parent, key = _parent(data, path), path[-1]
        value = parent[key]
        if op == "delete":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(values)
        elif op == "unknown_key" and isinstance(value, dict):
            value[draw(st.text(min_size=1, max_size=10))] = draw(values)
        elif op == "typo" and isinstance(parent, dict) and isinstance(key, str):
            parent[_typo(key, draw)] = parent.pop(key)
        elif op == "number" and isinstance(value, int | float) and not isinstance(value, bool):
            parent[key] = draw(st.sampled_from(
                [0, -1, -value, value * 10**9, 10**40, math.nan, math.inf, -math.inf, 0.5,
                 value + 0.5, str(value)]))
        elif op == "wrap_list":
            parent[key] = [value]
        elif op == "wrap_dict":
            parent[key] = {draw(st.sampled_from(["dense", "args", "x", str(key)])): value}
        elif op == "unwrap" and isinstance(value, dict | list) and value:
            inner = next(iter(value.values())) if isinstance(value, dict) else value[0]
            parent[key] = inner
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


@st.composite
def garbled_text(draw) -> str:
    text = yaml.safe_dump(draw(st.sampled_from(BASES)), sort_keys=False)
    kind = draw(st.sampled_from(["insert", "truncate", "delete", "random", "indent"]))
    i = draw(st.integers(0, len(text)))
    if kind == "insert":
        return text[:i] + draw(st.sampled_from(
            [":", "- ", "\t", "{", "]", "&a ", "*a", "!!python/object:os.system ", "\n  x",
             "'", '"', "%", "@", "\x00", "\ufeff"])) + text[i:]
    if kind == "truncate":
        return text[:i]
    if kind == "delete":
        return text[:i] + text[i + draw(st.integers(1, 20)):]
    if kind == "indent":
        lines = text.splitlines()
        j = draw(st.integers(0, len(lines) - 1))
        lines[j] = " " * draw(st.integers(1, 3)) + lines[j]
        return "\n".join(lines)
    return draw(st.text(max_size=200))


def _names_a_place(output: str, config: Path) -> bool:
    """A key path (model.layers[1].dense.units), or the config file itself (its line for
    YAML syntax errors)."""
    return str(config) in output or bool(KEY_PATH.search(output))


@settings(max_examples=1000, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=st.one_of(mutated_configs(), mutated_configs(), garbled_text()))
def test_validate_rejects_bad_configs_cleanly(text: str):
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "fuzz.yaml"
        config.write_text(text, encoding="utf-8", errors="surrogatepass")
        result = nntrain("validate", str(config))  # an unexpected exception fails the test
    output = result.output
    assert "Traceback" not in output
    assert result.exit_code in (0, 2), output
    if result.exit_code == 2:
        assert output.startswith("error: "), output
        assert "\nhint: " in output, output  # and the fix
        assert _names_a_place(output, config), output
        if "not valid YAML" in output:
            assert re.search(re.escape(str(config)) + r":\d+:\d+", output), output


# -- crashes the fuzzing found, one regression test each ----------------------------------------


def test_a_control_character_is_a_yaml_error_with_its_line(tmp_path: Path):
    config = tmp_path / "nul.yaml"
    config.write_text("name: x\nseed: 1\nda\x00ta: {}\n", encoding="utf-8")
    result = nntrain("validate", str(config))
    assert result.exit_code == 2
    assert f"{config}:3:3: not valid YAML: character U+0000 is not allowed" in result.output


def test_yaml_errors_hint_at_the_right_fix(tmp_path: Path):
    brackets = tmp_path / "brackets.yaml"
    brackets.write_text("name: x\nmodel:\n  input: [2\n  layers: []\n")
    result = nntrain("validate", str(brackets))
    assert result.exit_code == 2
    assert f"{brackets}:4:9: not valid YAML" in result.output
    assert "brackets" in result.output and "!!python" not in result.output
    tag = tmp_path / "tag.yaml"
    tag.write_text("name: !!python/object/apply:os.system ['echo hi']\n")
    result = nntrain("validate", str(tag))
    assert result.exit_code == 2
    assert f"{tag}:1:7: not valid YAML" in result.output and "!!python" in result.output
