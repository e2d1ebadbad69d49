"""Data-parallel SPMD training over torch.distributed (SCALE.md section 4).

Every rank runs the same training function (``torchrun --nproc-per-node N scripts/train.py ...``
or Ray Train's ``TorchTrainer``, `ray_train`). Each rank owns whole groups: of an iteration's B
tasks, rank r rolls out the r-th contiguous slice of B / N with its own generation backend and its
own env shards, and computes the credit of its groups. Statistics over the whole batch
(`creditgym.credit.base.batch_stats`: HiPER's z-scores, PPO whitening, EMPG's min-max) and the
learner's loss sums and token counts are all-reduced, so the update equals a one-process update
on the concatenated batch:

- the mini-batch split is a permutation of the *global* sample list (rank 0's samples first), the
  same one a single process draws, and each rank takes its own samples of each chunk;
- the token-mean denominator of a mini-batch is the global count of its loss tokens;
- gradients are summed over ranks before clipping, so clipping and the optimizer see the global
  gradient and every rank's parameters stay identical.

Two wrappers (``learner.data_parallel``): ``ddp`` (`torch.nn.parallel.DistributedDataParallel`
around the decoder; the parameters outside it, such as an untied LM head or value heads, are
all-reduced by hand) and ``fsdp2`` (`torch.distributed.fsdp.fully_shard` on every decoder layer;
embeddings, final norm, LM head and value heads stay replicated and are all-reduced by hand).
Both run on gloo (CPU) and nccl (CUDA). Ranks may hold different numbers of micro-batches; the
short ones run empty micro-batches (a one-token forward with a zero loss) so that every rank makes
the same collective calls.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from creditgym.trainers.config import DATA_PARALLEL_MODES

__all__ = [
    "DATA_PARALLEL_MODES",
    "DataParallel",
    "DistInfo",
    "Parallel",
    "WorldSizeMismatch",
    "current",
    "pick_device",
    "setup",
    "shard_slice",
    "teardown",
]


def split_order(gen: np.random.Generator, count: int, keys: Sequence[int] | None) -> np.ndarray:
    """The sample order that mini-batches are cut from: a permutation of ``range(count)``, or,
    with ``keys`` (a group number per sample), the groups in a random order, each group's
    samples in their own order."""
    if keys is None:
        return gen.permutation(count)
    if len(keys) != count:
        raise ValueError(f"{len(keys)} group keys for {count} samples")
    groups = sorted(set(keys))
    rank = {groups[g]: r for r, g in enumerate(gen.permutation(len(groups)))}
    return np.asarray(sorted(range(count), key=lambda i: (rank[keys[i]], i)), dtype=np.int64)


class WorldSizeMismatch(RuntimeError):
    """A checkpoint written by a different number of ranks than this run has."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_INFO = DistInfo()
_CREATED = False  # whether `setup` created the process group (Ray Train brings its own)


def current() -> DistInfo:
    """This process's `DistInfo` (rank 0 of 1 unless `setup` joined a process group)."""
    return _INFO


def pick_device(preference: str = "auto", local_rank: int | None = None) -> torch.device:
    """``auto``: this rank's CUDA device when CUDA is available, else the CPU; or the named one."""
    if preference not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {preference!r}; choose one of ['auto', 'cpu', 'cuda']")
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("learner.device=cuda, but torch sees no CUDA device")
    index = current().local_rank if local_rank is None else local_rank
    return torch.device("cuda", index % torch.cuda.device_count())


def setup(device: str = "auto", timeout_s: float = 3600.0) -> DistInfo:
    """Join the process group that torchrun or Ray Train describes (``WORLD_SIZE`` > 1).

    ``timeout_s`` bounds a collective: rank 0 evaluates while the others wait at the next one.
    A rank that dies does not leave the others waiting that long: torchrun (and Ray Train)
    stop every rank of the group when one exits with an error or a signal.

    Uses nccl when this rank's device is CUDA, gloo otherwise; an existing group (Ray Train
    starts one) is reused. Without a launcher this is a no-op and returns rank 0 of 1. The
    batch-statistics reducer of `creditgym.credit.base` is routed through an all-reduce.
    """
    global _INFO
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if not dist.is_initialized() and world <= 1:
        _INFO = DistInfo()
        return _INFO
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        cuda = pick_device(device, local_rank).type == "cuda"
        if cuda:
            torch.cuda.set_device(pick_device(device, local_rank))
        dist.init_process_group(
            "nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s)
        )
        global _CREATED
        _CREATED = True
    _INFO = DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend())
    if _INFO.distributed:
        from creditgym.credit.base import set_reducer

        set_reducer(_all_reduce_numpy)
    return _INFO


def teardown() -> None:
    """Leave the process group (if `setup` joined one) and restore the one-process reducer."""
    global _INFO
    import torch.distributed as dist

    if _INFO.distributed:
        from creditgym.credit.base import set_reducer

        set_reducer(None)
    global _CREATED
    if _CREATED and dist.is_initialized():
        dist.destroy_process_group()
    _CREATED = False
    _INFO = DistInfo()


def _collective_device() -> torch.device:
    if current().backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce_numpy(partials: np.ndarray, op: str) -> np.ndarray:
    """The `set_reducer` function: float64 sum or max over ranks."""
    import torch.distributed as dist

    t = torch.as_tensor(np.asarray(partials, dtype=np.float64)).to(_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.cpu().numpy()


def broadcast_path(path: Any) -> Path:
    """Rank 0's ``path`` on every rank."""
    import torch.distributed as dist

    box = [None if path is None else str(path)]
    dist.broadcast_object_list(box, src=0)
    return Path(box[0])


def rank_config(config: Any, info: DistInfo | None = None) -> Any:
    """The config of this rank's env pools: its share of the tasks; eval only on rank 0."""
    info = info or current()
    if not info.distributed:
        return config
    rollout = config.rollout.model_copy(
        update={"tasks_per_iteration": config.rollout.tasks_per_iteration // info.world_size}
    )
    update: dict[str, Any] = {"rollout": rollout}
    if not info.is_main:
        update["eval"] = config.eval.model_copy(update={"tasks": 0})
    return config.model_copy(update=update)


def shard_slice(total: int, info: DistInfo | None = None) -> slice:
    """The contiguous slice of ``total`` groups this rank owns (``total`` must split evenly)."""
    info = info or current()
    if total % info.world_size:
        raise ValueError(
            f"rollout.tasks_per_iteration={total} does not split over {info.world_size} ranks: "
            "each rank owns whole groups, so use a multiple of the rank count"
        )
    share = total // info.world_size
    return slice(info.rank * share, (info.rank + 1) * share)


# ------------------------------------------------------------------------ the learner's hooks
class Parallel:
    """The learner's data-parallel hooks in one process: every one is the identity."""

    world_size = 1
    rank = 0

    def minibatches(
        self,
        samples: Sequence[Any],
        gen: np.random.Generator,
        n: int,
        keys: Sequence[int] | None = None,
    ) -> list[list]:
        """Split ``samples`` into ``min(n, len)`` shuffled mini-batches.

        Without ``keys`` the samples are shuffled one by one. With ``keys`` (each sample's group)
        the groups are shuffled and the samples, group after group, are cut into near-equal
        chunks (`split_order`)."""
        order = split_order(gen, len(samples), keys)
        return [
            [samples[i] for i in chunk] for chunk in np.array_split(order, min(n, len(samples)))
        ]

    def total(self, x: Any) -> Any:
        """Sum of a number or array over ranks."""
        return x

    def maximum(self, x: Any) -> Any:
        """Maximum of a number or array over ranks."""
        return x

    def pad(self, micro_batches: list[list[Any]]) -> list[list[Any] | None]:
        """The micro-batch list, padded with None (empty micro-batches) to the ranks' maximum."""
        return list(micro_batches)

    def accumulate(self, index: int, count: int) -> contextlib.AbstractContextManager:
        """Context of micro-batch ``index`` of ``count``: gradients sync on the last one only."""
        return contextlib.nullcontext()

    def decoder(self, model: Any) -> Any:
        """The module to run for hidden states (the wrapped decoder in a data-parallel run)."""
        return model.get_decoder()

    def reduce_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Make every rank's gradients the sum over ranks (a no-op in one process)."""

    def grad_norm(self, params: Sequence[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
        """The gradients' global L2 norm, clipped to ``max_norm`` first when it is > 0."""
        if max_norm > 0:
            return torch.nn.utils.clip_grad_norm_(params, max_norm)
        return torch.linalg.vector_norm(
            torch.stack([p.grad.norm() for p in params if p.grad is not None])
        )


class DataParallel(Parallel):
    """The hooks of a ``ddp`` or ``fsdp2`` run over the default process group."""

    def __init__(self, mode: str = "ddp"):
        import torch.distributed as dist

        if mode not in DATA_PARALLEL_MODES:
            raise ValueError(f"unknown data_parallel {mode!r}; choose one of {DATA_PARALLEL_MODES}")
        if not dist.is_initialized():
            raise RuntimeError("DataParallel needs a process group (see distributed.setup)")
        self.mode = mode
        self.world_size = dist.get_world_size()
        self.rank = dist.get_rank()
        self._wrapped_decoder: Any = None
        self._policy: Any = None
        self._by_hand: list[torch.nn.Parameter] = []
        self._scaled: list[torch.nn.Parameter] = []

    # -------------------------------------------------------------------------- collectives
    def _reduce(self, x: Any, op: str) -> Any:
        arr = _all_reduce_numpy(np.asarray(x, dtype=np.float64), op)
        if isinstance(x, (int, np.integer)):
            return int(round(float(arr)))
        if isinstance(x, (float, np.floating)):
            return float(arr)
        return arr

    def total(self, x: Any) -> Any:
        return self._reduce(x, "sum")

    def maximum(self, x: Any) -> Any:
        return self._reduce(x, "max")

    def barrier(self) -> None:
        """Wait for every rank."""
        import torch.distributed as dist

        dist.barrier()

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    # ----------------------------------------------------------------------------- batches
    def minibatches(
        self,
        samples: Sequence[Any],
        gen: np.random.Generator,
        n: int,
        keys: Sequence[int] | None = None,
    ) -> list[list]:
        """The one-process split of the global sample list (rank 0's first), this rank's part.

        Every rank draws the same permutation (same generator state), so the global mini-batch k
        is exactly what a single process would train on; a rank may get an empty part. Group
        ``keys`` are made global by numbering each rank's groups after the earlier ranks'."""
        counts = [int(c) for c in self.all_gather(len(samples))]
        offset, total = sum(counts[: self.rank]), sum(counts)
        global_keys = None
        if keys is not None:
            every = self.all_gather([int(k) for k in keys])
            global_keys, base = [], 0
            for part in every:
                global_keys.extend(base + k for k in part)
                base += max(part, default=-1) + 1
        order = split_order(gen, total, global_keys)
        parts = []
        for chunk in np.array_split(order, min(n, total)):
            mine = [int(i) - offset for i in chunk if offset <= i < offset + len(samples)]
            parts.append([samples[i] for i in mine])
        return parts

    def pad(self, micro_batches: list[list[Any]]) -> list[list[Any] | None]:
        most = self.maximum(len(micro_batches))
        return list(micro_batches) + [None] * (most - len(micro_batches))

    # ------------------------------------------------------------------------------ model
    def attach(self, learner: Any) -> None:
        """Wrap the learner's policy and rebuild its optimizer over the wrapped parameters."""
        base = learner.base_model
        self._policy = base
        decoder = base.get_decoder()
        names = {id(p): n for n, p in learner.model.named_parameters()}
        if self.mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            device = next(decoder.parameters()).device
            # buffers (rotary frequencies) are the same on every rank: no sync at all
            self._wrapped_decoder = DistributedDataParallel(
                decoder,
                device_ids=[device.index] if device.type == "cuda" else None,
                broadcast_buffers=False,
            )
            inside = {id(p) for p in decoder.parameters()}
        else:
            from torch.distributed.fsdp import fully_shard

            layers = getattr(decoder, "layers", None)
            if layers is None:
                raise ValueError(
                    f"data_parallel=fsdp2 shards the decoder's `layers`; {type(decoder).__name__} "
                    "has none (use data_parallel=ddp)"
                )
            for layer in layers:
                fully_shard(layer)  # replaces the layer's parameters with sharded ones
            self._wrapped_decoder = decoder
            inside = {id(p) for layer in layers for p in layer.parameters()}
            self._rebuild_optimizer(learner, names)
        self._scaled = [p for p in decoder.parameters() if id(p) in inside and p.requires_grad]
        heads = list(learner.value_heads.parameters()) if learner.value_heads is not None else []
        model_params = [p for p in learner.model.parameters() if p.requires_grad]
        self._by_hand = [p for p in model_params + heads if id(p) not in inside]
        with torch.no_grad():  # identical starting points (LoRA init draws random numbers)
            import torch.distributed as dist

            for p in self._by_hand:
                dist.broadcast(p.data, src=0)

    @staticmethod
    def _rebuild_optimizer(learner: Any, names: dict[int, str]) -> None:
        """Point a fresh optimizer (same groups and options) at the sharded parameters."""
        now = dict(learner.model.named_parameters())
        old = learner.optimizer
        groups = []
        for group in old.param_groups:
            params = [now[names[id(p)]] if id(p) in names else p for p in group["params"]]
            # one group mixes sharded (DTensor) and plain tensors: no multi-tensor kernels
            groups.append({**group, "params": params, "foreach": False})
        learner.optimizer = type(old)(groups)

    def decoder(self, model: Any) -> Any:
        if model is self._policy and self._wrapped_decoder is not None and torch.is_grad_enabled():
            return self._wrapped_decoder
        return model.get_decoder()

    def accumulate(self, index: int, count: int) -> contextlib.AbstractContextManager:
        last = index == count - 1
        if self.mode == "ddp":
            return contextlib.nullcontext() if last else self._wrapped_decoder.no_sync()
        return _fsdp_sync(self._wrapped_decoder, last)

    def reduce_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Wrapped parameters arrive averaged over ranks: scale them to the sum. The rest are
        summed here, in one flat buffer."""
        import torch.distributed as dist

        with torch.no_grad():
            for p in self._scaled:
                if p.grad is not None:
                    p.grad.mul_(self.world_size)
            if not self._by_hand:
                return
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._by_hand]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            pos = 0
            for p, g in zip(self._by_hand, grads, strict=True):
                n = g.numel()
                p.grad = flat[pos : pos + n].view_as(p).clone()
                pos += n

    def grad_norm(self, params: Sequence[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
        """As `Parallel.grad_norm`; under fsdp2 the sharded gradients' squares are summed over
        ranks (shards are disjoint) and added to the replicated ones'."""
        if self.mode == "ddp":
            return super().grad_norm(params, max_norm)
        import torch.distributed as dist
        from torch.distributed.tensor import DTensor

        grads = [p.grad for p in params if p.grad is not None]
        local = [g.to_local() for g in grads if isinstance(g, DTensor)]
        replicated = [g for g in grads if not isinstance(g, DTensor)]
        dev = (local or replicated)[0].device
        sharded = torch.zeros((), dtype=torch.float64, device=dev)
        for g in local:
            sharded += g.detach().double().pow(2).sum()
        dist.all_reduce(sharded)
        total = sharded + sum(
            (g.detach().double().pow(2).sum() for g in replicated),
            torch.zeros((), dtype=torch.float64, device=dev),
        )
        norm = total.sqrt().float()
        if max_norm > 0:
            scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
            with torch.no_grad():
                for g in local + replicated:
                    g.mul_(scale.to(g.device))
        return norm

    def full_state(self, state: Any) -> Any:
        """``state`` with every sharded tensor (DTensor) gathered whole, for a checkpoint that
        does not depend on the rank count's sharding. Every rank must call it (it gathers)."""
        from torch.distributed.tensor import DTensor

        if isinstance(state, DTensor):
            return state.full_tensor().cpu()
        if isinstance(state, dict):
            return {k: self.full_state(v) for k, v in state.items()}
        if isinstance(state, list):
            return [self.full_state(v) for v in state]
        return state

    def shard_state(self, state: dict[str, Any], learner: Any) -> dict[str, Any]:
        """A `full_state` learner checkpoint, its tensors re-sharded like the live ones."""
        if self.mode != "fsdp2":
            return state
        from torch.distributed.tensor import DTensor, distribute_tensor

        def like(full: Any, live: Any) -> Any:
            if isinstance(live, DTensor) and isinstance(full, torch.Tensor):
                full = full.to(device=live.device, dtype=live.dtype)
                return distribute_tensor(full, live.device_mesh, live.placements)
            return full

        live_model = learner.model.state_dict()
        out = dict(state)
        out["model"] = {k: like(v, live_model.get(k)) for k, v in state["model"].items()}
        params = [p for g in learner.optimizer.param_groups for p in g["params"]]
        opt = dict(state["optimizer"])
        opt["state"] = {
            i: {k: v if k == "step" else like(v, params[int(i)]) for k, v in st.items()}
            for i, st in state["optimizer"]["state"].items()
        }
        out["optimizer"] = opt
        return out

    def dummy_backward(self, learner: Any) -> None:
        """An empty micro-batch: a one-token forward through the wrapped decoder, zero loss, so
        this rank joins the collectives of the ranks that still have samples."""
        device = next(self._policy.parameters()).device
        ids = torch.zeros(1, 1, dtype=torch.long, device=device)
        hidden = self.decoder(self._policy)(
            input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False
        ).last_hidden_state
        head = self._policy.get_output_embeddings()
        loss = head(hidden[:, -1]).sum() * 0.0
        if learner.value_heads is not None:
            loss = loss + sum(p.sum() for p in learner.value_heads.parameters()) * 0.0
        loss.backward()

    def dummy_forward(self) -> None:
        """An empty micro-batch of a no-grad pass (fsdp2 all-gathers in every forward)."""
        if self.mode != "fsdp2":
            return
        device = next(self._policy.parameters()).device
        ids = torch.zeros(1, 1, dtype=torch.long, device=device)
        with torch.no_grad():
            self._policy.get_decoder()(
                input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False
            )


@contextlib.contextmanager
def _fsdp_sync(decoder: Any, sync: bool) -> Iterator[None]:
    layers = list(decoder.layers)
    for layer in layers:
        layer.set_requires_gradient_sync(sync)
    try:
        yield
    finally:
        for layer in layers:
            layer.set_requires_gradient_sync(True)


# ------------------------------------------------------------------------ the trainer's helpers
#: Metric name endings that count things: summed over ranks (other scalars are averaged).
SUM_SUFFIXES = (
    "episodes",
    "steps",
    "tokens",
    "dropped",
    "restarts",
    "timeouts",
    "samples",
    "count",
)


def reduce_record(record: dict[str, Any], dp: DataParallel | None) -> dict[str, Any]:
    """One metrics record for the whole run from every rank's record (the same keys on all).

    ``time/*`` takes the slowest rank; names ending in `SUM_SUFFIXES` are summed; other numbers
    are averaged (the learner's ``train/*`` losses are already global, so every rank holds the
    same value); lists are concatenated in rank order; anything else is rank 0's.
    """
    if dp is None:
        return record
    records = dp.all_gather(record)
    out: dict[str, Any] = {}
    for key, value in record.items():
        values = [r.get(key) for r in records]
        if isinstance(value, bool) or not all(isinstance(v, (int, float)) for v in values):
            if all(isinstance(v, list) for v in values):
                out[key] = [x for v in values for x in v]
            else:
                out[key] = value
        elif key.startswith("time/"):
            out[key] = max(values)
        elif key.rsplit("/", 1)[-1].endswith(SUM_SUFFIXES) and not key.startswith("train/"):
            out[key] = sum(values)
        else:
            out[key] = float(np.mean(values))
    return out


class NullLogger:
    """The metrics logger of ranks other than 0 (rank 0 logs the reduced record)."""

    backends: list[str] = []

    def log(self, iteration: int, record: dict[str, Any]) -> None:
        """Drop ``record``."""

    def close(self) -> None:
        """Nothing to close."""


def check_world_size(saved: int, info: DistInfo | None = None) -> None:
    """Refuse to resume a checkpoint written by a different number of ranks."""
    info = info or current()
    if saved != info.world_size:
        raise WorldSizeMismatch(
            f"--resume: the checkpoint was written by {saved} rank(s), this run has "
            f"{info.world_size}. Each rank owns a fixed slice of every iteration's groups and its "
            "own RNG streams, so another rank count would not continue the run exactly; resume "
            f"with `torchrun --nproc-per-node {saved} scripts/train.py --resume RUN_DIR`"
            + (" (or plain `python scripts/train.py --resume RUN_DIR`)" if saved == 1 else "")
        )


def check_resume(checkpoints: str | Path, info: DistInfo | None = None) -> None:
    """`check_world_size` against the newest checkpoint under ``checkpoints`` (if any), reading
    only its small loop-state file."""
    from creditgym.trainers.checkpoint import latest_checkpoint

    path = latest_checkpoint(checkpoints)
    if path is not None:
        state = torch.load(Path(path) / "state.pt", weights_only=False)
        check_world_size(int(state.get("loop", {}).get("world_size", 1)), info)


def check_supported(config: Any, info: DistInfo | None = None) -> None:
    """Refuse settings a data-parallel run cannot honour, before anything heavy is built."""
    info = info or current()
    if not info.distributed:
        return
    shard_slice(config.rollout.tasks_per_iteration, info)
    if config.learner.data_parallel == "fsdp2":
        if config.backend.name == "hf":
            raise ValueError(
                "learner.data_parallel=fsdp2 shards the policy, so the 'hf' backend (which "
                "generates with the learner's module) cannot run per rank; use backend.name=vllm "
                "or learner.data_parallel=ddp"
            )
        if config.learner.finetune != "full":
            raise ValueError(
                "learner.data_parallel=fsdp2 supports finetune=full; use ddp for LoRA (its "
                "adapters are small: DDP replicates them cheaply)"
            )
        raise ValueError(
            "learner.data_parallel=fsdp2 runs in the learner (creditgym.trainers.dp_check and its "
            "tests) but a training run cannot use it yet: the weight sync to the generation "
            "backend exports the model, which would need the sharded layers gathered first; use "
            "learner.data_parallel=ddp"
        )
