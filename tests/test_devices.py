"""Data parallelism: a run over 4 simulated CPU devices, or over two processes joined through
jax.distributed, trains to the same history as one device; bad device settings exit 2."""

from __future__ import annotations

import collections
import contextlib
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from clirunner import nntrain

CONFIGS = Path(__file__).resolve().parent / "configs"
FOUR = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}


def cpu_env(extra: dict | None = None) -> dict:
    """The environment of a child process on the CPU: the simulated devices are CPU devices,
    and on a GPU machine two processes would otherwise share its one GPU."""
    return {**os.environ, "JAX_PLATFORMS": "cpu", **(extra or {})}


def fit(config: Path, cwd: Path, *args: str, env: dict | None = None,
        wait: bool = True, output: list[str] | None = None) -> subprocess.Popen | Path:
    cwd.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "nntrain", "fit", str(config), "-q", *args]
    process = subprocess.Popen(command, cwd=cwd, env=cpu_env(env),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait:
        return process
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out
    if output is not None:
        output.append(out)
    return next(cwd.glob("runs/*/*"))


def compiles(output: str) -> collections.Counter:
    """How many times each program was compiled, from JAX_LOG_COMPILES=1's log."""
    return collections.Counter(re.findall(r"Finished XLA compilation of jit\((\w+)\)", output))


def history(run: Path) -> dict[str, np.ndarray]:
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0] if k != "seconds"}


def assert_same_history(a: Path, b: Path) -> None:
    ha, hb = history(a), history(b)
    assert ha.keys() == hb.keys()
    for key in ha:  # the sums are reduced in another order: float tolerance, not bits
        np.testing.assert_allclose(ha[key], hb[key], rtol=2e-4, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("config", ["tiny_mlp.yaml", "tiny_cnn.yaml"])
def test_four_devices_match_one(tmp_path: Path, config: str):
    one = fit(CONFIGS / config, tmp_path / "one")
    logged: list[str] = []
    four = fit(CONFIGS / config, tmp_path / "four", "--devices", "4",
               env={**FOUR, "JAX_LOG_COMPILES": "1"}, output=logged)
    assert_same_history(one, four)
    # the programs compiled ahead, from shapes placed on the mesh, are the ones that run
    counts = compiles(logged[0])
    assert [counts[p] for p in ("_init", "epoch_order", "_train_chunk", "_eval_chunk")] == \
        [1, 1, 1, 1], counts
    placement = json.loads((four / "run.json").read_text())["placement"]
    assert placement == {"platform": "cpu", "kind": "cpu", "count": 4, "processes": 1,
                         "ids": [0, 1, 2, 3]}
    assert json.loads((one / "run.json").read_text())["placement"]["count"] == 1


def test_the_batch_is_split_and_gradients_summed_across_devices():
    """The compiled train step really is data-parallel: each device sees a quarter of the
    batch, and an all-reduce combines the gradients."""
    code = f"""
import jax, jax.numpy as jnp
from pathlib import Path
from nntrain.build import prepare
from nntrain.config.loader import load_config
from nntrain.train.devices import Placement
from nntrain.train.fit import make_programs
from nntrain.data.sources import load_dataset
from nntrain.train.programs import to_device, epoch_order
loaded = load_config(Path({str(CONFIGS / 'tiny_mlp.yaml')!r}), ["fit.devices=all"])
setup = prepare(loaded)
placement = Placement.from_config(loaded)
programs = make_programs(setup, None, placement)
ds = load_dataset(loaded.config.data, setup.io, Path("."), 0)
params, state = setup.model.init(jax.random.key(0))
carry = placement.replicate({{"params": params, "state": state,
                             "opt_state": setup.optimizer.init(params), "step": jnp.int32(0)}})
data = to_device(ds.train, placement=placement)
n = len(ds.train)
order = placement.replicate(epoch_order(jax.random.key(1), 0, n, -(-n // 32) * 32, True))
sums = placement.replicate(programs.layout.zeros())
rng = placement.replicate(jax.random.key(2))
hlo = programs.train_chunk(2).lower(carry, sums, data, order, 0, rng, n, 2).compile()
text = hlo.as_text()
print(len(placement.devices), "all-reduce" in text, "f32[8,16]" in text)
"""
    out = subprocess.run([sys.executable, "-c", code], env=cpu_env(FOUR),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # 4 devices; gradients all-reduced; a batch of 32 rows of 16 features is 8 per device
    assert out.stdout.split() == ["4", "True", "True"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _pair(cwd: Path, *args: str) -> list[subprocess.Popen]:
    """Processes 1 and 0 of a two-process run of `nntrain fit *args` on this machine."""
    cwd.mkdir(exist_ok=True)
    cluster = ["--coordinator", f"localhost:{_free_port()}", "--num-processes", "2"]
    return [subprocess.Popen([sys.executable, "-m", "nntrain", "fit", *args, "-q", *cluster,
                              "--process-id", str(i)], cwd=cwd, env=cpu_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in (1, 0)]


def _finish(workers: list[subprocess.Popen]) -> None:
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs


def test_two_processes_train_like_one(tmp_path: Path):
    config = CONFIGS / "tiny_mlp.yaml"
    one = fit(config, tmp_path / "one")
    _finish(_pair(tmp_path / "pair", str(config)))
    (run,) = list((tmp_path / "pair").glob("runs/*/*"))  # process 0 alone writes the run
    assert_same_history(one, run)
    placement = json.loads((run / "run.json").read_text())["placement"]
    assert (placement["count"], placement["processes"]) == (2, 2)


@pytest.fixture(scope="module")
def longer(tmp_path_factory) -> tuple[Path, Path]:
    """A config of a few seconds' training, and its uninterrupted two-process run."""
    folder = tmp_path_factory.mktemp("longer")
    config = folder / "longer.yaml"
    config.write_text((CONFIGS / "tiny_mlp.yaml").read_text()
                      .replace("samples: 600", "samples: 12000")
                      .replace("epochs: 4", "epochs: 6")
                      .replace("patience: 3", "patience: 20"))
    _finish(_pair(folder / "whole", str(config)))
    (whole,) = list((folder / "whole").glob("runs/*/*"))
    return config, whole


def _wait_for_epoch(folder: Path, workers: list[subprocess.Popen], epoch: int) -> int:
    """Wait until the run in `folder` has checkpointed `epoch` epochs; the epoch it has."""
    deadline = time.monotonic() + 120
    done = 0
    while done < epoch and time.monotonic() < deadline and workers[1].poll() is None:
        found = list(folder.glob("runs/*/*/checkpoints/last/checkpoint.json"))
        with contextlib.suppress(IndexError, ValueError, OSError):  # being replaced
            done = json.loads(found[0].read_text())["epoch"]
        time.sleep(0.005)
    return done


def test_two_processes_resume_a_killed_run(tmp_path: Path, longer):
    config, whole = longer
    workers = _pair(tmp_path, str(config))
    epoch = _wait_for_epoch(tmp_path, workers, 2)
    for worker in workers:
        worker.kill()
        worker.wait()
    assert 2 <= epoch < 6, "the run was not killed in the middle"
    (run,) = list(tmp_path.glob("runs/*/*"))

    _finish(_pair(tmp_path, "--resume", str(run)))
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["resumed"] is True
    assert_same_history(whole, run)
    assert len(list(tmp_path.glob("runs/*/*"))) == 1


def test_a_signal_to_one_process_stops_them_all_and_they_resume(tmp_path: Path, longer):
    """Preemption: SIGTERM reaching one process stops every process after the same chunk
    (one that went on alone would wait forever in the collectives), with a checkpoint."""
    config, whole = longer
    workers = _pair(tmp_path, str(config))
    _wait_for_epoch(tmp_path, workers, 1)
    workers[0].send_signal(signal.SIGTERM)  # process 1 only
    outputs = [w.communicate(timeout=120)[0] for w in workers]
    assert [w.returncode for w in workers] == [143, 143], outputs
    (run,) = list(tmp_path.glob("runs/*/*"))
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "stopped", info
    assert json.loads((run / "checkpoints/last/checkpoint.json").read_text())["epoch"] < 6

    _finish(_pair(tmp_path, "--resume", str(run)))
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert_same_history(whole, run)


def test_bad_device_settings_exit_2(tmp_path: Path):
    config = CONFIGS / "tiny_mlp.yaml"
    result = nntrain("fit", str(config), "--devices", "8", cwd=tmp_path)
    assert result.exit_code == 2
    # the place is the option as typed, not the --set it stands for
    assert re.search(r"--devices 8: fit\.devices: 8 devices asked for, but only 1 (cpu|gpu|tpu) "
                     r"device", " ".join(result.output.split()))
    assert "--xla_force_host_platform_device_count=8" in result.output
    result = nntrain("fit", str(config), "--set", "fit.devices=8", cwd=tmp_path)
    assert result.exit_code == 2 and "--set fit.devices=8: fit.devices" in result.output
    # a later command in the same process is not told of an option it was not given
    assert nntrain("fit", str(config), "--batch-size", "3000000000", cwd=tmp_path) \
        .exit_code == 2
    result = nntrain("validate", str(config), "--set", "fit.batch_size=3000000000",
                     cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "--set fit.batch_size=3000000000: fit.batch_size" in result.output
    result = nntrain("fit", str(config), "--devices", "many", cwd=tmp_path)
    assert result.exit_code == 2 and "--devices 'many'" in result.output
    result = nntrain("fit", str(config), "--coordinator", "localhost:1", cwd=tmp_path)
    assert result.exit_code == 2 and "go together" in result.output
    assert not (tmp_path / "runs").exists()


def test_batch_must_split_evenly_over_devices(tmp_path: Path):
    run = fit(CONFIGS / "tiny_mlp.yaml", tmp_path, "--devices", "4", "--batch-size", "30",
              env=FOUR, wait=False)
    out, _ = run.communicate(timeout=120)
    assert run.returncode == 2, out
    assert "fit.batch_size: a batch of 30 cannot be split evenly over 4 devices" in out
    assert "Traceback" not in out and not (tmp_path / "runs").exists()


def test_distributed_outside_a_cluster_exits_2(tmp_path: Path):
    # in its own process: joining sets JAX's CPU collectives for the whole process
    done = subprocess.run([sys.executable, "-m", "nntrain", "fit", str(CONFIGS / "tiny_mlp.yaml"),
                           "--distributed", "-q"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "cannot join the multi-process run: coordinator_address should be defined" in \
        " ".join(done.stderr.split()) and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--coordinator", "foo", "--num-processes", "1", "--process-id", "0"],
     "--coordinator 'foo': expected HOST:PORT"),
    (["--coordinator", "localhost:1234", "--num-processes", "2", "--process-id", "5"],
     "--process-id 5: the processes are numbered 0 to 1"),
])
def test_bad_multi_process_flags_exit_2(tmp_path: Path, flags, message):
    from clirunner import nntrain

    result = nntrain("fit", str(CONFIGS / "tiny_mlp.yaml"), "-q", *flags, cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def _resume(run: Path, *args: str, devices: int) -> subprocess.CompletedProcess:
    env = cpu_env({"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"})
    return subprocess.run([sys.executable, "-m", "nntrain", "fit", "--resume", str(run), *args,
                           "-q"], cwd=run.parents[2], env=env, capture_output=True, text=True)


def test_a_run_resumes_on_another_number_of_devices(tmp_path: Path):
    """A preempted job resumed on another machine: `--devices` may change on --resume (the
    same training, split otherwise), and the history matches one device's throughout."""
    one = fit(CONFIGS / "tiny_mlp.yaml", tmp_path / "one", "--epochs", "4")
    run = fit(CONFIGS / "tiny_mlp.yaml", tmp_path / "four", "--epochs", "2", "--devices", "all",
              env=FOUR)
    # a machine of 3: the run's batches of 32 do not split over 3, and the batch stays
    refused = _resume(run, "--epochs", "3", "--devices", "3", devices=3)
    assert refused.returncode == 2
    assert "--devices 3: fit.devices: the run's batch_size of 32 cannot be split evenly over 3 " \
        "devices: give a device count that divides 32" in " ".join(refused.stderr.split())
    resumed = _resume(run, "--epochs", "3", "--devices", "2", devices=2)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    info = json.loads((run / "run.json").read_text())
    assert info["placement"]["count"] == 2 and len(info["devices"]) == 2  # this machine's
    # a CONFIG given with --resume may change the devices too
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["fit"].update(epochs=4, devices=4)
    (tmp_path / "again.yaml").write_text(yaml.safe_dump(config))
    resumed = _resume(run, str(tmp_path / "again.yaml"), devices=4)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert json.loads((run / "run.json").read_text())["placement"]["count"] == 4
    assert yaml.safe_load((run / "config.yaml").read_text())["fit"]["devices"] == 4
    assert_same_history(one, run)
