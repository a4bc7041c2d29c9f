"""The `nntrain` command. Thin: parse, call nntrain.commands, print errors. JAX is imported
only by the commands that need it, so `nntrain --help` starts fast."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

import nntrain
from nntrain.consoles import make_console
from nntrain.errors import TrainingFailed, UserError, out_of_memory


class _UnlabelledFlags:
    """A flag takes no value, so its help shows no type: typer labels every boolean option,
    its own --help and --install-completion too, `<bool>`."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


# click's UsageError, whichever click this typer parses with (its own since typer 0.22)
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class _Command(_UnlabelledFlags, TyperCommand):
    def parse_args(self, ctx, args: list[str]) -> list[str]:
        """A bad option (`--epochs -3`, `--epoch 2`) is refused before the command runs: with
        `--log-format json` its JSON error line is written here."""
        given = list(args)  # the parser consumes `args`
        try:
            return super().parse_args(ctx, args)
        except _UsageError as e:
            pairs = zip(given, given[1:], strict=False)  # (option, the word after it)
            if "--log-format=json" in given or ("--log-format", "json") in pairs:
                _emit_json_error("error", e.format_message(),
                                 f"see `{ctx.command_path} --help`", 2)
            raise


class _Group(_UnlabelledFlags, TyperGroup):
    pass


app = typer.Typer(
    cls=_Group,
    name="nntrain",
    help="Train neural networks from a YAML config, with Keras semantics on JAX.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # paragraphs reflow to the terminal width
)
out = make_console()
err = make_console(stderr=True)
# shortcuts: `--set k=v` -> the option typed; json_errors: errors as JSON too (--log-format)
_state: dict = {"debug": False, "shortcuts": {}, "json_errors": False}


ConfigArg = Annotated[Path, typer.Argument(help="A YAML model config.", show_default=False)]
RunArg = Annotated[str, typer.Argument(
    help="A run directory, `runs/<name>` (its latest run), a run name, or `latest`.")]
SetOpt = Annotated[list[str], typer.Option(
    "--set", help="Override a config value: KEY.PATH=VALUE (repeatable).",
    metavar="KEY.PATH=VALUE")]
RunsDirOpt = Annotated[Path, typer.Option(
    "--runs-dir", help="Where run directories live.", envvar="NNTRAIN_RUNS")]
CheckpointOpt = Annotated[str, typer.Option(
    "--checkpoint", help="Which weights: best (default) or last.")]
TrustOpt = Annotated[bool, typer.Option(
    "--trust-code", help="Allow importing the Python code a run's config names (custom "
    "layers, callbacks, data generators).")]


def _run(action, *args, **kwargs) -> None:
    """Call a command; user errors become one message and exit 2, never a traceback."""
    try:
        _call(action, *args, **kwargs)
    finally:  # this command's: tests run many in one process
        _state["shortcuts"], _state["json_errors"] = {}, False


def _call(action, *args, **kwargs) -> None:
    try:
        code = action(*args, **kwargs)
    except UserError as e:
        if _state["debug"]:
            raise
        message = e.message
        for assignment, option in _state["shortcuts"].items():  # the place as the user typed it
            message = message.replace(f"--set {assignment}:", f"{option}:")
        _print_error("error", message, e.hint)
        raise typer.Exit(2) from None
    except TrainingFailed as e:
        if _state["debug"]:
            raise
        _print_error("training failed", str(e),
                     "try a lower learning rate, or check the data for extreme values", 1)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("[yellow]Interrupted.[/]")
        raise typer.Exit(130) from None
    except OSError as e:  # a path the system refused: missing folder, no permission, ...
        if _state["debug"]:
            raise
        where = f"{e.filename}: " if e.filename else ""
        _print_error("error", f"{where}{e.strerror or e}", _os_hint(e))
        raise typer.Exit(2) from None
    except Exception as e:  # XLA out of memory (evaluate, predict, setting a run up)
        error = out_of_memory(e)
        if error is None or _state["debug"]:
            raise
        _print_error("error", error.message, error.hint)
        raise typer.Exit(2) from None
    if code:
        raise typer.Exit(code)


def _os_hint(e: OSError) -> str:
    import errno

    if e.errno in (errno.EEXIST, errno.ENOTDIR) and e.filename:
        return f"{e.filename} (or a folder above it) is a file, where a folder is needed: " \
            "choose another path (--runs-dir, --output)"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"you may not write {e.filename or 'there'}: make it writable (chmod u+w), " \
            "or for a new run or file choose another path (--runs-dir, --output)"
    return ("check that the path exists and that you may read and write there "
            "(--runs-dir, --output)")


def _print_error(title: str, message: str, hint: str | None, exit_code: int = 2) -> None:
    # plain lines, not a box: file:line:col locations stay whole and copyable
    err.print(f"[bold red]{title}:[/] {escape(message)}", soft_wrap=True)
    if hint:
        err.print(f"[dim]hint: {escape(hint)}[/]", soft_wrap=True)
    if _state["json_errors"]:  # a program reading stdout learns why it ends, too
        _emit_json_error(title, message, hint, exit_code)


def _emit_json_error(title: str, message: str, hint: str | None, exit_code: int) -> None:
    from nntrain import progress

    if "end" not in progress.emitted:  # a run that failed has said so in its end object
        progress.emit_json({"event": "error", "error": title, "message": message,
                            "hint": hint, "exit_code": exit_code})


def _version(value: bool) -> None:
    if value:
        print(f"nntrain {nntrain.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    _state["debug"] = debug


def _shortcuts(overrides: list[str] | None, epochs: int | None, batch_size: int | None,
               devices: str | None = None):
    """--set with the shortcut options added; one key set both ways is a contradiction."""
    overrides = list(overrides or [])
    for option, key, value in (("--epochs", "fit.epochs", epochs),
                               ("--batch-size", "fit.batch_size", batch_size),
                               ("--devices", "fit.devices", devices)):
        if value is None:
            continue
        both = next((o for o in overrides if o.partition("=")[0].strip() == key), None)
        if both is not None:
            _usage(f"{option} {value} and --set {both} both set {key}: give one")
        overrides.append(f"{key}={value}")
        _state["shortcuts"][f"{key}={value}"] = f"{option} {value}"
    return overrides


@app.command(cls=_Command)
def fit(
    config: Annotated[Path | None, typer.Argument(
        help="A YAML model config (optional with --resume).", show_default=False)] = None,
    set_: SetOpt = None,
    epochs: Annotated[int | None, typer.Option(help="Shortcut for --set fit.epochs=N.",
                                               min=1)] = None,
    batch_size: Annotated[int | None, typer.Option(
        help="Shortcut for --set fit.batch_size=N.", min=1)] = None,
    resume: Annotated[str | None, typer.Option(
        help="Continue an interrupted run from its last checkpoint (with --epochs N, train "
        "a finished one longer).", metavar="RUN")] = None,
    runs_dir: RunsDirOpt = Path("runs"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")] = False,
    trust_code: TrustOpt = False,
    log_format: Annotated[str, typer.Option(
        "--log-format", help="rich (for people) or json (one JSON object per epoch on stdout, "
        "then an end object; messages go to stderr).")] = "rich",
    devices: Annotated[str | None, typer.Option(
        help="Data-parallel over N devices, or 'all'. Shortcut for --set fit.devices=N.",
        show_default=False)] = None,
    distributed: Annotated[bool, typer.Option(
        "--distributed", help="Join a multi-process run through jax.distributed, found "
        "from the cluster (SLURM, Open MPI, Cloud TPU pods, Kubernetes).")] = False,
    coordinator: Annotated[str | None, typer.Option(
        help="Multi-process run without a cluster manager: process 0's HOST:PORT "
        "(with --num-processes and --process-id).", show_default=False)] = None,
    num_processes: Annotated[int | None, typer.Option(
        help="With --coordinator: how many processes the run has.", min=1,
        show_default=False)] = None,
    process_id: Annotated[int | None, typer.Option(
        help="With --coordinator: this process's number, from 0 (0 is the coordinator).",
        min=0, show_default=False)] = None,
) -> None:
    """Train a model: validate the config, load data, train, record a run directory."""
    from nntrain import commands

    _check_choice("--log-format", log_format, ("rich", "json"))
    _state["json_errors"] = log_format == "json"  # reset by _run, or by _usage's exit
    if _state["json_errors"]:
        from nntrain import progress

        progress.emitted.clear()  # this command's events (tests run many in one process)
    if devices is not None and devices != "all" and not (devices.isdigit() and int(devices) > 0):
        _usage(f"--devices {devices!r}: expected a positive number or 'all'")
    overrides = _shortcuts(set_, epochs, batch_size, devices)
    explicit = (coordinator, num_processes, process_id)
    if any(v is not None for v in explicit) and any(v is None for v in explicit):
        _usage("--coordinator, --num-processes and --process-id go together (or "
               "--distributed alone, inside a cluster)")
    if coordinator is not None:
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            _usage(f"--coordinator {coordinator!r}: expected HOST:PORT, e.g. 10.0.0.1:1234")
        if process_id >= num_processes:
            _usage(f"--process-id {process_id}: the processes are numbered 0 to "
                   f"{num_processes - 1} (--num-processes {num_processes})")
    cluster = {"coordinator": coordinator, "num_processes": num_processes,
               "process_id": process_id} if coordinator is not None else \
        ({} if distributed else None)
    _run(commands.fit, config, overrides, runs_dir, out, resume=resume, quiet=quiet,
         trust_code=trust_code, log_format=log_format, cluster=cluster)


@app.command(cls=_Command)
def evaluate(
    run: RunArg,
    split: Annotated[str, typer.Option(help="test, validation or train.")] = "test",
    checkpoint: CheckpointOpt = "best",
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    runs_dir: RunsDirOpt = Path("runs"),
    trust_code: TrustOpt = False,
) -> None:
    """Loss and metrics of a run's model on a data split; appended to its metrics.json."""
    from nntrain import read_back

    _check_choice("--split", split, ("test", "validation", "train"))
    _check_choice("--checkpoint", checkpoint, ("best", "last"))
    _run(read_back.evaluate, run, runs_dir, out, split=split, checkpoint_name=checkpoint,
         as_json=json_, trust_code=trust_code)


@app.command(cls=_Command)
def predict(
    run: RunArg,
    input: Annotated[Path | None, typer.Argument(
        help="Examples: an .npy array, an .npz with one array per input, a folder of .npy "
        "files, or (a model trained on a table) a .csv of new rows.",
        show_default=False)] = None,
    split: Annotated[str | None, typer.Option(
        help="Predict a split of the run's data instead: test, validation or train.")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N examples.", min=1)] = None,
    top: Annotated[int, typer.Option(help="Show the K most likely classes.", min=1)] = 1,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write predictions to a .csv, .npy, .npz or .json file (with "
        "--show: the grid image, default predictions/show.png in the run directory).")] = None,
    show: Annotated[int | None, typer.Option(
        help="Draw the first N images with their predicted and true classes (wrong ones in "
        "red) as a grid PNG; image models only.", metavar="N", min=1, max=400)] = None,
    checkpoint: CheckpointOpt = "best",
    runs_dir: RunsDirOpt = Path("runs"),
    trust_code: TrustOpt = False,
) -> None:
    """Model outputs for new examples or a data split: a table, --output FILE, or --show.

    Without --output, a table of the first 20 examples (--limit N for more); with --show N,
    a grid of images with the predicted (and true) classes."""
    from nntrain import read_back

    if input is not None and split is not None:
        _usage("give either INPUT or --split, not both",
               "INPUT predicts a file's examples; --split one of the run's data splits")
    if split is not None:
        _check_choice("--split", split, ("test", "validation", "train"))
    _check_choice("--checkpoint", checkpoint, ("best", "last"))
    if show is not None and show < 1:
        _usage(f"--show {show}: give the number of images to draw, 1 or more")
    _run(read_back.predict, run, runs_dir, out, input_path=input, split=split, limit=limit,
         top=top, output=_output_file(output), checkpoint_name=checkpoint,
         trust_code=trust_code, show=show)


@app.command("lr-find", cls=_Command)
def lr_find(
    config: ConfigArg,
    set_: SetOpt = None,
    min_lr: Annotated[float, typer.Option("--min-lr", help="The first learning rate.")] = 1e-5,
    max_lr: Annotated[float, typer.Option("--max-lr", help="The last learning rate.")] = 10.0,
    steps: Annotated[int, typer.Option(
        help="Training steps (optimizer updates), the rate growing exponentially from "
             "--min-lr to --max-lr.")] = 300,
    runs_dir: RunsDirOpt = Path("runs"),
) -> None:
    """Find a learning rate: a short run with a growing rate, a plot and a suggestion.

    Trains --steps steps from the initial weights, the rate growing from --min-lr to
    --max-lr, plots the loss against the rate and suggests a tenth of the rate at the
    lowest (smoothed) loss."""
    from nntrain import commands

    _run(commands.lr_find, config, list(set_ or []), runs_dir, out, min_lr=min_lr,
         max_lr=max_lr, steps=steps)


@app.command(cls=_Command)
def tune(
    config: ConfigArg,
    set_: SetOpt = None,
    workers: Annotated[int, typer.Option(
        help="Run N trials at once, in N processes sharing the study.", min=1)] = 1,
    storage: Annotated[str | None, typer.Option(
        help="The study's database URL (e.g. postgresql://host/db), for workers on several "
        "machines; default: SQLite in the tune directory.", metavar="URL")] = None,
    runs_dir: RunsDirOpt = Path("runs"),
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No epoch lines: one line per trial, then the leaderboard.")
    ] = False,
    worker_index: Annotated[int, typer.Option(hidden=True)] = 0,
) -> None:
    """Search hyperparameters over the config's `search:` space (optuna).

    Trains trials, prints a leaderboard and writes best.yaml. Running it again continues
    the same search."""
    from nntrain.tune.command import tune as run_tune

    _run(run_tune, config, list(set_ or []), runs_dir, out, workers=workers, storage=storage,
         quiet=quiet, worker=worker_index)


@app.command(cls=_Command)
def summary(config: ConfigArg, set_: SetOpt = None) -> None:
    """Print the model's layers, output shapes and parameter counts."""
    from nntrain import commands

    _run(commands.summary, config, list(set_ or []), out)


@app.command(cls=_Command)
def validate(config: ConfigArg, set_: SetOpt = None) -> None:
    """Check a config (schema, names, shapes) without loading data or training."""
    from nntrain import commands

    _run(commands.validate, config, list(set_ or []), out)


class _ListByDefault(_Group):
    """`nntrain runs [NAME]` lists runs: anything that is not a subcommand goes to `list`."""

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] != "--help"):
            import difflib

            # `runs shwo RUN`: two words, where listing takes one name: a mistyped command
            positional = [a for i, a in enumerate(args) if not a.startswith("-") and
                          (i == 0 or args[i - 1] != "--runs-dir")]
            close = difflib.get_close_matches(args[0], list(self.commands), n=1) \
                if len(positional) > 1 and positional[0] == args[0] else []
            if close:
                _usage(f"unknown command 'runs {args[0]}'; did you mean 'runs {close[0]}'?")
            args = ["list", *args]
        return super().parse_args(ctx, args)


runs_app = typer.Typer(
    cls=_ListByDefault,
    help="List, show and compare runs. `nntrain runs [NAME]` lists them, newest first.",
    no_args_is_help=False,
)
app.add_typer(runs_app, name="runs")


@runs_app.command("list", cls=_Command)
def runs_list(
    name: Annotated[str | None, typer.Argument(
        help="Only runs of this name (shell patterns such as `fashion_*` too).",
        show_default=False)] = None,
    runs_dir: RunsDirOpt = Path("runs"),
) -> None:
    """List runs, newest first: status, epochs, best monitored value, test figures, time."""
    from nntrain import runs_view

    _run(runs_view.list_runs, runs_dir, name, out)


@runs_app.command("compare", cls=_Command)
def runs_compare(run_a: RunArg, run_b: RunArg, runs_dir: RunsDirOpt = Path("runs")) -> None:
    """Two runs side by side: the config values that differ, and their figures."""
    from nntrain import runs_view

    _run(runs_view.compare_runs, run_a, run_b, runs_dir, out)


@runs_app.command("show", cls=_Command)
def runs_show(run: RunArg, runs_dir: RunsDirOpt = Path("runs")) -> None:
    """One run: status, times, data, figures, model summary and config."""
    from nntrain import runs_view

    _run(runs_view.show_run, run, runs_dir, out)


@app.command(cls=_Command)
def plot(
    runs: Annotated[list[str], typer.Argument(
        help="Runs to overlay: run directories, `runs/<name>`, run names, or `latest`.",
        show_default=False)],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="The image to write (.png; .svg and .pdf work too).")] = Path(
        "plot.png"),
    metric: Annotated[list[str] | None, typer.Option(
        "--metric", help="Only this figure, e.g. loss or accuracy (repeatable).",
        show_default=False)] = None,
    runs_dir: RunsDirOpt = Path("runs"),
) -> None:
    """Overlay runs' learning curves in one image: a panel per figure, a colour per run."""
    from nntrain import runs_view

    _run(runs_view.plot, runs, runs_dir, out, _output_file(output), metric)


@app.command(cls=_Command)
def schema(
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write to this file instead of printing.",
        show_default=False)] = None,
) -> None:
    """Print the config's JSON Schema, for YAML editors' completion and checks."""
    from nntrain import runs_view

    _run(runs_view.schema, _output_file(output), out)


def _usage(message: str, hint: str | None = None) -> None:
    _print_error("error", message, hint)
    _state["json_errors"] = False  # this command's
    raise typer.Exit(2)


def _output_file(path: Path | None) -> Path | None:
    """Where --output writes: through a symbolic link to its file, as a shell's `>` does, and
    never over a device, a pipe or a folder, which the atomic replace would swap for a file."""
    if path is None:
        return None
    if Path(os.path.realpath(path)).is_relative_to("/proc") or \
            path.absolute().is_relative_to("/dev"):
        _usage(f"--output {path} is a stream or a device: the output is written as a file of "
               "its own, replaced whole", "give a file's path (without --output, schema and "
               "predict print to the terminal)")
    if path.exists() and not path.is_file():  # through any links: a pipe, a folder
        kind = "a folder" if path.is_dir() else "not a regular file (a device or a pipe)"
        _usage(f"--output {path} is {kind}: the output is written as a file of its own",
               "give a file's path (it is replaced whole once written)")
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if target.is_symlink():  # a link that leads back to itself
            _usage(f"--output {path}: a loop of symbolic links",
                   "give a file's path, or a link to one")
        path = target
    return path


def _check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        close = [c for c in choices if c.lower() == value.lower()]
        _usage(f"{option} {value!r}: expected one of {', '.join(choices)}",
               f"did you mean {option} {close[0]}?" if close else
               f"give {option} {' or '.join(choices)}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    finally:  # the command is done, its records written: a late Ctrl-C would only break
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the interpreter's (JAX's) clean-up


if __name__ == "__main__":
    main()
