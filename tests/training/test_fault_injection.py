"""Training survives faults: ``kill -9`` at random points (also mid-checkpoint) and damaged checkpoints.

The kill tests run the real command (``python -m lcirc_plugins.training``) on a tiny backbone saved to
disk, SIGKILL it at chosen points, check that every ``checkpoint-N`` folder on disk is complete after each
kill, re-run the same command, and finally compare the adapter with an uninterrupted run's. The
damaged-checkpoint tests run the trainer in process and break the newest checkpoint in four ways.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support import SAMPLE_BOOK, RunsCodeWhenUnpickled, one_torch_thread

from lcirc_plugins.errors import CorruptFileError
from lcirc_plugins.training import TrainConfig, Trainer

ADAPTER = {"num_latents": 4, "head_dim": 16, "gca_every": 2, "segment_len": 32, "max_segment_len": 64, "gate_init": 0.1}
SAVE_EVERY = 5
RESUMED = re.compile(r"resumed from .*checkpoint-(\d+) at step (\d+)")


@pytest.fixture(scope="module")
def backbone_dir(tiny_backbones, smollm2_tokenizer, tmp_path_factory) -> Path:
    """The tiny Llama and SmolLM2's tokenizer as a folder, the way a training command loads a backbone."""
    folder = tmp_path_factory.mktemp("backbone") / "tiny-llama"
    tiny_backbones["llama"].save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    return folder


def train_command(backbone: Path, out: Path, steps: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lcirc_plugins.training",
        f"--backbone={backbone}",
        f"--data={SAMPLE_BOOK}",
        f"--output_dir={out}",
        f"--steps={steps}",
        f"--save_every={SAVE_EVERY}",
        "--eval_every=0",
        "--min_segment_len=16",
        "--max_segment_len=32",
        "--max_segments=3",
        "--window=16",
        "--lr=1e-3",
        "--bptt_window=2",
        "--seed=1",
        f"--adapter={json.dumps(ADAPTER)}",
    ]


def start(command: list[str], log: Path) -> subprocess.Popen:
    """Start a run with its output in ``log`` (files, not pipes: a killed child must never block us)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    with log.open("w") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)


def last_logged_step(out: Path) -> int:
    """The step of the last complete line of ``metrics.jsonl`` (0 before the first), reading only its tail."""
    path = out / "metrics.jsonl"
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 4096))
            lines = handle.read().split(b"\n")[:-1]
    except FileNotFoundError:
        return 0
    return json.loads(lines[-1])["step"] if lines else 0


def checkpoint_steps(out: Path, prefix: str = "checkpoint-") -> list[int]:
    return sorted(int(p.name[len(prefix) :]) for p in out.glob(f"{prefix}*") if p.name[len(prefix) :].isdigit())


@dataclass
class Kill:
    """Where to kill: ``startup`` (after ``at`` seconds), ``step`` (once step ``at`` is logged),
    ``checkpoint`` (while ``.tmp-checkpoint-N`` with N >= ``at`` is being written) or ``final`` (once the
    last checkpoint exists, while the final adapter and plot are written)."""

    kind: str
    at: float


def run_until(process: subprocess.Popen, out: Path, kill: Kill, steps: int, timeout: float = 300) -> dict:
    """Poll the run folder until the kill point, SIGKILL the run, and say what was on disk at that moment."""
    started = time.monotonic()
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the run ended (code {process.returncode}) before the kill point {kill}")
        if time.monotonic() - started > timeout:
            process.kill()
            raise AssertionError(f"kill point {kill} not reached in {timeout} s")
        if kill.kind == "startup":
            reached = time.monotonic() - started >= kill.at
        elif kill.kind == "step":
            reached = last_logged_step(out) >= kill.at
        elif kill.kind == "checkpoint":
            reached = any(n >= kill.at for n in checkpoint_steps(out, ".tmp-checkpoint-"))
        else:
            reached = (out / f"checkpoint-{steps}").is_dir()
        if reached:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.0003)  # fine enough to land inside a ~10 ms checkpoint write
    assert process.wait(timeout=60) == -signal.SIGKILL
    return {
        "kind": kill.kind,
        "logged_step": last_logged_step(out),
        "checkpoints": checkpoint_steps(out),
        "mid_write": checkpoint_steps(out, ".tmp-checkpoint-"),
    }


def assert_complete_checkpoints(out: Path) -> None:
    """Every ``checkpoint-N`` on disk is whole: each file is there and parses, and the state says step N."""
    for step in checkpoint_steps(out):
        folder = out / f"checkpoint-{step}"
        state = json.loads((folder / "trainer_state.json").read_text())
        assert state["step"] == step and state["data_position"] == step, folder
        json.loads((folder / "adapter" / "adapter_config.json").read_text())
        assert load_file(str(folder / "adapter" / "adapter_model.safetensors")), folder
        saved = torch.load(folder / "optimizer.pt", weights_only=True)
        assert saved["optimizer"]["state"] and saved["scheduler"]["last_epoch"] == step, folder
        assert torch.load(folder / "torch_rng.pt", weights_only=True).dtype == torch.uint8


def max_adapter_difference(a: Path, b: Path) -> float:
    first, second = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    assert first.keys() == second.keys()
    return max((first[k] - second[k]).abs().max().item() for k in first)


def kill_and_resume(backbone: Path, tmp_path: Path, steps: int, kills: list[Kill]) -> list[dict]:
    """Run to the end through every kill; returns one record per kill (what was on disk, where it resumed)."""
    out = tmp_path / "killed"
    command = train_command(backbone, out, steps)
    records: list[dict] = []
    for attempt, kill in enumerate([*kills, None]):
        log = tmp_path / f"attempt-{attempt}.log"
        process = start(command, log)
        if kill is None:
            assert process.wait(timeout=600) == 0, log.read_text()[-3000:]
        else:
            records.append(run_until(process, out, kill, steps))
            assert_complete_checkpoints(out)
        if attempt > 0:  # this attempt resumed from the newest checkpoint the previous kill left
            previous = records[attempt - 1]
            resumed = RESUMED.search(log.read_text())
            expected = max(previous["checkpoints"], default=None)
            assert (int(resumed.group(2)) if resumed else None) == expected, (previous, log.read_text()[-2000:])
            previous["resumed_at"] = expected or 0
            previous["steps_redone"] = previous["logged_step"] - (expected or 0)
            assert previous["steps_redone"] <= SAVE_EVERY, previous
    if any(k.kind == "checkpoint" for k in kills):
        assert any(r["mid_write"] for r in records), f"no kill landed inside a checkpoint write: {records}"
    assert not list(out.glob(".tmp-checkpoint-*")) and not list(out.glob(".old-checkpoint-*")), "stale folders left"
    return records


def reference_run(backbone: Path, tmp_path: Path, steps: int) -> Path:
    out = tmp_path / "uninterrupted"
    log = tmp_path / "uninterrupted.log"
    assert start(train_command(backbone, out, steps), log).wait(timeout=600) == 0, log.read_text()[-3000:]
    return out / "adapter"


def test_kill_9_mid_checkpoint_and_mid_step_then_resume_gives_the_same_adapter(backbone_dir, tmp_path):
    steps = 40
    kills = [Kill("checkpoint", 15), Kill("step", 27)]
    records = kill_and_resume(backbone_dir, tmp_path, steps, kills)
    difference = max_adapter_difference(tmp_path / "killed" / "adapter", reference_run(backbone_dir, tmp_path, steps))
    print({"kills": records, "max_abs_difference": difference})
    assert difference < 1e-6


@pytest.mark.slow
def test_eight_random_kill_9s_including_checkpoint_writes_then_resume_gives_the_same_adapter(backbone_dir, tmp_path):
    """Kill points drawn from a seeded RNG: one while loading, three mid-step, three mid-checkpoint, one at the end."""
    steps, rng = 300, random.Random(10)
    targets = sorted(rng.sample(range(SAVE_EVERY + 1, steps - SAVE_EVERY), 6))
    kills = [Kill("startup", rng.uniform(0.5, 3.0))]
    kills += [Kill("step" if i % 2 == 0 else "checkpoint", t) for i, t in enumerate(targets)]
    kills.append(Kill("final", steps))
    records = kill_and_resume(backbone_dir, tmp_path, steps, kills)
    difference = max_adapter_difference(tmp_path / "killed" / "adapter", reference_run(backbone_dir, tmp_path, steps))
    print({"kills": records, "max_abs_difference": difference})  # the figures in docs/RELIABILITY.md
    assert sum(bool(r["mid_write"]) for r in records) >= 2
    assert difference < 1e-6


# ----- damaged checkpoints (in process) ---------------------------------------------------------------


def _config(out: Path, steps: int) -> TrainConfig:
    return TrainConfig(
        data=str(SAMPLE_BOOK),
        output_dir=str(out),
        steps=steps,
        lr=1e-3,
        bptt_window=2,
        min_segment_len=16,
        max_segment_len=32,
        max_segments=3,
        window=16,
        eval_every=0,
        save_every=SAVE_EVERY,
        seed=1,
    )


@pytest.fixture(scope="module")
def fresh_model(tiny_backbones, smollm2_tokenizer):
    """Factory of identical untrained models on the tiny Llama; each test detaches the hooks it attached."""
    from lcirc_plugins import LCIRCConfig, LCIRCModel

    def make() -> LCIRCModel:
        torch.manual_seed(0)
        return LCIRCModel(tiny_backbones["llama"], smollm2_tokenizer, LCIRCConfig(**ADAPTER))

    return make


@pytest.fixture(scope="module")
def ten_step_run(fresh_model, tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A 10-step run with checkpoints at 5 and 10, and its final adapter weights."""
    out = tmp_path_factory.mktemp("ten-steps") / "run"
    model = fresh_model()
    try:
        with one_torch_thread():
            Trainer(_config(out, 10), model=model).train()
    finally:
        model.injector.detach()
    return out, {k: v.clone() for k, v in model.adapter.state_dict().items()}


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "truncated-adapter-weights": lambda c: _truncate(c / "adapter" / "adapter_model.safetensors"),
    "missing-trainer-state": lambda c: (c / "trainer_state.json").unlink(),
    "garbled-trainer-state": lambda c: (c / "trainer_state.json").write_text('{"step": 10, "data_posi'),
    "truncated-optimizer-state": lambda c: _truncate(c / "optimizer.pt"),
    "foreign-adapter-weights": lambda c: shutil.copy(SAMPLE_BOOK, c / "adapter" / "adapter_model.safetensors"),
    "code-in-optimizer-pickle": lambda c: torch.save(
        {"optimizer": RunsCodeWhenUnpickled(c.parents[1] / "UNPICKLED")}, c / "optimizer.pt"
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(fresh_model, ten_step_run, tmp_path, damage):
    source, finished = ten_step_run
    out = tmp_path / "run"
    shutil.copytree(source, out)
    shutil.rmtree(out / "adapter")
    DAMAGE[damage](out / "checkpoint-10")
    model = fresh_model()
    try:
        with one_torch_thread():
            with pytest.warns(UserWarning, match="checkpoint-10 is damaged and was skipped"):
                trainer = Trainer(_config(out, 10), model=model)
            assert (trainer.step, trainer.data.position) == (5, 5), "resumed from checkpoint-5, not from scratch"
            trainer.train()
    finally:
        model.injector.detach()
    resumed = model.adapter.state_dict()
    assert max((finished[k] - resumed[k]).abs().max().item() for k in finished) < 1e-6
    assert checkpoint_steps(out) == [5, 10] and not list(out.glob(".*-checkpoint-*"))
    assert json.loads((out / "checkpoint-10" / "trainer_state.json").read_text())["step"] == 10, "rewritten whole"
    assert not (tmp_path / "UNPICKLED").exists(), "torch.load ran code from a checkpoint"


def test_when_no_checkpoint_can_be_read_resuming_is_a_clear_error(fresh_model, ten_step_run, tmp_path):
    source, _ = ten_step_run
    out = tmp_path / "run"
    shutil.copytree(source, out)
    for step in (5, 10):
        (out / f"checkpoint-{step}" / "trainer_state.json").unlink()
    model = fresh_model()
    try:
        with pytest.warns(UserWarning, match="damaged"), pytest.raises(CorruptFileError, match="no checkpoint in .* can be read"):
            Trainer(_config(out, 10), model=model)
    finally:
        model.injector.detach()
