"""The model section as a graph of named nodes: names, edges, order and outputs.

Pure Python (no JAX), so `validate` can check a config's structure cheaply. Errors point at
the layer entries in the YAML.
"""

from __future__ import annotations

import graphlib
import re
from dataclasses import dataclass

from nntrain.config.entries import entry_args, entry_name
from nntrain.config.layers import LAYERS, LayerArgs
from nntrain.config.loader import ConfigError, Issue, LoadedConfig, closest
from nntrain.config.schema import InputConfig


@dataclass(frozen=True)
class Node:
    name: str
    type: str  # canonical layer type, e.g. "dense"
    args: LayerArgs
    inputs: tuple[str, ...]
    index: int  # position in model.layers, for error messages


# a node made for a final state a recurrent layer returns: NAME.h, NAME.c, NAME.forward_h, ...
STATE = "recurrent_state"


@dataclass(frozen=True)
class Graph:
    inputs: dict[str, InputConfig]
    nodes: tuple[Node, ...]  # in an order where every node comes after its inputs
    outputs: tuple[str, ...]

    @property
    def is_chain(self) -> bool:
        return len(self.inputs) == 1 and all(n.type != STATE for n in self.nodes) and all(
            n.inputs == ((self.nodes[i - 1].name,) if i else tuple(self.inputs))
            for i, n in enumerate(self.nodes)
        )

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    @property
    def layer_nodes(self) -> tuple[Node, ...]:
        """The nodes the config lists, without the final states of recurrent layers."""
        return tuple(n for n in self.nodes if n.type != STATE)


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _shared_issues(loaded: LoadedConfig, index: int, written: str, name: str, target: str,
                   entries: list, inputs: dict) -> list[Issue]:
    """`shared: NAME` takes the weights of a layer listed before it."""
    before = {n for i, _, _, _, n in entries if i < index}
    place = ("model", "layers", index, written, "layer")
    if target in before:
        return []
    if target in inputs:
        return [loaded.issue(place, f"'{target}' is an input, not a layer: a shared layer "
                             "calls a layer again")]
    later = {n for _, _, _, _, n in entries} - before
    why = "it is listed after this one (list the layer first)" if target in later - {name} \
        else "a layer cannot share its own weights" if target == name else "no such layer"
    return [loaded.issue(place, f"'{target}' is not a layer listed before '{name}': {why}",
                         closest(target, list(before)))]


def _unknown(loaded: LoadedConfig, place: tuple, source: str, where: str, name: str,
             known: list[str], entries: list) -> Issue:
    """An unknown node named as an input; a recurrent layer's state (NAME.h) says what it
    needs."""
    layer, _, part = source.partition(".")
    args = next((a for _, _, _, a, n in entries if n == layer), None)
    if part and layer != name and hasattr(args, "states"):
        if not args.return_state:
            return loaded.issue(place, f"'{source}' {where} is the final state of '{layer}', "
                                "which needs return_state: true")
        return loaded.issue(place, f"'{layer}' has no state '{part}': its final state is "
                            + ", ".join(f"'{layer}.{s}'" for s in args.states))
    return loaded.issue(place, f"unknown node '{source}' {where}",
                        closest(source, [k for k in known if k != name]))


def build_graph(loaded: LoadedConfig) -> Graph:
    """Name every node (Keras's `dense`, `dense_1`, ...), resolve edges, order and check them."""
    model = loaded.config.model
    inputs = model.input_specs()
    issues: list[Issue] = []
    names: dict[str, int] = {}
    counters: dict[str, int] = {}
    entries = []
    explicit = {entry_args(e).name for e in model.layers} | set(inputs)
    for index, entry in enumerate(model.layers):
        layer_type = LAYERS.canonical(entry_name(entry))
        args = entry_args(entry)
        name = args.name
        if name is None:  # Keras: snake_case type, then _1, _2 ... skipping taken names
            base = snake_case(layer_type.rpartition(":")[2])  # my_layers:Gated -> gated
            while True:
                count = counters.get(base, 0)
                counters[base] = count + 1
                name = base if count == 0 else f"{base}_{count}"
                if name not in explicit and name not in names:
                    break
        if name in names or name in inputs:
            issues.append(loaded.issue(("model", "layers", index), f"duplicate node name '{name}'"))
        names[name] = index
        entries.append((index, entry, layer_type, args, name))
    if issues:  # edges between ambiguous names would only add confusing errors
        raise ConfigError(issues)

    states = {f"{name}.{part}" for _, _, _, args, name in entries
              if getattr(args, "return_state", False) for part in args.states}
    known = [*inputs, *names, *states]
    nodes: dict[str, Node] = {}
    previous = next(iter(inputs)) if len(inputs) == 1 else None
    for index, _entry, layer_type, args, name in entries:
        place = ("model", "layers", index, entry_name(_entry))
        if args.inputs is None:
            if previous is None:
                issues.append(loaded.issue(
                    ("model", "layers", index),
                    f"layer '{name}' needs `inputs:` (the model has several inputs)",
                ))
                sources: tuple[str, ...] = ()
            else:
                sources = (previous,)
        else:
            sources = (args.inputs,) if isinstance(args.inputs, str) else tuple(args.inputs)
            if not sources:
                issues.append(loaded.issue(
                    (*place, "inputs"),
                    f"inputs of '{name}' is an empty list: name the node(s) it takes, or "
                    "leave inputs out to take the layer before it"))
        for source in sources:
            if source not in known or source == name:
                issues.append(_unknown(loaded, (*place, "inputs"), source,
                                       f"in inputs of '{name}'", name, known, entries))
        initial = args.initial_state_nodes() if hasattr(args, "initial_state_nodes") else ()
        for source in initial:  # the layer's inputs after its sequence
            if source.partition(".")[0] == name:
                issues.append(loaded.issue((*place, "initial_state"), f"'{name}' cannot start "
                                           f"from its own final state '{source}'"))
            elif source not in known:
                issues.append(_unknown(loaded, (*place, "initial_state"), source,
                                       f"for the initial_state of '{name}'", name, known,
                                       entries))
        sources = (*sources, *initial)
        mask = getattr(args, "attention_mask", None)
        if mask is not None:  # the layer's last input
            if mask not in known or mask == name:
                issues.append(loaded.issue(
                    (*place, "attention_mask"),
                    f"unknown node '{mask}' for the attention_mask of '{name}'",
                    closest(mask, [k for k in known if k != name])))
            sources = (*sources, mask)
        if layer_type == "shared":
            issues += _shared_issues(loaded, index, entry_name(_entry), name, args.layer,
                                     entries, inputs)
            target = next((a for _, _, _, a, n in entries if n == args.layer), None)
            if getattr(target, "attention_mask", None) is not None:
                issues.append(loaded.issue(
                    (*place, "layer"),
                    f"'{args.layer}' takes an attention_mask, which a shared call cannot "
                    "give it: share a multi_head_attention without one"))
            if getattr(target, "return_state", False) or \
                    getattr(target, "initial_state", None) is not None:
                issues.append(loaded.issue(
                    (*place, "layer"),
                    f"'{args.layer}' has return_state or initial_state, which a shared call "
                    "cannot have: share a recurrent layer without them"))
        nodes[name] = Node(name, layer_type, args, sources, index)
        previous = name
    used_states = {s for node in nodes.values() for s in node.inputs} & states
    for name in list(nodes):  # each right after its layer, which computes it
        nodes[name] = nodes.pop(name)
        for ref in (f"{name}.{part}" for part in getattr(nodes[name].args, "states", ())):
            if ref in used_states:
                nodes[ref] = Node(ref, STATE, nodes[name].args, (name,), nodes[name].index)

    outputs = tuple(model.outputs or ([previous] if previous else []))
    for i, output in enumerate(outputs):
        if output in states:  # its figures' names and per-output entries take plain names
            issues.append(loaded.issue(
                ("model", "outputs", i), f"'{output}' is a recurrent layer's final state, "
                "which cannot be a model output itself: give it a layer of its own, e.g. "
                f"`- activation: {{activation: linear, inputs: {output}, name: "
                f"{output.replace('.', '_')}}}`, and list that"))
        elif output not in nodes:
            issues.append(loaded.issue(("model", "outputs", i), f"unknown output node '{output}'",
                                       closest(output, list(nodes))))
        elif loaded.saved:
            continue  # a run an older nntrain trained so: read it back as it was
        elif output in outputs[:i]:
            issues.append(loaded.issue(("model", "outputs", i), f"output '{output}' is listed "
                                       "twice (its loss would count twice): list it once"))
        elif len(outputs) > 1 and (output == "val" or output.startswith("val_")):
            # a figure of each output is logged as <output>_<figure>, validation's as val_...
            issues.append(loaded.issue(("model", "outputs", i), f"output '{output}': its "
                                       f"figures ({output}_loss) would be taken for validation "
                                       "figures: name the layer otherwise"))
    if issues:
        raise ConfigError(issues)

    sorter = graphlib.TopologicalSorter({n.name: n.inputs for n in nodes.values()})
    try:
        order = [name for name in sorter.static_order() if name in nodes]
        seen = set(inputs)
        for name in nodes:  # keep the config's order when it already respects the edges
            if not set(nodes[name].inputs) <= seen:
                break
            seen.add(name)
        else:
            order = list(nodes)
    except graphlib.CycleError as e:
        cycle = e.args[1]
        first = nodes[cycle[0]]
        raise ConfigError([loaded.issue(
            ("model", "layers", first.index), "cycle between nodes " + " -> ".join(cycle)
        )]) from None

    used = set(outputs)
    for name in reversed(order):
        if name in used:
            used.update(nodes[name].inputs)
    for name in order:
        if name not in used:
            issues.append(loaded.issue(("model", "layers", nodes[name].index),
                                       f"node '{name}' does not lead to any output: connect it,"
                                       " list it in model.outputs, or remove it"))
    for name in inputs:
        if name not in used:
            issues.append(loaded.issue(("model", "inputs", name), f"input '{name}' is unused"))
    if issues:
        raise ConfigError(issues)
    return Graph(inputs, tuple(nodes[n] for n in order), outputs)
