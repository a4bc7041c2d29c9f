"""The config's JSON Schema, for YAML editors (completion, hover, checks as you type).

pydantic describes a config as it is after validation: every entry (layer, loss, metric,
optimizer, callback) as a one-key mapping to its arguments. A user also writes entries as a
bare name (`flatten`), a name and its main argument (`dropout: 0.2`, `sgd: 0.01`), Keras's
`{type: dense, units: 10}`, or `module:Class: {...}` for their own layer; and numbers such as
`rescaling: 1/255` as fractions. This module rewrites pydantic's schema so that every form the
loader accepts validates, and emits draft-07, the draft YAML editors support best.

The schema is a guide for editors, looser in places (Keras's `type:` form and class names,
its serialized `{class_name, config}` form, custom layers' arguments): `nntrain validate`
stays the authority.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic.json_schema import GenerateJsonSchema

from nntrain.config.entries import CUSTOM, CUSTOM_NAME, Registry

DRAFT = "http://json-schema.org/draft-07/schema#"
DEFS = "definitions"
FRACTION = r"^\s*[-+]?\d+(\.\d*)?\s*/\s*\d+(\.\d*)?\s*$"
# Keras's class names (Dense, SparseCategoricalCrossentropy, Adam): read as their snake_case
# names; any such name here, `validate` knows which are real
CLASS_NAME = r"^[A-Z][A-Za-z0-9]*$"
FORMS = {
    "layer": "a layer: a bare name (`flatten`), `name: {arguments}`, `name: main argument` "
             "(`dense: 10`, `dropout: 0.2`), Keras's `{type: name, ...}`, or your own "
             "`module:Class: {arguments}`",
    "loss": "a loss: a bare name (`mse`), `name: {arguments}` or `name: main argument` "
            "(`huber: 2.0`)",
    "metric": "a metric: a bare name (`accuracy`), `name: {arguments}` or `name: main "
              "argument` (`top_k_categorical_accuracy: 3`)",
    "optimizer": "an optimizer: a bare name (`adam`), `name: {arguments}` or `name: "
                 "learning rate` (`sgd: 0.01`)",
    "callback": "a callback: a bare name, or `name: {arguments}`",
    "recurrent layer": "a recurrent layer: `name: {arguments}` or `name: units` (`lstm: 64`)",
}


class _Generator(GenerateJsonSchema):
    """pydantic's generator, plus: fields parsed from `1/255` also take such a string."""

    def function_before_schema(self, schema):
        from nntrain.config.layers import _number

        inner = super().function_before_schema(schema)
        if schema.get("function", {}).get("function") is _number:
            return {"anyOf": [inner, {"type": "string", "pattern": FRACTION}]}
        return inner


def _registries() -> list[Registry]:
    from nntrain.config import schema
    from nntrain.config.layers import CONSTRAINTS, INITIALIZERS, RECURRENT, REGULARIZERS

    return [schema.LAYERS, schema.LOSSES, schema.METRICS, schema.OPTIMIZERS, schema.CALLBACKS,
            REGULARIZERS, CONSTRAINTS, INITIALIZERS, RECURRENT]


def _title(registry: Registry) -> str:
    # the prefix entries.Registry.entry_type gives its models ("recurrent layer":
    # Recurrent_Layer, as pydantic names the definitions)
    return registry.kind.title().replace(" ", "_")


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft-07) of a config file."""
    from nntrain.config.schema import Config

    raw = Config.model_json_schema(ref_template="#/" + DEFS + "/{model}",
                                   schema_generator=_Generator)
    defs: dict[str, Any] = raw.pop("$defs")
    entry_defs: dict[str, tuple[Registry, str]] = {}
    for registry in _registries():
        for name in registry.names:
            entry_defs[f"{_title(registry)}_{name}"] = (registry, name)
        if registry.custom_args is not None:
            entry_defs[f"{_title(registry)}_{CUSTOM}"] = (registry, CUSTOM)
    missing = [d for d in entry_defs if d not in defs]
    if missing:  # entries.py named its models differently: fail loudly, not half-rewritten
        raise RuntimeError(f"schema export: no definitions for {', '.join(missing[:5])}")

    used: set[str] = set()

    def rewrite(node: Any) -> Any:
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        if not isinstance(node, dict):
            return node
        node = {key: rewrite(value) for key, value in node.items()}
        members = node.get("oneOf")
        if isinstance(members, list) and members and all(
                isinstance(m, dict) and set(m) == {"$ref"} for m in members):
            targets = {entry_defs.get(m["$ref"].rsplit("/", 1)[-1], (None,))[0]
                       for m in members}
            if len(targets) == 1 and None not in targets:
                registry = targets.pop()
                del node["oneOf"]
                node["$ref"] = f"#/{DEFS}/{_title(registry)}"
                used.add(registry.kind)
        if "oneOf" in node:  # the config's own unions (a loss, or a loss per output)
            node["anyOf"] = node.pop("oneOf")  # overlap is harmless to an editor
        node.pop("discriminator", None)
        return node

    schema = rewrite(raw)
    defs = {key: rewrite(value) for key, value in defs.items()}
    for registry in _registries():
        if registry.kind in used:
            defs[_title(registry)] = _entry_schema(registry, defs)
    for key in entry_defs:
        defs.pop(key, None)
    for wrapper in ("BidirectionalArgs", "TimeDistributedArgs"):
        if wrapper in defs:  # short forms put the wrapped entry's key beside the wrapper's
            # own ({lstm: 64, merge_mode: sum}): looser here, `validate` checks them
            defs[wrapper].pop("required", None)
            defs[wrapper]["additionalProperties"] = True
    schema = _draft7_refs(schema)
    defs = {key: _draft7_refs(value) for key, value in defs.items()}
    _drop_unreferenced(schema, defs)
    return {
        "$schema": DRAFT,
        "title": "nntrain config",
        "description": "A model config for `nntrain fit`: data, model, compile and fit "
                       "sections, with Keras's names and defaults.",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
        DEFS: dict(sorted(defs.items())),
    }


def _entry_schema(registry: Registry, defs: dict[str, Any]) -> dict[str, Any]:
    """Every way to write one entry of a registry."""
    bare: list[str] = []
    by_name: dict[str, Any] = {}
    for name in registry.names:
        entry = defs[f"{_title(registry)}_{name}"]
        args_ref = entry["properties"][name]
        args = defs[args_ref["$ref"].rsplit("/", 1)[-1]]
        forms: list[Any] = [args_ref]
        if not args.get("required"):
            bare.append(name)
            forms.append({"type": "null"})
        positional = registry.args[registry.canonical(name)].positional
        if positional:
            value = copy.deepcopy(args["properties"][positional])
            for key in ("default", "title"):
                value.pop(key, None)
            forms.append(value)
        by_name[name] = {"anyOf": forms}
        if args.get("description"):
            by_name[name]["description"] = args["description"]
    mapping: dict[str, Any] = {
        "type": "object", "properties": by_name, "additionalProperties": False,
        "minProperties": 1, "maxProperties": 1,
        "patternProperties": {CLASS_NAME: {"description": f"a Keras {registry.kind} class's "
                                                          "name and its arguments"}},
    }
    if registry.kind == "layer":  # `repeat: n` beside a layer (nntrain.config.loader)
        mapping["properties"]["repeat"] = {
            "type": "integer", "minimum": 0,
            "description": "n copies of this layer in the chain (0 removes it)"}
        mapping["maxProperties"] = 2
    keras_names: Any = {"enum": list(registry.names)}
    if registry.custom_args is not None:
        custom = defs[f"{_title(registry)}_{CUSTOM}"]["properties"]["args"]
        mapping["patternProperties"][CUSTOM_NAME.pattern] = {
            "anyOf": [custom, {"type": "null"}],
            "description": f"your own {registry.kind} class, found next to the config or "
                           "on the Python path"}
        keras_names = {"anyOf": [keras_names, {"type": "string",
                                               "pattern": CUSTOM_NAME.pattern}]}
    return {
        "title": _title(registry),
        "description": FORMS.get(registry.kind, registry.kind),
        "anyOf": [
            {"type": "string", "enum": bare},
            {"type": "string", "pattern": CLASS_NAME},
            mapping,
            {"type": "object", "required": ["type"], "properties": {"type": keras_names}},
            {"type": "object", "required": ["class_name"], "additionalProperties": False,
             "properties": {"class_name": {"type": "string"},
                            "config": {"type": ["object", "null"]},
                            "module": {"type": ["string", "null"]},
                            "registered_name": {"type": ["string", "null"]}},
             "description": "Keras's serialized form (keras.saving.serialize_keras_object)"},
        ],
    }


def _draft7_refs(node: Any) -> Any:
    """Draft-07 ignores keywords beside `$ref`: keep them by moving the `$ref` into allOf."""
    if isinstance(node, list):
        return [_draft7_refs(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _draft7_refs(value) for key, value in node.items()}
    if "$ref" in node and len(node) > 1:
        node["allOf"] = [{"$ref": node.pop("$ref")}]
    return node


def _drop_unreferenced(schema: dict[str, Any], defs: dict[str, Any]) -> None:
    def refs(node: Any, found: set[str]) -> set[str]:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(f"#/{DEFS}/"):
                found.add(ref.rsplit("/", 1)[-1])
            for value in node.values():
                refs(value, found)
        elif isinstance(node, list):
            for item in node:
                refs(item, found)
        return found

    reachable: set[str] = set()
    todo = refs(schema, set())
    while todo:
        name = todo.pop()
        if name in reachable or name not in defs:
            continue
        reachable.add(name)
        todo |= refs(defs[name], set())
    for name in [n for n in defs if n not in reachable]:
        del defs[name]
