"""A validated config turned into the pieces training needs: graph, model, losses, metrics,
optimizer. Anything that does not fit together is a config error here, before compiling."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import numpy as np
from pydantic import BaseModel, ValidationError

from nntrain.config.callbacks import ModelCheckpointArgs, checkpoint_fields, resolve_mode
from nntrain.config.compile import LOSSES, METRICS, OPTIMIZERS
from nntrain.config.entries import entry_args, entry_name, is_custom
from nntrain.config.layers import ActivationName
from nntrain.config.loader import ConfigError, Issue, LoadedConfig, closest, format_path
from nntrain.custom import load_object
from nntrain.data.sources import Dataset, ModelIO
from nntrain.errors import DataError, UserError
from nntrain.graph import Graph, build_graph
from nntrain.layers import Layer, ShapeError
from nntrain.layers.base import ShapeErrors
from nntrain.losses import Loss, build_loss
from nntrain.metrics import Metric, build_metric
from nntrain.model import Model
from nntrain.optimizers import build_optimizer

if TYPE_CHECKING:
    import optax


@dataclass
class Setup:
    loaded: LoadedConfig
    graph: Graph
    model: Model
    losses: dict[str, Loss]
    loss_weights: dict[str, float]
    metrics: dict[str, list[Metric]]
    io: ModelIO
    # built on first use: checking a config needs neither it nor optax (nor JAX)
    built_optimizer: optax.GradientTransformation | None = None

    @property
    def optimizer(self) -> optax.GradientTransformation:
        if self.built_optimizer is None:
            entry = self.loaded.config.compile.optimizer
            self.built_optimizer = build_optimizer(entry_name(entry), entry_args(entry))
        return self.built_optimizer

    @property
    def multi_output(self) -> bool:
        return len(self.graph.outputs) > 1

    def log_names(self) -> list[str]:
        """Keras's history keys: loss, then <output>_loss and <output>_<metric> or <metric>."""
        names = ["loss"]
        if self.multi_output:
            names += [f"{out}_loss" for out in self.graph.outputs]
        for out, metrics in self.metrics.items():
            prefix = f"{out}_" if self.multi_output else ""
            names += [prefix + m.name for m in metrics]
        return names

    def monitor_mode(self, monitor: str, mode: str) -> str:
        """`mode` with `auto` resolved as Keras resolves it, by the monitored metric's kind:
        a metric given a name of its own (`auc: {name: roc}`) is maximised as an AUC."""
        kind = self.renamed_metrics().get(monitor.removeprefix("val_"))
        return resolve_mode(kind or monitor, mode)

    def renamed_metrics(self) -> dict[str, str]:
        """Logged name -> metric kind, for the metrics given a `name` of their own (whose
        direction their name may not tell), as logged: a repeated name with its suffix
        (`hits_1`)."""
        config = self.loaded.config
        outputs = list(self.graph.outputs)
        plain = _per_output(config.compile.metrics, outputs)
        weighted = _per_output(config.compile.weighted_metrics, outputs)
        renamed = {}
        for out, metrics in self.metrics.items():  # built from these entries, in this order
            entries = [*plain.get(out, []), *weighted.get(out, [])]
            for entry, metric in zip(entries, metrics, strict=True):
                if entry_args(entry).name:
                    renamed[(f"{out}_" if self.multi_output else "") + metric.name] = \
                        METRICS.canonical(entry_name(entry))
        return renamed


def prepare(loaded: LoadedConfig, training: bool = True) -> Setup:
    """Build and cross-check everything in the config; raises ConfigError listing problems.
    `training` false: a run's model read back for inference, which holds only its weights."""
    config = loaded.config
    graph = build_graph(loaded)
    outputs = list(graph.outputs)
    issues: list[Issue] = []

    loss_entries = config.compile.loss
    if not isinstance(loss_entries, dict):  # one loss for every output, as in Keras
        loss_entries = {out: loss_entries for out in outputs}
    _check_names(loaded, ("compile", "loss"), loss_entries, outputs, issues)
    for out in outputs:
        if out not in loss_entries and isinstance(config.compile.loss, dict):
            issues.append(loaded.issue(("compile", "loss"), f"no loss for output '{out}'"))
    weights = config.compile.loss_weights or {}
    _check_names(loaded, ("compile", "loss_weights"), weights, outputs, issues)
    metric_entries = _per_output(config.compile.metrics, outputs)
    weighted_entries = _per_output(config.compile.weighted_metrics, outputs)
    _check_names(loaded, ("compile", "metrics"), metric_entries, outputs, issues)
    _check_names(loaded, ("compile", "weighted_metrics"), weighted_entries, outputs, issues)
    _check_shared_class_metrics(loaded, outputs, loss_entries, issues)
    if isinstance(config.data.sample_weight, dict):
        _check_names(loaded, ("data", "sample_weight"), config.data.sample_weight, outputs,
                     issues)
    if not loaded.saved:  # a run an older nntrain trained, which let them pass: read back
        _check_names(loaded, ("data", "outputs"), config.data.outputs or {}, outputs, issues)
        _check_names(loaded, ("data", "inputs"), config.data.inputs or {}, list(graph.inputs),
                     issues, "input")
    if config.data.one_hot and not loaded.saved and not any(LOSSES.canonical(entry_name(e)) ==
                                       "categorical_crossentropy" for e in loss_entries.values()):
        issues.append(loaded.issue(("data", "one_hot"), "one_hot makes one-hot targets for "
                                   "categorical_crossentropy, and no output is trained with it"))
    if issues:
        raise ConfigError(issues)

    custom = _custom_layers(loaded, graph)
    try:
        model = Model(graph, custom, compute_dtype=loaded.config.fit.precision,
                      matmul_precision=loaded.config.fit.matmul_precision)
    except (ShapeError, ShapeErrors) as e:
        raise ConfigError([
            loaded.issue(("model", "layers", err.node_index) if err.node_index is not None
                         else ("model",), str(err))
            for err in (e.errors if isinstance(e, ShapeErrors) else [e])]) from None

    _check_weights_fit_in_memory(loaded, graph, model, training)
    _check_from_logits(loaded, model, loss_entries)
    _check_single_unit_softmax(loaded, graph, model)
    losses = {}
    for out in outputs:
        entry = loss_entries[out]
        losses[out] = build_loss(entry_name(entry), entry_args(entry), model.output_activation(out))
    metrics = {out: _keras_names(
        [build_metric(entry_name(e), entry_args(e)) for e in metric_entries.get(out, [])],
        [replace(build_metric(entry_name(e), entry_args(e)), weighted=True)
         for e in weighted_entries.get(out, [])]) for out in outputs}
    io = ModelIO(
        inputs={name: (tuple(spec.shape), spec.dtype) for name, spec in graph.inputs.items()},
        outputs=dict(model.output_shapes),
        sparse_outputs=frozenset(o for o, loss in losses.items() if loss.sparse_labels),
        one_hot_outputs=_one_hot_outputs(loss_entries),
        losses={o: loss.name for o, loss in losses.items()},
        metrics={out: tuple((section, entry_name(e)) for section, entries in (
            ("metrics", metric_entries), ("weighted_metrics", weighted_entries))
            for e in entries.get(out, [])) for out in outputs},
        embedded=_embedded_inputs(graph),
    )
    setup = Setup(loaded, graph, model, losses, {o: weights.get(o, 1.0) for o in outputs},
                  metrics, io)
    _check_monitors(setup)
    _check_generated_batches(setup)
    _check_metric_args(setup)
    _check_class_weight(setup)
    _check_masked_outputs(setup)
    from nntrain.train.callbacks import check_callbacks

    check_callbacks(loaded)  # callback settings and the user code they name
    return setup


def _custom_layers(loaded: LoadedConfig, graph: Graph) -> dict[str, type]:
    """Import the user's layer classes the config names, and check their arguments with the
    class's own `Args` model when it has one."""
    found: dict[str, type] = {}
    search = [Path(loaded.source).resolve().parent] if loaded.search_dir is None \
        else [loaded.search_dir]
    for node in graph.nodes:
        if not is_custom(node.type):
            continue
        if node.type not in found:
            try:
                cls = load_object(node.type, search)
            except UserError as e:
                raise ConfigError([loaded.issue(("model", "layers", node.index), e.message + (
                    f" ({e.hint})" if e.hint else ""))]) from None
            if not (callable(getattr(cls, "init", None)) and callable(getattr(cls, "apply", None))):
                raise ConfigError([loaded.issue(
                    ("model", "layers", node.index),
                    f"{node.type} is not a layer: it needs init(rng, input_shape) and "
                    "apply(params, state, x, *, training, rng) methods")])
            found[node.type] = cls
        _check_custom_activation(loaded, node, found[node.type])
        args_model = getattr(found[node.type], "Args", None)
        if isinstance(args_model, type) and issubclass(args_model, BaseModel):
            try:
                args_model.model_validate(node.args.model_dump())
            except ValidationError as e:
                raise ConfigError([loaded.issue(
                    ("model", "layers", node.index, node.type),
                    f"{format_path(err['loc'])}: {err['msg']}") for err in e.errors()]) from None
    return found


def _check_custom_activation(loaded: LoadedConfig, node, cls: type) -> None:
    """A user's Layer subclass that keeps nntrain's apply and activation property gets its
    `activation` applied by nntrain: a name nntrain does not know is a config error, not a
    KeyError in training."""
    activation = getattr(node.args, "activation", None)
    names = get_args(ActivationName)
    applied_by_nntrain = isinstance(cls, type) and issubclass(cls, Layer) and \
        cls.apply is Layer.apply and cls.activation is Layer.activation
    if isinstance(activation, str) and activation not in names and applied_by_nntrain:
        raise ConfigError([loaded.issue(
            ("model", "layers", node.index, node.type, "activation"),
            f"unknown activation '{activation}'", closest(activation, list(names)))])


def _embedded_inputs(graph: Graph) -> dict[str, tuple[tuple[str, int], ...]]:
    """For each model input, the embeddings its values index (directly, or through layers
    that only move them: flatten, reshape), with their input_dim."""
    by_name = {node.name: node for node in graph.nodes}
    found: dict[str, list[tuple[str, int]]] = {name: [] for name in graph.inputs}
    for node in graph.nodes:
        owner = node
        while owner.type == "shared":  # a shared embedding indexes its own input too
            owner = by_name[owner.args.layer]
        wrapped = entry_args(owner.args.layer) if owner.type == "time_distributed" else None
        if owner.type != "embedding" and not (
                wrapped is not None and entry_name(owner.args.layer) == "embedding"):
            continue
        source = node.inputs[0]
        while source in by_name and by_name[source].type in ("flatten", "reshape"):
            source = by_name[source].inputs[0]
        if source in found:
            found[source].append((node.name, (wrapped or owner.args).input_dim))
    return {name: tuple(layers) for name, layers in found.items() if layers}


def _check_from_logits(loaded: LoadedConfig, model: Model, loss_entries: dict) -> None:
    """`from_logits: true` on an output that ends in softmax or sigmoid: its values are
    probabilities, not logits. Keras on JAX would apply the softmax a second time and train
    on a wrong loss without a word; the config contradicts itself, so say so."""
    if loaded.saved:  # a run an older nntrain trained so: read it back as it was
        return
    issues = []
    per_output = isinstance(loaded.config.compile.loss, dict)
    for out, entry in loss_entries.items():
        activation = model.output_activation(out)
        if getattr(entry_args(entry), "from_logits", False) and \
                activation in ("softmax", "sigmoid"):
            issues.append(loaded.issue(
                ("compile", "loss", *((out,) if per_output else ()), entry_name(entry),
                 "from_logits"),
                f"from_logits: true, but output '{out}' ends in {activation}, so its values "
                "are probabilities, not logits: leave from_logits out (the loss is then "
                f"computed from the values before the {activation}, as stably), or end the "
                "output with a linear activation"))
    if issues:
        raise ConfigError(issues)


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return None


def _optimizer_copies(loaded: LoadedConfig) -> tuple[str, int]:
    """The optimizer's name and how many arrays the size of the weights its state holds."""
    entry = loaded.config.compile.optimizer
    name, args = OPTIMIZERS.canonical(entry_name(entry)), entry_args(entry)
    copies = {"sgd": int(getattr(args, "momentum", 0) > 0), "adagrad": 1,
              "rmsprop": 1 + int(getattr(args, "momentum", 0) > 0)
              + int(getattr(args, "centered", False))}.get(
        name, 2 + int(getattr(args, "amsgrad", False)))  # adam's kin: two moments
    return name, copies + int(args.use_ema)  # the weights' moving average


def _check_weights_fit_in_memory(loaded: LoadedConfig, graph: Graph, model: Model,
                                 training: bool = True) -> None:
    """A model whose weights (in training: with their gradients and optimizer state) would
    not fit in this machine's memory: refused here, where allocating them would fail deep in
    XLA or leave the machine swapping (the activations come on top)."""
    memory = _memory_bytes()
    count = model.trainable_count + model.non_trainable_count
    optimizer, copies = _optimizer_copies(loaded)
    needed = 4 * (count + (model.trainable_count * (1 + copies) if training else 0))
    if memory is None or needed <= memory:
        return
    largest = max(model.summary_rows(), key=lambda info: info.params + info.non_trainable)
    state = f" and {optimizer} state ({copies} more of each)" if copies else ""
    held = f"with their gradients{state} training holds" if training else "that is"
    fix = f"layer '{largest.name}' alone has {largest.params + largest.non_trainable:,} " \
        "weights: make it smaller" if training else \
        "read the run back on a machine with more memory"
    raise ConfigError([loaded.issue(
        ("model", "layers", graph.node(largest.name).index),
        f"the model has {count:,} weights; {held} {needed / 2**30:,.1f} GiB in float32, more "
        f"than this machine's {memory / 2**30:,.1f} GiB of memory; {fix}")])


def _check_single_unit_softmax(loaded: LoadedConfig, graph: Graph, model: Model) -> None:
    """A softmax over one unit is 1 whatever its input: such an output learns nothing (the
    classic slip for a yes/no output, which wants a sigmoid)."""
    if loaded.saved:
        return
    issues = [loaded.issue(
        ("model", "layers", graph.node(out).index),
        f"output '{out}' is a softmax over one unit, which is always 1, so it can learn "
        "nothing: for a yes/no output use activation: sigmoid (with binary_crossentropy); for "
        "classes give units the number of classes")
        for out in graph.outputs if model.output_activation(out) == "softmax"
        and model.output_shapes[out][-1:] == (1,)]
    if issues:
        raise ConfigError(issues)


def _one_hot_outputs(loss_entries: dict) -> frozenset[str]:
    """The outputs data.one_hot converts: those trained with categorical_crossentropy; where
    none is (a run an older nntrain trained, which converted every output), all of them."""
    chosen = frozenset(out for out, entry in loss_entries.items()
                       if LOSSES.canonical(entry_name(entry)) == "categorical_crossentropy")
    return chosen or frozenset(loss_entries)


REGRESSION_LOSSES = {"mean_squared_error", "mean_absolute_error", "huber", "cosine_similarity"}
CLASS_METRICS = {"accuracy", "binary_accuracy", "categorical_accuracy",
                 "sparse_categorical_accuracy", "top_k_categorical_accuracy",
                 "sparse_top_k_categorical_accuracy", "precision", "recall", "auc"}


def _check_shared_class_metrics(loaded: LoadedConfig, outputs: list[str], loss_entries: dict,
                                issues: list[Issue]) -> None:
    """A metrics list (not a mapping) applies to every output, as in the textbook's Keras; a
    class metric on an output trained for values would log a meaningless 0."""
    values = [out for out in outputs if out in loss_entries and LOSSES.canonical(
        entry_name(loss_entries[out])) in REGRESSION_LOSSES]
    if len(outputs) < 2 or loaded.saved or not values:  # (older nntrains trained such runs)
        return
    for section in ("metrics", "weighted_metrics"):
        entries = getattr(loaded.config.compile, section)
        if isinstance(entries, dict):
            continue
        for i, entry in enumerate(entries):
            name = METRICS.canonical(entry_name(entry))
            if name in CLASS_METRICS:
                example = ", ".join(f"{out}: [{'mae' if out in values else name}]"
                                    for out in outputs)
                issues.append(loaded.issue(
                    ("compile", section, i),
                    f"{entry_name(entry)} would apply to every output, and "
                    f"{', '.join(repr(v) for v in values)} learns values, not classes: give "
                    f"each output its metrics, e.g. {{{example}}}"))


def _per_output(entries: list | dict, outputs: list[str]) -> dict[str, list]:
    return entries if isinstance(entries, dict) else {out: entries for out in outputs}


def _keras_names(plain: list[Metric], weighted: list[Metric]) -> list[Metric]:
    """Log names as Keras 3 gives them (`CompileMetrics.result`): a repeated name gets a
    suffix (accuracy, accuracy_1); a weighted metric whose name is taken is
    weighted_<name>."""
    counts: dict[str, int] = {}

    def unique(name: str) -> str:
        counts[name] = counts.get(name, 0) + 1
        return name if counts[name] == 1 else f"{name}_{counts[name] - 1}"

    named = [replace(m, name=unique(m.name)) for m in plain]
    return named + [replace(m, name=unique(m.name if m.name not in counts
                                           else f"weighted_{m.name}")) for m in weighted]


def _check_names(loaded, path, mapping, outputs, issues, what: str = "output") -> None:
    for key in mapping:
        if key not in outputs:
            issues.append(loaded.issue(
                (*path, key), f"'{key}' is not an {what} of the model ({what}s: "
                f"{', '.join(outputs)})", closest(key, outputs)))


def _check_monitors(setup: Setup, has_validation: bool | None = None) -> None:
    """Every figure a callback names (a monitor, a checkpoint filepath's fields) is logged.
    A generator's validation split is known only once it is called: assumed here, checked
    again by `check_generated_validation`."""
    config = setup.loaded.config
    generated = config.data.generator is not None
    if has_validation is None:
        has_validation = config.data.validation is not None or generated
    missing = f" (the generator gives no 'validation' split: {config.data.generator}" \
        "('validation', epoch) returned None)" if generated else \
        " (there is no validation data: add data.validation)"
    train_names = setup.log_names()
    names = train_names + ([f"val_{n}" for n in train_names] if has_validation else [])
    issues = []
    for i, entry in enumerate(config.fit.callbacks):
        args = entry_args(entry)
        monitor = getattr(args, "monitor", None)
        named = [("monitor", monitor)] if monitor is not None else []
        if isinstance(args, ModelCheckpointArgs):
            named += [("filepath", f) for f in checkpoint_fields(args.filepath) if f != "epoch"]
        for key, name in named:
            if name in names:
                continue
            hint = "" if has_validation or not name.startswith("val_") else missing
            issues.append(setup.loaded.issue(
                ("fit", "callbacks", i, entry_name(entry), key),
                f"'{name}' is not a logged figure{hint}; logged: {', '.join(names)}",
                closest(name, names)))
    if issues:
        raise ConfigError(issues)


def _check_generated_batches(setup: Setup) -> None:
    config = setup.loaded.config
    if config.data.generator is None:
        return
    if config.fit.validation_batch_size is not None:
        raise ConfigError([setup.loaded.issue(
            ("fit", "validation_batch_size"),
            "a generator's batches have fit.batch_size rows in every split: drop "
            "fit.validation_batch_size, the generator makes the validation batches")])
    adapting = [node for node in setup.graph.nodes
                if hasattr(setup.model.layers[node.name], "adapt")]
    if adapting:
        node = adapting[0]
        raise ConfigError([setup.loaded.issue(
            ("model", "layers", node.index),
            f"layer '{node.name}' ({node.type}) adapts to the training data, which a "
            "generator does not hold: give it mean and variance, use data.train (files), "
            "or normalize inside the generator")])


def check_generated_validation(setup: Setup, dataset: Dataset) -> None:
    """Once a generator's splits are known: callbacks that watch validation figures need
    the generator to give a validation split."""
    if setup.loaded.config.data.generator is not None and dataset.validation is None:
        _check_monitors(setup, has_validation=False)


def _check_metric_args(setup: Setup) -> None:
    """`class_id` and `top_k` within the output's units: JAX would clamp an index past the
    last class and score another class without a word. On an output trained from logits, no
    metric that reads its values as probabilities."""
    compile_config = setup.loaded.config.compile
    issues = []
    for section in ("metrics", "weighted_metrics"):
        entries = getattr(compile_config, section)
        for out in setup.graph.outputs:
            listed = entries.get(out, []) if isinstance(entries, dict) else entries
            units = setup.io.outputs[out][-1] if setup.io.outputs[out] else 1
            loss = compile_config.loss.get(out) if isinstance(compile_config.loss, dict) \
                else compile_config.loss
            logits = bool(getattr(entry_args(loss), "from_logits", False)) and \
                not setup.loaded.saved  # a run an older nntrain trained so: read it back
            issues += _metric_arg_issues(setup, listed, units, logits, (
                "compile", section, *((out,) if isinstance(entries, dict) else ())))
    if issues:
        raise ConfigError(issues)


def _metric_arg_issues(setup: Setup, listed: list, units: int, logits: bool,
                       place: tuple) -> list[Issue]:
    issues = []
    for i, entry in enumerate(listed):
        name, args = METRICS.canonical(entry_name(entry)), entry_args(entry)
        for key in ("class_id", "top_k"):
            value = getattr(args, key, None)
            limit = units - 1 if key == "class_id" else units
            if value is not None and value > limit:
                issues.append(setup.loaded.issue(
                    (*place, i, entry_name(entry), key),
                    f"{key} {value} is past the output's {units} units (at most {limit})"))
        fix = _probability_metric_fix(name, args, units) if logits else None
        if fix:
            issues.append(setup.loaded.issue(
                (*place, i, entry_name(entry)),
                f"the output gives logits (its loss has from_logits: true), but "
                f"{entry_name(entry)} reads its values as probabilities: {fix[0]} (Keras "
                f"does the same, silently); give {fix[1]}"))
    return issues


def _probability_metric_fix(name: str, args: Any, units: int) -> tuple[str, str] | None:
    """Why a metric that reads probabilities misreads logits, and the entry that scores them
    as it means to: a threshold of 0 (the logit of probability 0.5), or AUC told of them."""
    above = "it counts a value above 0.5 as positive, and a logit of 0.5 is a probability " \
            "of 0.62"
    if (name == "binary_accuracy" or name == "accuracy" and units == 1) and \
            getattr(args, "threshold", 0.5) == 0.5:
        return above, "binary_accuracy: {threshold: 0}"
    if name in ("precision", "recall") and args.thresholds is None and args.top_k is None:
        return above, f"{name}: {{thresholds: 0}}"
    if name == "auc" and not args.from_logits:
        return ("its thresholds span 0..1, so logits outside that range all fall at its "
                "ends", "auc: {from_logits: true}")
    return None


def _check_class_weight(setup: Setup) -> None:
    class_weight = setup.loaded.config.fit.class_weight
    if not class_weight:
        return
    outputs = list(setup.graph.outputs)
    shape = setup.io.outputs[outputs[0]] if len(outputs) == 1 else ()
    loss = setup.losses[outputs[0]].name if len(outputs) == 1 else ""
    # one class per example: a sequence of predictions (time, classes) has no single class
    if len(shape) != 1 or not (
            loss in ("sparse_categorical_crossentropy", "categorical_crossentropy")
            or (loss == "binary_crossentropy" and shape == (1,))):
        raise ConfigError([setup.loaded.issue(
            ("fit", "class_weight"),
            "class_weight needs one output of one class per example, trained with "
            "sparse_categorical_crossentropy, categorical_crossentropy, or "
            "binary_crossentropy on one unit; for other outputs give per-example weights in "
            "data.sample_weight")])
    classes = _class_count(setup)
    # class names are checked against the data's (class_weight_vector)
    bad = [c for c in class_weight if isinstance(c, int) and not 0 <= c < classes]
    if bad:
        raise ConfigError([setup.loaded.issue(
            ("fit", "class_weight"), f"classes {bad} are outside 0..{classes - 1}")])


def _check_masked_outputs(setup: Setup) -> None:
    """An output that still has a mask over its steps leaves them out of its loss and its
    metrics; the metrics that are not means over values (precision, recall, AUC) cannot."""
    issues = []
    for out in setup.graph.outputs:
        if out not in setup.model.mask_origins:
            continue
        for metric in setup.metrics[out]:
            if not metric.takes_step_weights:
                section = "weighted_metrics" if metric.weighted else "metrics"
                issues.append(setup.loaded.issue(("compile", section), (
                    f"{metric.name} cannot leave out the masked steps of output '{out}' (it "
                    "still has mask_zero's or a masking layer's mask): use accuracy or a mean "
                    "metric for it, or end the model without the mask")))
    if issues:
        raise ConfigError(issues)


def _class_count(setup: Setup) -> int:
    units = setup.io.outputs[setup.graph.outputs[0]][-1]
    return units if units > 1 else 2  # one sigmoid unit: classes 0 and 1


def output_class_names(setup: Setup, dataset: Any) -> list[str] | None:
    """The data's names of the classes of a single-output model (class_weight's output)."""
    names = getattr(dataset, "class_names", None) or {}
    return names.get(setup.graph.outputs[0]) if len(setup.graph.outputs) == 1 else None


def class_weight_vector(setup: Setup, class_names: list[str] | None = None
                        ) -> np.ndarray | None:
    """fit.class_weight as one weight per class index; a class given by name is looked up
    in `class_names`, the data's names of the output's classes."""
    class_weight = setup.loaded.config.fit.class_weight
    if not class_weight:
        return None
    vector = np.ones(_class_count(setup), np.float32)
    for c, w in class_weight.items():
        if isinstance(c, str) and c not in (class_names or []) and c.isdigit() and \
                int(c) < len(vector):
            c = int(c)  # an index written as a string ("1": 3.0)
        if isinstance(c, str) and c not in (class_names or []):
            raise DataError(
                f"fit.class_weight: no class named '{c}'; "
                + (f"the classes are {', '.join(class_names)}" if class_names else
                   "this data has no class names (a CSV's text labels have)"),
                "give each class by its name or its index (0, 1, ...)")
        vector[class_names.index(c) if isinstance(c, str) else c] = w
    return vector
