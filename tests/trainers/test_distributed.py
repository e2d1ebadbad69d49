"""Data-parallel training on gloo: 2 ranks equal 1 process, and killed ranks resume exactly.

Tolerance of the equality on recorded batches: after 2 updates (2 SGD steps each, lr 0.1; see
`JOBS` for why not AdamW) every parameter of the 2-rank run is within 2e-6 (absolute) of the
1-process run's (measured: DDP+LoRA 1.1e-8, FSDP2 full 2.4e-7); the difference is the order of
float32 sums (a gradient summed over 2 ranks instead of accumulated in one). Metrics and token
counts agree too, and the credit module's batch statistics, all-reduced, equal the one-process
ones on the same inputs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from creditgym.trainers import distributed
from creditgym.trainers.checkpoint import latest_checkpoint, load_checkpoint
from creditgym.trainers.logger import read_metrics

ROOT = Path(__file__).resolve().parents[2]
ATOL = 2e-6
LEARNER = {"micro_batch_tokens": 256, "mini_batches": 2, "lr": 1e-3, "device": "cpu"}


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONHASHSEED="random", PYTHONPATH=path, OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Path:
    """One recorded rollout: 4 KeyRooms tasks x 2 episodes with the tiny model, and advantages."""
    from creditgym.agents.backends import SamplingConfig
    from creditgym.agents.backends.hf import HFBackend
    from creditgym.agents.llm import LLMAgent
    from creditgym.agents.models import tiny_model
    from creditgym.trainers import dp_check
    from creditgym.trainers.learner import Learner, LearnerConfig
    from creditgym.trainers.rollout import EnvPool, collect

    torch.manual_seed(0)
    learner = Learner(LearnerConfig(), tiny_model())
    backend = HFBackend(model=learner.model, tokenizer=learner.tokenizer)
    agent = LLMAgent(backend, learner.tokenizer, sampling=SamplingConfig(max_new_tokens=6, seed=0))
    env_kwargs = {"level": "small", "max_steps": 3}
    with EnvPool("creditgym/KeyRooms-v0", 8, env_kwargs=env_kwargs) as pool:
        groups = collect(pool, agent, [0, 1, 2, 3], 2, [0, 1, 2, 3]).groups
    n = sum(len(t) for g in groups for t in g.trajectories)
    adv = np.random.default_rng(0).normal(size=n)
    return dp_check.save_batch(tmp_path_factory.mktemp("dp") / "batch.pt", groups, adv)


def _compare(one: dict, two: dict, batch: Path) -> None:
    a, b = torch.load(one["params"]), torch.load(two["params"])
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= ATOL, worst
    for u1, u2 in zip(one["updates"], two["updates"], strict=True):
        m1, m2 = u1["metrics"], u2["metrics"]
        assert m1["train/tokens"] == m2["train/tokens"] > 0
        assert m1["train/optimizer_steps"] == m2["train/optimizer_steps"] == 2
        for key in ("train/pg_loss", "train/grad_norm", "train/kl"):
            assert m1[key] == pytest.approx(m2[key], rel=1e-4, abs=1e-7), key
    # EMPG's batch-wide min-max and mean went through the all-reduce. Its inputs, the token
    # entropies of each rank's prepare pass, agree with the 1-process ones to float noise; the
    # advantages are then compared on identical inputs: the 2-rank run's gathered advantages
    # equal EMPG run in one process on the whole batch with the entropies the ranks measured.
    # (Comparing them with the 1-process run's advantages directly is ill-conditioned: the tiny
    # model's entropies all lie within about 1e-3 of ln(vocab), and EMPG's min-max divides by
    # that range, so 1e-7 of float noise in an entropy moves an advantage by up to about 1e-3.)
    from creditgym import credit
    from creditgym.credit.trajectory import flat_steps

    for e1, e2 in zip(one["entropies"], two["entropies"], strict=True):
        np.testing.assert_allclose(e1, e2, rtol=0, atol=1e-5)
    groups = torch.load(batch, weights_only=False)["groups"]
    steps = flat_steps(groups)
    assert len(steps) == len(two["entropies"]) == len(two["credit"])
    for step, ent in zip(steps, two["entropies"], strict=True):
        step.entropies = np.asarray(ent, dtype=np.float64)
    expected = credit.make("empg")(groups).values
    np.testing.assert_allclose(two["credit"], expected, rtol=0, atol=1e-10)


#: Both jobs run the default group split and plain SGD at lr 0.1 (dp_check's ``optimizer:
#: sgd``), so a parameter difference is lr times a gradient difference. Under AdamW the first
#: steps move a parameter by about lr x sign(gradient), and gradients that are 0 up to float
#: noise (LoRA's A right after B leaves 0; on some mini-batches rank 1 holds no sample) then end
#: up lr-sized apart, by where the noise falls on a given CPU: FSDP2's full fine-tune measured
#: 3.2e-5 on one machine and 4.0e-5 on another under AdamW, with the same mini-batches, token
#: counts and pg_loss. The SIGKILL resume test below runs AdamW (its check is bit equality).
SGD = LEARNER | {"optimizer": "sgd", "lr": 0.1}
JOBS = {
    "ddp-lora": ("ddp", SGD),
    "fsdp2-full": ("fsdp2", SGD | {"finetune": "full"}),
}


@pytest.mark.slow
def test_two_ranks_equal_one_process_on_a_recorded_batch(batch, tmp_path) -> None:
    """DDP (LoRA) and FSDP2 (full fine-tune): one 2-rank launch, and each job in this process."""
    from safetensors.torch import load_file

    from creditgym.agents.models import tiny_model
    from creditgym.trainers import dp_check

    jobs = [
        {"out": str(tmp_path / name / "two"), "mode": mode, "learner": lrn, "credit_name": "empg"}
        for name, (mode, lrn) in JOBS.items()
    ]
    dp_check.launch(["--batch", str(batch), "--out", "-", "--jobs", json.dumps(jobs)], 2)
    start = load_file(str(Path(tiny_model()) / "model.safetensors"))
    for name, (mode, lrn) in JOBS.items():
        one_dir = tmp_path / name / "one"
        dp_check.worker(batch, one_dir, updates=2, mode=mode, learner=lrn, credit_name="empg")
        one, two = dp_check.read_result(one_dir), dp_check.read_result(tmp_path / name / "two")
        assert one["world_size"] == 1 and two["world_size"] == 2
        _compare(one, two, batch)
        # the updates moved the weights, so equal parameters are not equal starting points
        end = torch.load(one["params"])
        if mode == "ddp":  # LoRA: B starts at zero
            assert max(float(v.abs().max()) for k, v in end.items() if "lora_B" in k) > 1e-4
        else:
            key = "model.layers.0.mlp.down_proj.weight"
            assert float((start[key] - end[key]).abs().max()) > 1e-4


# ------------------------------------------------------------------------ kill and resume
CONFIG = """
name: dp
seed: 3
model: {name: tiny}
env: {id: "tests.trainers.slow_keyrooms:test/SlowKeyRooms-v0", kwargs: {level: small, max_steps: 2}}
agent: {max_new_tokens: 4, max_prompt_tokens: 512}
rollout: {tasks_per_iteration: 2, group_size: 2}
credit: {name: gigpo}
learner: {lr: 1.0e-3, micro_batch_tokens: 2048, device: cpu}
eval: {tasks: 1, every: 2}
train: {iterations: 3, checkpoint_every: 1, keep_checkpoints: 3}
logging: {tensorboard: false, plot: false, progress: false}
"""


def _torchrun(nproc: int, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc-per-node={nproc}", str(ROOT / "scripts" / "train.py"), *args]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def _rank_process(launcher: subprocess.Popen, rank: int, timeout: float = 120) -> psutil.Process:
    """The worker process of ``rank`` under a torchrun launcher (found by its RANK variable)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(launcher.pid).children(recursive=True):
            try:
                if child.environ().get("RANK") == str(rank):
                    return child
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        time.sleep(0.05)
    raise AssertionError(f"rank {rank} never started")


def _final(run: Path) -> tuple[dict[str, torch.Tensor], list[dict]]:
    ckpt = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    assert ckpt.iteration == 3 and ckpt.loop["world_size"] == 2 and len(ckpt.loop["rank_rng"]) == 2
    return ckpt.learner["model"], read_metrics(run / "metrics.jsonl")


def _strip(rows: list[dict]) -> list[dict]:
    """Metrics without the clock readings (seconds differ between runs)."""

    def clock(k: str) -> bool:
        return k.startswith(("time/", "rollout/time")) or k.endswith(
            ("_s", "_ms", "seconds", "wall_time")
        )

    return [{k: v for k, v in r.items() if not clock(k)} for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """An unkilled 2-rank run of 3 iterations (and its config file)."""
    tmp = tmp_path_factory.mktemp("dp_ref")
    cfg = tmp / "cfg.yaml"
    cfg.write_text(CONFIG)
    _finish(_torchrun(2, "--config", str(cfg), f"run_dir={tmp / 'ref'}"))
    return tmp / "ref", cfg


@pytest.mark.slow
def test_sigkill_of_one_rank_ends_the_run_and_resume_is_exact(reference, tmp_path) -> None:
    ref, cfg = reference
    run = tmp_path / "killed"
    launcher = _torchrun(2, "--config", str(cfg), f"run_dir={run}", "train.iterations=3")
    victim = _rank_process(launcher, 1)
    others = [p for p in psutil.Process(launcher.pid).children(recursive=True)]
    deadline = time.monotonic() + 240
    while latest_checkpoint(run / "checkpoints") is None:
        assert launcher.poll() is None, launcher.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    out, _ = launcher.communicate(timeout=120)  # the launcher ends the survivors: no hang
    assert launcher.returncode != 0, out
    assert "SIGKILL" in out or "Signal 9" in out, out[-2000:]
    gone, alive = psutil.wait_procs(others, timeout=30)
    assert not alive, f"orphans: {alive}"
    assert latest_checkpoint(run / "checkpoints") is not None

    _finish(_torchrun(2, "--resume", str(run)))
    ref_params, ref_rows = _final(ref)
    params, rows = _final(run)
    assert ref_params.keys() == params.keys()
    for k in ref_params:
        assert torch.equal(ref_params[k], params[k]), k
    assert _strip(rows) == _strip(ref_rows)


@pytest.mark.slow
def test_resume_with_another_rank_count_is_refused(reference) -> None:
    ref, _ = reference
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "--resume", str(ref)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "written by 2 rank(s), this run has 1" in proc.stderr
    assert "--nproc-per-node 2" in proc.stderr


# ------------------------------------------------------------------------ fast, one process
def test_one_process_hooks_are_the_identity() -> None:
    par = distributed.Parallel()
    gen1, gen2 = np.random.default_rng([0, 1]), np.random.default_rng([0, 1])
    items = list(range(7))
    order = gen2.permutation(7)
    assert par.minibatches(items, gen1, 3) == [list(c) for c in np.array_split(order, 3)]
    assert par.total(5) == 5 and par.pad([[1], [2]]) == [[1], [2]]
    assert distributed.current().world_size == 1


def test_group_split_keeps_each_groups_samples_together() -> None:
    par = distributed.Parallel()
    keys = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]  # 4 groups of 3 samples
    items = [f"s{i}" for i in range(len(keys))]
    mbs = par.minibatches(items, np.random.default_rng([0, 1]), 2, keys)
    assert sorted(x for mb in mbs for x in mb) == sorted(items)
    assert [len(mb) for mb in mbs] == [6, 6]
    for mb in mbs:  # two whole groups per mini-batch, each one contiguous and in its own order
        idx = [items.index(x) for x in mb]
        runs = [keys[i] for k, i in enumerate(idx) if k == 0 or keys[idx[k - 1]] != keys[i]]
        assert len(runs) == len(set(runs)) == 2
        assert all(a < b for a, b in zip(idx, idx[1:]) if keys[a] == keys[b])
    # the group order is drawn from the generator: another seed, another split; same seed, same
    again = par.minibatches(items, np.random.default_rng([0, 1]), 2, keys)
    assert again == mbs
    splits = {
        tuple(map(tuple, par.minibatches(items, np.random.default_rng([s, 1]), 2, keys)))
        for s in range(8)
    }
    assert len(splits) > 1
    # three mini-batches over four groups: near-equal chunks, one group cut at a boundary
    assert [len(mb) for mb in par.minibatches(items, np.random.default_rng(0), 3, keys)] == [
        4,
        4,
        4,
    ]
    with pytest.raises(ValueError, match="2 group keys for 12 samples"):
        distributed.split_order(np.random.default_rng(0), 12, [0, 1])


def test_shard_slice_gives_each_rank_whole_contiguous_groups() -> None:
    info = [distributed.DistInfo(rank=r, world_size=4) for r in range(4)]
    assert [distributed.shard_slice(8, i) for i in info] == [
        slice(0, 2),
        slice(2, 4),
        slice(4, 6),
        slice(6, 8),
    ]
    with pytest.raises(ValueError, match="does not split over 4 ranks"):
        distributed.shard_slice(6, info[0])


def test_world_size_check_and_metric_reduction_rules() -> None:
    with pytest.raises(distributed.WorldSizeMismatch, match="written by 2 rank"):
        distributed.check_world_size(2, distributed.DistInfo())
    distributed.check_world_size(1, distributed.DistInfo())
    assert distributed.reduce_record({"a": 1.0}, None) == {"a": 1.0}


def test_fsdp2_refuses_the_hf_backend_and_lora() -> None:
    from creditgym.trainers.config import TrainConfig

    two = distributed.DistInfo(rank=0, world_size=2)
    cfg = TrainConfig.model_validate({"learner": {"data_parallel": "fsdp2"}})
    with pytest.raises(ValueError, match="'hf' backend"):
        distributed.check_supported(cfg, two)
    distributed.check_supported(cfg, distributed.DistInfo())  # one process: nothing to refuse


def test_fsdp2_training_runs_are_refused_with_the_reason() -> None:
    from creditgym.trainers.config import TrainConfig

    two = distributed.DistInfo(rank=0, world_size=2)
    cfg = TrainConfig.model_validate(
        {"backend": {"name": "vllm"}, "learner": {"data_parallel": "fsdp2", "finetune": "full"}}
    )
    with pytest.raises(ValueError, match="weight sync"):
        distributed.check_supported(cfg, two)


def test_every_paper_config_gives_the_torchrun_lines_for_1_and_2_gpus() -> None:
    configs = sorted((ROOT / "scripts" / "configs" / "paper").glob("*.yaml"))
    assert configs
    for path in configs:
        header = "".join(line for line in path.read_text().splitlines(True) if line.startswith("#"))
        for n in (1, 2):
            assert (
                f"torchrun --nproc-per-node {n} scripts/train.py --config {path.relative_to(ROOT)}"
                in header
            )


@pytest.mark.slow
def test_ray_train_runs_the_same_training_function(reference, tmp_path) -> None:
    """Ray Train's TorchTrainer with 2 workers gives the torchrun run, bit for bit."""
    pytest.importorskip("ray.train.torch")
    ref, cfg = reference
    run = tmp_path / "ray"
    # token auth off for a local test cluster; no OOM killer on this shared machine
    env = _env() | {"RAY_AUTH_MODE": "disabled", "RAY_memory_monitor_refresh_ms": "0"}
    cmd = [sys.executable, str(ROOT / "scripts" / "train.py"), "--config", str(cfg)]
    cmd += ["--ray-workers", "2", f"run_dir={run}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ref_params, ref_rows = _final(ref)
    params, rows = _final(run)
    for k in ref_params:
        assert torch.equal(ref_params[k], params[k]), k
    assert _strip(rows) == _strip(ref_rows)
