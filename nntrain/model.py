"""A graph of named layers as one init/apply pair, plus Keras's summary table."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from nntrain import initializers, regularizers
from nntrain.config.entries import entry_name, is_custom
from nntrain.errors import UserCodeError, UserError
from nntrain.graph import STATE, Graph
from nntrain.layers import LAYER_TYPES, Layer, ShapeError
from nntrain.layers.base import ChannelsFirst, Shape, ShapeErrors, Weight, make_layer
from nntrain.lazy import jax, jnp

Pytree = Any
FUSABLE = ("softmax", "sigmoid")  # activations a cross-entropy takes as logits instead


@dataclass(frozen=True)
class LayerInfo:
    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    non_trainable: int
    inputs: tuple[str, ...]
    shares: str | None = None  # a shared node: the layer whose weights it uses


def _in_matmul_precision(apply: Callable) -> Callable:
    """`apply` traced under the model's matmul precision: the dot products and convolutions
    it traces, and their gradients, keep it."""

    @functools.wraps(apply)
    def traced(self: Model, *args: Any, **kwargs: Any) -> Any:
        if self.matmul_precision is None:
            return apply(self, *args, **kwargs)
        with jax.default_matmul_precision(self.matmul_precision):
            return apply(self, *args, **kwargs)

    return traced


class Model:
    """`init(rng) -> (params, state)`; `apply(params, state, inputs, ...) -> (outputs, state)`.

    `params` and `state` are dicts keyed by layer name, then weight name (`dense_1/kernel`).
    """

    def __init__(self, graph: Graph, custom: dict[str, type] | None = None,
                 compute_dtype: str = "float32", matmul_precision: str | None = None) -> None:
        """`custom` maps `module:Class` layer types to the user's classes. With
        `compute_dtype` bfloat16 (mixed precision), each layer computes in bfloat16 on a
        bfloat16 copy of its float32 weights; gradients flow back through the cast to the
        float32 params, and state (BatchNorm's statistics) and outputs stay float32.
        `matmul_precision` (JAX's default, high, highest) sets how accelerators compute
        float32 matrix products and convolutions; None leaves JAX's own setting."""
        self.graph = graph
        self.compute_dtype = compute_dtype
        self.matmul_precision = matmul_precision
        types = {**LAYER_TYPES, **(custom or {})}
        # `shared` nodes call another layer again: node -> the layer whose weights they use
        self.shared: dict[str, str] = {n.name: _root(graph, n) for n in graph.nodes
                                       if n.type == "shared"}
        self.layers: dict[str, Layer] = {n.name: make_layer(types[n.type], n.args)
                                         for n in graph.nodes if n.name not in self.shared}
        self.layers.update({name: self.layers[root] for name, root in self.shared.items()})
        # each layer's random keys are folded in from its place among the layers, so that
        # taking a recurrent layer's state (a node of its own) leaves the others' keys alone
        self._key_index = {n.name: i for i, n in enumerate(graph.layer_nodes)}
        self._shared_weights: dict[str, tuple[Pytree, Pytree]] = {}
        # shapes and parameter counts, before (and without) creating any weight
        self._infos: list[LayerInfo] = []
        self.output_shapes: dict[str, tuple[int, ...]] = {}
        problems: list[ShapeError] = []  # every problem at once, as the schema's
        declared, declared_state = self._walk(
            lambda layer, _, shape: _layer_shapes(layer, shape), problems)
        # (layer, weight) -> function, for the weights whose layer gave a regularizer or a
        # constraint (Keras's kernel_regularizer, kernel_constraint, ...); layer -> function
        # for activity regularizers
        self.penalties: dict[tuple[str, str], Callable] = {}
        self.constraints: dict[tuple[str, str], Callable] = {}
        self.activity_penalties: dict[str, Callable] = {}
        for node in graph.nodes:
            try:
                for name, weight in declared_state.get(node.name, {}).items():
                    _check_initializer(node, name, weight)
                self._add_regularization(node, declared.get(node.name, {}))
            except ShapeError as e:
                problems.append(e)
        for name, root in self.shared.items():
            if root in self.activity_penalties:  # Keras: the layer's penalty, at each call
                self.activity_penalties[name] = self.activity_penalties[root]
            if name in self._shared_weights:
                problem = _sharing_problem(root, declared.get(root, {}),
                                           declared_state.get(root, {}),
                                           *self._shared_weights[name])
                if problem:
                    problems.append(ShapeError(f"layer '{name}' (shared: {root}) {problem}",
                                               graph.node(name).index))
        self.mask_origins = self._time_masks(problems)
        if problems:
            raise ShapeErrors(sorted(problems, key=lambda e: -1 if e.node_index is None
                                     else e.node_index))

    def _add_regularization(self, node: Any, declared: dict[str, Any]) -> None:
        where = f"layer '{node.name}' ({node.type})"
        entry = getattr(node.args, "activity_regularizer", None)
        if entry is not None:
            if entry_name(entry) == "orthogonal_regularizer":  # it would compare examples,
                # padding rows included
                raise ShapeError(f"{where}: orthogonal_regularizer is for weights, not an "
                                 "activity_regularizer", node.index)
            self.activity_penalties[node.name] = regularizers.penalty(entry)
        _check_custom_weight_arguments(node, declared)
        for name, weight in declared.items():
            if not isinstance(weight, Weight):
                continue
            _check_initializer(node, name, weight)
            weight = regularizers.checked(weight, f"{where}, weight '{name}':", node.index)
            if weight.regularizer is not None:
                problem = regularizers.shape_problem(weight.regularizer, weight.shape)
                if problem:
                    raise ShapeError(f"{where}, weight '{name}': {problem}", node.index)
                self.penalties[node.name, name] = regularizers.penalty(weight.regularizer)
            if weight.constraint is not None:
                _check_axes(weight, name, node)
                self.constraints[node.name, name] = regularizers.constraint(weight.constraint)

    def _time_masks(self, problems: list[ShapeError]) -> dict[str, tuple[str, ...]]:
        """The nodes whose outputs carry a mask over their steps, as Keras passes it on from an
        embedding's mask_zero or a masking layer: node -> the layers it comes from (several
        after a merge, which keeps the steps any of its inputs keeps, as Keras 3's merges
        do). Wherever Keras would drop the mask (a layer that cannot take it, a merge of
        masked and unmasked inputs), the config is refused instead. An output that still has
        the mask leaves its masked steps out of the loss and the metrics, as in Keras."""
        origins: dict[str, tuple[str, ...]] = {}
        for node in self.graph.nodes:
            if node.name not in self.node_shapes:
                continue  # it could not be built: its problem is reported already
            layer = self.layers[node.name]
            if _makes_time_mask(layer):
                steps = self._shape_of(node.name)[:-1]
                if len(steps) != 1:  # the loss, metrics and layers take (batch, steps) masks
                    source, undo = self._mask_source(node.name)
                    problems.append(ShapeError(
                        f"layer '{node.name}' ({node.type}): a mask over padded steps needs "
                        f"one axis of steps; {source} would mask a {len(steps)}-axis grid "
                        f"{steps}: reshape the input to (steps,) first, or {undo}",
                        node.index))
                    continue
                origins[node.name] = (node.name,)
                continue
            masked = [origins[s] for s in node.inputs if s in origins]
            if not masked:
                continue
            where = f"layer '{node.name}' ({node.type})"
            source, undo = self._mask_source(masked[0][0])
            mode = getattr(layer, "time_mask_mode", "drops")  # a user's class may say too
            problem = None
            if mode not in ("keeps", "uses") and isinstance(layer, ChannelsFirst):
                problem = (f"{where} reads its input channels-first, (channels, steps), and "
                           f"cannot take the mask that {source} puts on the steps of a "
                           f"(steps, features) sequence: drop data_format, or {undo}")
            elif mode not in ("keeps", "uses"):
                problem = (f"{where} cannot take the mask that {source} puts on padded steps: "
                           "put a recurrent layer (lstm, gru, simple_rnn, bidirectional) or "
                           f"global_average_pooling1d before it, or {undo}")
            elif mode == "keeps" and len(masked) < len(node.inputs):
                unmasked = [s for s in node.inputs if s not in origins]
                problem = (f"{where} joins inputs with the mask that {source} puts on padded "
                           f"steps and inputs without it ({', '.join(unmasked)}), where Keras "
                           "would drop the mask (or count every step as real): give every "
                           f"input the mask, or {undo}")
            elif mode == "keeps" and getattr(layer, "mask_values_matter", False) \
                    and len(set(masked)) > 1:
                problem = (f"{where} takes inputs with different masks, which Keras would "
                           "merge value by value skipping each input's masked steps; that is "
                           "not supported: merge inputs with one mask, or use add or "
                           "concatenate")
            elif mode == "keeps" and hasattr(layer, "time_mask_problem"):
                problem = layer.time_mask_problem([self._shape_of(s) for s in node.inputs])
                problem = problem and f"{where} {problem}"
            if problem:
                problems.append(ShapeError(problem, node.index))
            elif mode == "keeps":
                origins[node.name] = tuple(sorted({o for m in masked for o in m}))
            elif getattr(layer, "keeps_time_mask", lambda: False)() \
                    and node.inputs[0] in origins:  # the first input's (attention: the query's)
                origins[node.name] = origins[node.inputs[0]]
        return origins

    def _shape_of(self, name: str) -> tuple[int, ...]:
        if name in self.graph.inputs:
            return tuple(self.graph.inputs[name].shape)
        return tuple(self.node_shapes[name])

    def _mask_source(self, origin: str) -> tuple[str, str]:
        """What made a mask, and how to do without it, for messages."""
        origin = self.shared.get(origin, origin)  # a shared embedding's mask is its layer's
        kind = next(n.type for n in self.graph.nodes if n.name == origin)
        if kind == "embedding":
            return f"mask_zero on embedding '{origin}'", "drop mask_zero"
        return f"{kind} layer '{origin}'", f"drop the {kind} layer"

    @property
    def input_names(self) -> list[str]:
        return list(self.graph.inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self.graph.outputs)

    def input_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.graph.inputs[name].shape)

    def _walk(self, make, problems: list[ShapeError] | None = None) -> tuple[Pytree, Pytree]:
        """Each node's weights from `make(layer, index, input_shape) -> (params, state,
        output_shape)`, in graph order; records shapes and counts, and names the node a
        ShapeError comes from. With a `problems` list, each node's ShapeError goes there and
        the walk goes on past it (skipping the nodes that take its output)."""
        shapes: dict[str, Any] = {k: tuple(v.shape) for k, v in self.graph.inputs.items()}
        params, state, infos = {}, {}, []
        for node in self.graph.nodes:
            if any(source not in shapes for source in node.inputs):
                continue  # after a node that could not be built
            layer = self.layers[node.name]
            multi = getattr(layer, "multi_input", False)
            in_shapes = [shapes[s] for s in node.inputs]
            in_shape = in_shapes if multi or len(in_shapes) != 1 else in_shapes[0]
            try:
                if not multi and len(in_shapes) != 1:
                    raise ShapeError(f"it takes one input, got {len(in_shapes)}")
                with _user_code(node, "init"):  # a shared node's weights are its layer's
                    p, s, out = _layer_shapes(layer, in_shape) \
                        if node.name in self.shared or node.type == STATE \
                        else make(layer, self._key_index[node.name], in_shape)
            except ShapeError as e:
                problem = ShapeError(f"layer '{node.name}' ({node.type}) cannot take input "
                                     f"shape {format_shape(in_shape)}: {e}", node.index)
                if problems is None:
                    raise problem from None
                problems.append(problem)
                continue
            shapes[node.name] = tuple(out)
            if node.name in self.shared:  # weights it must match, none of its own
                self._shared_weights[node.name] = (p, s)
                p, s = {}, {}
            if p:
                params[node.name] = p
            if s:
                state[node.name] = s
            owner = self.shared.get(node.name)
            if node.type == STATE:  # no row of its own: its layer computes it
                continue
            infos.append(LayerInfo(node.name, node.type if owner is None else
                                   self.graph.node(owner).type, tuple(out), _count(p),
                                   _count(s), node.inputs, owner))
        self.node_shapes = shapes
        self.output_shapes = {name: shapes[name] for name in self.graph.outputs
                              if name in shapes}
        self._infos = infos
        return params, state

    def init(self, rng: jax.Array) -> tuple[Pytree, Pytree]:
        """New weights: layer i's from key fold_in(rng, i)."""
        return self._walk(lambda layer, i, shape: layer.init(jax.random.fold_in(rng, i), shape))

    @_in_matmul_precision
    def apply(
        self,
        params: Pytree,
        state: Pytree,
        inputs: dict[str, jax.Array],
        *,
        training: bool = False,
        rng: jax.Array | None = None,
        logits_for: Collection[str] = (),
        mask: jax.Array | None = None,
        until: str | None = None,
        activity: list[jax.Array] | None = None,
        output_masks: dict[str, jax.Array] | None = None,
    ) -> tuple[dict[str, jax.Array], dict[str, jax.Array], Pytree]:
        """Run the graph. Returns (outputs, logits, new_state): for outputs named in
        `logits_for` whose last activation is softmax/sigmoid, `logits` holds the values
        before it, so a cross-entropy can use the stable log-softmax form. `mask` marks the
        real rows of a padded batch. With `until`, stops before that node and returns the
        values of its inputs as `outputs` (for adapt). A list given as `activity` receives
        the penalty of each layer with an activity regularizer; a dict given as
        `output_masks`, the mask over the steps of each output that has one."""
        values: dict[str, jax.Array] = {
            name: _as_input(inputs[name], spec.dtype) for name, spec in self.graph.inputs.items()
        }
        new_state: dict[str, Any] = {}
        logits: dict[str, jax.Array] = {}
        time_masks: dict[str, jax.Array] = {}  # mask_zero's: True for the real steps
        mixed = self.compute_dtype != "float32"
        for node in self.graph.nodes:
            if node.name == until:
                return {s: values[s] for s in node.inputs}, {}, new_state
            if node.type == STATE:  # computed with its layer, just before
                continue
            layer = self.layers[node.name]
            x = [values[s] for s in node.inputs]
            x = x if getattr(layer, "multi_input", False) else x[0]
            layer_rng = None if rng is None else jax.random.fold_in(rng, self._key_index[node.name])
            owner = self.shared.get(node.name, node.name)
            p, s = params.get(owner, {}), state.get(owner, {})
            if mixed:
                p, x = _cast(p, self.compute_dtype), _cast(x, self.compute_dtype)
                s_dtypes = jax.tree.map(lambda v: v.dtype, s)
            extra = {"mask": mask} if getattr(layer, "uses_mask", False) else {}
            in_masks = [time_masks.get(s) for s in node.inputs]
            mode = getattr(layer, "time_mask_mode", None)
            if mode == "uses" and any(m is not None for m in in_masks):
                # a layer of several inputs gets one mask (or None) for each
                extra["time_mask"] = in_masks if isinstance(x, list) else in_masks[0]
            if _makes_time_mask(layer):
                time_mask = layer.time_mask(x)
            elif mode == "keeps":  # (a merge: the steps any of its inputs keeps, as Keras 3)
                present = [m for m in in_masks if m is not None]
                time_mask = functools.reduce(jnp.logical_or, present) if present else None
            else:
                time_mask = in_masks[0]
            with _user_code(node, "apply"):
                if node.name in logits_for and getattr(layer, "activation", None) in FUSABLE:
                    pre, s = layer.call(p, s, x, training=training, rng=layer_rng, **extra)
                    logits[node.name] = pre
                    y = jax.nn.softmax(pre) if layer.activation == "softmax" \
                        else jax.nn.sigmoid(pre)
                elif getattr(node.args, "return_state", False):  # its final state's nodes
                    (y, *final), s = layer.apply(p, s, x, training=training, rng=layer_rng,
                                                 with_states=True, **extra)
                    values.update({f"{node.name}.{part}": v
                                   for part, v in zip(node.args.states, final, strict=True)})
                else:
                    y, s = layer.apply(p, s, x, training=training, rng=layer_rng, **extra)
            if is_custom(node.type) and tuple(y.shape[1:]) != self.node_shapes[node.name]:
                raise UserCodeError(
                    f"custom layer '{node.name}' ({node.type}): apply returned examples of "
                    f"shape {tuple(y.shape[1:])}, its init said {self.node_shapes[node.name]}",
                    "make init return the shape apply gives (without the batch axis)")
            values[node.name] = y
            if time_mask is not None and node.name in self.mask_origins:
                time_masks[node.name] = time_mask
            if activity is not None and node.name in self.activity_penalties:
                activity.append(_activity_penalty(self.activity_penalties[node.name], y, mask))
            if s:
                if mixed:  # the state keeps its own dtype, so a scan carry stays the same
                    s = jax.tree.map(lambda v, d: v.astype(d), s, s_dtypes)
                new_state[node.name] = s
        outputs = {name: values[name] for name in self.graph.outputs}
        if output_masks is not None:
            output_masks.update({n: time_masks[n] for n in self.graph.outputs if n in time_masks})
        if mixed:  # losses and metrics in float32
            outputs, logits = _cast(outputs, jnp.float32), _cast(logits, jnp.float32)
        return outputs, logits, new_state

    def penalty(self, params: Pytree) -> jax.Array:
        """The weights' regularization penalties, summed: Keras adds them to the loss."""
        return sum((fn(params[layer][name]) for (layer, name), fn in self.penalties.items()),
                   jnp.zeros((), jnp.float32))

    def constrain(self, params: Pytree) -> Pytree:
        """`params` with every weight constraint applied (after each optimizer update)."""
        if not self.constraints:
            return params
        params = {layer: dict(weights) for layer, weights in params.items()}
        for (layer, name), fn in self.constraints.items():
            params[layer][name] = fn(params[layer][name])
        return params

    def adapt(self, params: Pytree, state: Pytree, x: dict[str, np.ndarray]) -> Pytree:
        """Let layers that learn from the data (normalization) see the training inputs that
        reach them; returns the state with their statistics filled in."""
        state = dict(state)
        for node in self.graph.nodes:
            layer = self.layers[node.name]
            if not hasattr(layer, "adapt"):
                continue
            if x is None:
                from nntrain.errors import DataError

                raise DataError(f"layer '{node.name}' ({node.type}) adapts to the training "
                                "data, which a generator does not hold",
                                "use data.train (files), or normalize inside the generator")
            inputs = self._node_inputs(params, state, x, node.name)
            inputs = inputs if getattr(layer, "multi_input", False) else inputs[0]
            state[node.name] = layer.adapt(state.get(node.name, {}), inputs)
        return state

    def _node_inputs(self, params, state, x, name: str, batch: int = 4096) -> list[np.ndarray]:
        if all(s in self.graph.inputs for s in self.graph.node(name).inputs):
            return [np.asarray(x[s]) for s in self.graph.node(name).inputs]
        run = jax.jit(lambda xb: self.apply(params, state, xb, until=name)[0])
        n = len(next(iter(x.values())))
        parts = [run({k: v[i:i + batch] for k, v in x.items()}) for i in range(0, n, batch)]
        return [np.concatenate([np.asarray(p[s]) for p in parts])
                for s in self.graph.node(name).inputs]

    def output_activation(self, name: str) -> str | None:
        return getattr(self.layers[name], "activation", None)

    def summary_rows(self) -> list[LayerInfo]:
        return list(self._infos)

    @property
    def trainable_count(self) -> int:
        return sum(info.params for info in self._infos)

    @property
    def non_trainable_count(self) -> int:
        return sum(info.non_trainable for info in self._infos)


def _root(graph: Graph, node: Any) -> str:
    """The layer a `shared` node calls, through shared nodes that share shared ones."""
    while node.type == "shared":
        node = graph.node(node.args.layer)
    return node.name


def _shapes(tree: Any) -> Any:
    """Weights (declared or traced) as their shapes, in the same nesting."""
    if isinstance(tree, dict):
        return {k: _shapes(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_shapes(v) for v in tree]
    return None if tree is None else tuple(tree.shape)


def _sharing_problem(root: str, params: Pytree, state: Pytree, wanted: Pytree,
                     wanted_state: Pytree) -> str | None:
    """Why a layer cannot be called on a shared node's input with its own weights."""
    if state or wanted_state:
        return (f"shares '{root}', which keeps state ({', '.join(state or wanted_state)}) "
                "that each call would update: only layers without state can be shared")
    if _shapes(params) != _shapes(wanted):
        return (f"would need weights of other shapes than '{root}' has: "
                f"{_shapes(wanted)} for this input, {_shapes(params)} for its own; give "
                "the shared layer inputs of the same shape")
    return None


def _makes_time_mask(layer: Any) -> bool:
    return bool(getattr(layer, "makes_time_mask", lambda: False)())


def _as_input(x: jax.Array, dtype: str) -> jax.Array:
    # Raw uint8 pixels may stay uint8 on the device; layers compute in float32.
    if dtype == "float32" and x.dtype != jnp.float32:
        return x.astype(jnp.float32)
    return x


def _cast(tree: Pytree, dtype) -> Pytree:
    """Floating-point leaves to `dtype`; integer inputs (pixels, token ids) stay as they are."""
    return jax.tree.map(
        lambda v: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, tree)


def _check_custom_weight_arguments(node: Any, declared: dict[str, Any]) -> None:
    """A user's layer given kernel_regularizer (or a constraint) that none of its weights
    takes would train without it: refused instead."""
    asked = [key for key in (getattr(node.args, "model_extra", None) or {})
             if key.endswith(("_regularizer", "_constraint"))]
    taken = any(isinstance(w, Weight) and (w.regularizer is not None or w.constraint is not None)
                for w in declared.values())
    if asked and not taken:
        raise ShapeError(
            f"layer '{node.name}' ({node.type}) is given {', '.join(asked)}, but none of its "
            "weights takes one: declare them in build() with Weight(..., regularizer=..., "
            "constraint=...) (README, Custom layers)", node.index)


def _activity_penalty(penalty: Callable, y: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Keras's activity penalty: the regularizer of the batch's outputs over the batch size;
    the padding rows of a last partial batch neither add to it nor count."""
    y = y.astype(jnp.float32)
    if mask is None:
        return penalty(y) / y.shape[0]
    rows = mask.astype(jnp.float32)
    y = y * jnp.reshape(rows, (-1,) + (1,) * (y.ndim - 1))
    return penalty(y) / jnp.maximum(rows.sum(), 1.0)


def _check_axes(weight: Weight, name: str, node: Any) -> None:
    rank, axes = len(weight.shape), regularizers.constraint_axes(weight.constraint)
    what = f"layer '{node.name}' ({node.type}): the {name}'s " \
        f"{entry_name(weight.constraint)} constraint"
    for axis in axes:
        if not -rank <= axis < rank:
            axes = "axis" if rank == 1 else "axes"
            raise ShapeError(f"{what} has axis {axis}, but the {name} has {rank} {axes} "
                             f"{weight.shape}: use 0..{rank - 1}", node.index)
    if len({axis % rank for axis in axes}) < len(axes):
        raise ShapeError(f"{what} names an axis twice: {axes}", node.index)


@contextlib.contextmanager
def _user_code(node: Any, method: str) -> Iterator[None]:
    """What a user's layer raises, reported as its error (exit 2), not as nntrain's."""
    if not is_custom(node.type):
        yield
        return
    try:
        yield
    except (ShapeError, UserError):
        raise
    except Exception as e:  # the user's code may raise anything
        raise UserCodeError(f"custom layer '{node.name}' ({node.type}): {method} raised "
                            f"{type(e).__name__}: {e}", "fix the layer's code") from None


def _check_initializer(node: Any, name: str, weight: Any) -> None:
    """An initializer that cannot fill the weight's shape is a config error, not a crash in
    the first step."""
    if not isinstance(weight, Weight) or callable(weight.initializer):
        return
    needs = initializers.needs_matrix(weight.initializer)
    rank = len(weight.shape)
    if needs and not (rank == 2 if needs == "exactly 2" else rank >= 2):
        which = initializers.name_of(weight.initializer)
        raise ShapeError(f"layer '{node.name}' ({node.type}), weight '{name}' of shape "
                         f"{weight.shape}: the {which} initializer needs {needs} dimensions "
                         f"({_matrix_hint(len(weight.shape))})", node.index)


def _matrix_hint(rank: int) -> str:
    if rank < 2:
        return "use it for kernels; zeros for biases"
    return "use it for a dense layer's kernel or a recurrent kernel; glorot_uniform for " \
        "convolution kernels"


def _layer_shapes(layer: Layer, input_shape: Any) -> tuple[Pytree, Pytree, Shape]:
    """A layer's weights as shapes. Layers that declare them (`build`) need no JAX; a user's
    layer with its own `init` is traced abstractly (jax.eval_shape), creating nothing."""
    if type(layer).init is Layer.init:
        return layer.build(input_shape)
    output_shape: list[Shape] = []

    def init():
        params, state, shape = layer.init(jax.random.key(0), input_shape)
        output_shape.append(tuple(shape))  # plain ints: kept out of the traced results
        return params, state

    params, state = jax.eval_shape(init)
    return params, state, output_shape[0]


def _count(tree: Pytree) -> int:
    """Values in a tree of weights or arrays (nested dicts, lists and tuples)."""
    if isinstance(tree, dict):
        return sum(_count(v) for v in tree.values())
    if isinstance(tree, list | tuple):
        return sum(_count(v) for v in tree)
    return math.prod(tree.shape) if hasattr(tree, "shape") else 0


def format_shape(shape: Any) -> str:
    """A shape as Keras's summary writes it, with the batch axis: (None, 28, 28)."""
    if isinstance(shape, list):
        return ", ".join(format_shape(s) for s in shape)
    return "(None, " + ", ".join(str(d) for d in shape) + ")" if shape else "(None,)"


