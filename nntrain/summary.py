"""Keras's model summary: layer (type), output shape, parameters; totals below."""

from __future__ import annotations

import io
import re

from rich.console import Console
from rich.table import Table

from nntrain.consoles import make_console
from nntrain.model import Model, format_shape

# Keras's class names keep them
ACRONYMS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN", "relu": "ReLU", "prelu": "PReLU",
            "elu": "ELU"}


def _type_name(layer_type: str) -> str:
    if ":" in layer_type:  # a user's class: module:Class
        return layer_type.rpartition(":")[2]
    name = "".join(ACRONYMS.get(part, part.capitalize()) for part in layer_type.split("_"))
    return re.sub(r"([123])d", r"\1D", name)  # Conv1D, MaxPooling2D, Conv3DTranspose


def summary_table(model: Model, title: str = "") -> Table:
    graph = model.graph
    show_links = not graph.is_chain
    table = Table(title=title or None, title_justify="left", header_style="bold")
    table.add_column("Layer (type)")
    table.add_column("Output Shape")
    table.add_column("Param #", justify="right")
    if show_links:
        table.add_column("Connected to")
        for name, spec in graph.inputs.items():
            table.add_row(f"{name} (InputLayer)", format_shape(tuple(spec.shape)), "0", "-")
    for row in model.summary_rows():
        shares = f", shares {row.shares}" if row.shares else ""
        cells = [f"{row.name} ({_type_name(row.type)}{shares})", _shapes(graph, row),
                 f"{row.params + row.non_trainable:,}"]
        if show_links:
            cells.append(", ".join(row.inputs))
        table.add_row(*cells)
    return table


def _shapes(graph, row) -> str:
    """The row's output shape; with return_state, as Keras lists them: the output's, then
    each state's."""
    args = graph.node(row.name).args
    if not getattr(args, "return_state", False):
        return format_shape(row.output_shape)
    return f"[{format_shape([row.output_shape, *[(args.state_units,)] * len(args.states)])}]"


def summary_totals(model: Model) -> str:
    trainable, fixed = model.trainable_count, model.non_trainable_count
    return (f"Total params: {trainable + fixed:,}\n"
            f"Trainable params: {trainable:,}\n"
            f"Non-trainable params: {fixed:,}")


def print_summary(model: Model, console: Console, title: str = "") -> None:
    console.print(summary_table(model, title))
    console.print(summary_totals(model), highlight=False)


def summary_text(model: Model, title: str = "") -> str:
    console = make_console(record=True, width=100, file=io.StringIO(), color_system=None)
    print_summary(model, console, title)
    return console.export_text()
