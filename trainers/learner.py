"""The learner: the policy model (LoRA or full), its reference, and the PPO-clip update.

Samples. In ``context="steps"`` mode every step is one sample: its prompt token ids followed by
its sampled response token ids, exactly as the agent recorded them (never re-tokenised), and the
loss covers the response tokens only. In ``context="concat"`` mode consecutive steps whose
prompts extend each other (the agent's ``concat`` context) form one sequence; the environment's
tokens between responses are masked out, and each turn's advantage goes on that turn's tokens.

Per-token advantages: the step's advantage broadcast over its response tokens; with
``Advantages.spans`` (HiPER), the tokens of each span of ``Step.spans`` get that span's
advantage (``"switch"``, ``"subgoal"``, ``"action"``) and the rest keep the step's value. A step
whose ``Advantages.mask`` is False is left out of every loss part and of the token counts that
normalise them; ``Advantages.weight`` scales its tokens' share of the policy loss and its terms.

The objective is a registered policy loss plus registered terms (`creditgym.trainers.losses`;
by default "ppo_clip" with ["kl", "entropy"]), token-mean over the mini-batch.

`prepare` runs before the credit module: one no-grad pass that recomputes the old log-probs and
token entropies (filling ``Step.entropies``), the reference log-probs when a term needs them
(adapter disabled under LoRA; a frozen copy of the initial weights for full fine-tuning), and on
request the value heads' estimates (`creditgym.trainers.heads`, read in the same pass) and the
IGPO answer log-probs (`creditgym.trainers.answer_scoring`). The learner serves exactly the
value heads the credit module declares (``module.value_heads``, given at construction). The
sampler's log-probs are used only to report the sampler/learner mismatch. Value heads train when
the credit module returns targets (`creditgym.credit.ppo.CriticAdvantages`). `update` then runs
the epochs over shuffled mini-batches (at least two when there are two samples), packing each
into micro-batches by token budget (`creditgym.trainers.batching`) and accumulating gradients so
the loss is the token mean of the whole mini-batch.

The language-model head is applied only at the positions that are scored, so a batch never
materialises ``[batch, length, vocab]`` logits.
"""

from __future__ import annotations

import copy
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from creditgym.credit.base import Advantages
from creditgym.credit.trajectory import Step, TrajectoryGroup, flat_steps
from creditgym.trainers.answer_scoring import score_answers
from creditgym.trainers.batching import pad_right, token_batches
from creditgym.trainers.config import LearnerConfig
from creditgym.trainers.distributed import Parallel, pick_device
from creditgym.trainers.heads import ValueHeads, check_heads, read_offset, value_loss, value_targets
from creditgym.trainers.loss import (
    TokenBatch,
    approx_kl_old,
    token_logprobs_and_entropy,
)
from creditgym.trainers.losses import DEFAULT_POLICY, DEFAULT_TERMS, build_objective
from creditgym.trainers.packing import (
    Layout,
    packed_layout,
    packed_micro_batches,
    padded_layout,
    unsupported_reason,
    use_tree_attention,
)

#: Asks `Learner.prepare` for the old-log-prob pass before credit (async pi_prox).
NEED_OLD = "old_logprobs"
NEEDS = ("entropies", "values", "answer_logprobs", NEED_OLD)


@dataclass
class _Sample:
    """One training sequence and the steps whose response tokens it holds."""

    ids: list[int]
    #: Index into `ids` of every loss token (the token at i is predicted from position i - 1).
    positions: list[int]
    #: (flat step index, step, offset into `positions`, number of response tokens).
    parts: list[tuple[int, Step, int, int]]
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    #: Scored by the learner under the pre-update policy (entropies and mismatch recorded).
    measured: bool = False
    #: Index of the sample's group in the batch (mini-batches keep groups together).
    group: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.positions)


def _ntok(s: _Sample) -> int:
    return s.num_tokens


def _sampler_logprobs(s: _Sample) -> torch.Tensor:
    """The backend's log-probs of a sample's response tokens (``old_logprobs: sampler``)."""
    out = []
    for _, step, _, k in s.parts:
        lp = step.sampler_logprobs
        if lp is None or len(lp) != k:
            raise ValueError(
                "old_logprobs=sampler needs the backend's log-prob of every sampled token; a "
                f"step has {None if lp is None else len(lp)} for {k} response tokens"
            )
        out.extend(float(x) for x in lp)
    return torch.tensor(out, dtype=torch.float32)


@dataclass
class _OldStats:
    """What the old-log-prob pass measured: entropy sum, token count, sampler - learner."""

    ent_sum: float = 0.0
    tokens: int = 0
    diffs: list[np.ndarray] = field(default_factory=list)


class Learner:
    """Holds the policy and updates it from trajectory groups and their advantages."""

    def __init__(
        self,
        config: LearnerConfig,
        model_path: str,
        *,
        value_heads: Mapping[str, str] | None = None,
        loss_policy: str = DEFAULT_POLICY,
        loss_terms: Sequence[str] = DEFAULT_TERMS,
    ):
        """Load the model from a local HF folder (`creditgym.agents.models.resolve_model` gives one).

        ``value_heads`` are the credit module's (``module.value_heads``: head name -> read
        position); none are served without them. ``loss_policy`` and ``loss_terms`` name the
        objective (`creditgym.trainers.losses`).
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        config.validate()
        self.config = config
        self.objective = build_objective(config, loss_policy, loss_terms)
        self.head_positions = check_heads(value_heads or {})
        self.model_path = model_path
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        dtype = getattr(torch, config.dtype)
        #: Where the policy lives (``config.device``: "auto" picks this rank's GPU when present).
        self.device = pick_device(config.device)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(self.device)
        #: Data-parallel hooks (`creditgym.trainers.distributed`); the identity in one process.
        self.dist: Parallel = Parallel()
        self.reference: Any = None
        if config.finetune == "lora":
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=config.lora_r,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=config.lora_target_modules,
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, lora)
        elif self.objective.needs_reference:
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            if config.finetune == "lora":
                model.enable_input_require_grads()
        model.train()
        self.model = model
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=config.lr,
            betas=tuple(config.adam_betas),
            weight_decay=config.weight_decay,
        )
        self.value_heads: ValueHeads | None = None
        if self.head_positions:
            hidden = self.base_model.config.hidden_size
            self.value_heads = ValueHeads(hidden, list(self.head_positions), seed=config.seed)
            self.value_heads.to(self.device)
            self.optimizer.add_param_group({"params": list(self.value_heads.parameters())})
        self.updates = 0
        self._prepared: tuple[tuple[int, ...], list[_Sample]] | None = None
        #: Row cap of prefix packing (0: unpacked), set when the model supports it exactly.
        self.pack_tokens = 0
        if config.packing:
            reason = unsupported_reason(self.base_model.config, config.pack_tokens)
            if reason is None:
                self.pack_tokens = config.pack_tokens
                # packed rows: attention reads only the keys a query block may see (exact)
                for m in (self.base_model, self.reference):
                    if m is not None:
                        use_tree_attention(m)
            else:
                print(
                    f"learner: prefix packing off, forwarding unpacked ({reason})", file=sys.stderr
                )
        #: Tokens the model forwarded (packed rows count each shared prefix once), all passes.
        self.tokens_forwarded = 0
        #: Force the old-log-prob pass before credit even when no credit need asks for it (the
        #: asynchronous path's pi_prox); otherwise `prepare` defers it into `update`.
        self.old_pass_before_credit = False
        self._old_stats = _OldStats()
        self._deferred = False
        self._unchanged = False
        #: No dropout anywhere: a training-mode forward gives the no-grad pass's numbers.
        self._dropout_free = not any(
            isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()
        ) and not float(getattr(self.base_model.config, "attention_dropout", 0.0) or 0.0)

    # ------------------------------------------------------------------------------ model parts
    @property
    def base_model(self) -> Any:
        """The causal-LM module (inside the peft wrapper under LoRA)."""
        return self.model.get_base_model() if self.config.finetune == "lora" else self.model

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def _served_heads(self) -> ValueHeads:
        """The value heads, or a clear error when the credit module declared none."""
        if self.value_heads is None:
            raise ValueError(
                "values were asked for but this learner serves no value heads: build it with "
                "Learner(..., value_heads=module.value_heads) for a credit module that needs them"
            )
        return self.value_heads

    # --------------------------------------------------------------------------------- samples
    def build_samples(self, groups: Sequence[TrajectoryGroup]) -> list[_Sample]:
        """Turn recorded steps into training sequences (see the module docstring)."""
        samples: list[_Sample] = []
        index = 0
        for g, group in enumerate(groups):
            for traj in group.trajectories:
                current: _Sample | None = None
                for step in traj.steps:
                    if step.prompt_ids is None or step.response_ids is None:
                        raise ValueError(
                            "a step has no token ids: the learner trains LLM agents only "
                            "(were these trajectories collected by LLMAgent?)"
                        )
                    prompt = [int(t) for t in step.prompt_ids]
                    response = [int(t) for t in step.response_ids]
                    extends = (
                        self.config.context == "concat"
                        and current is not None
                        and len(prompt) >= len(current.ids)
                        and prompt[: len(current.ids)] == current.ids
                    )
                    if not extends:
                        current = _Sample(ids=list(prompt), positions=[], parts=[], group=g)
                        samples.append(current)
                    else:
                        current.ids.extend(prompt[len(current.ids) :])
                    start = len(current.ids)
                    current.parts.append((index, step, len(current.positions), len(response)))
                    current.ids.extend(response)
                    current.positions.extend(range(start, start + len(response)))
                    index += 1
        return [s for s in samples if s.positions]

    def _micro_batches(self, samples: list[_Sample]) -> list[list[_Sample]]:
        """Micro-batches within the token budget: prefix-packed rows (`creditgym.trainers.packing`)
        when packing is on, else samples longest first, right-padded."""
        budget = self.config.micro_batch_tokens
        if not self.pack_tokens:
            return token_batches(samples, budget, length=lambda s: len(s.ids))
        plan = packed_micro_batches([s.ids for s in samples], budget, self._row_tokens)
        return [[samples[j] for j in mb] for mb in plan]

    @property
    def _row_tokens(self) -> int:
        """A packed row's cap: ``pack_tokens``, and never more than the micro-batch budget."""
        return min(self.pack_tokens, self.config.micro_batch_tokens)

    def _layout(self, batch: list[_Sample]) -> Layout:
        """The model inputs of one micro-batch (packed or padded), on the device."""
        seqs = [s.ids for s in batch]
        if self.pack_tokens:
            dtype = next(self.base_model.parameters()).dtype
            lay = packed_layout(seqs, self._row_tokens, dtype)
        else:
            lay = padded_layout(seqs)
        return lay.to(self.device)

    def _forward(
        self, batch: list[_Sample], *, entropy: bool, values: bool = False, reference: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        """Log-probs (and entropies) of every loss token of `batch`, flattened in sample order.

        Values are one per step part and head, read at the head's declared position
        (`creditgym.trainers.heads.read_offset`). ``reference=True`` scores under the reference
        policy instead.
        """
        lay = self._layout(batch)
        self.tokens_forwarded += lay.forwarded
        heads = self._served_heads() if values else None
        rows, cols, targets = [], [], []
        value_at: dict[str, tuple[list[int], list[int]]] = {
            n: ([], []) for n in (heads.names if heads else [])
        }
        for b, s in enumerate(batch):
            row, col = lay.rows[b], lay.cols[b]
            rows.extend([row] * s.num_tokens)
            cols.extend(col[p - 1] for p in s.positions)
            targets.extend(s.ids[p] for p in s.positions)
            for _, step, offset, _ in s.parts:
                for name, (vr, vc) in value_at.items():
                    vr.append(row)
                    vc.append(
                        col[s.positions[offset] + read_offset(step, self.head_positions[name])]
                    )
        rows_t, cols_t = torch.as_tensor(rows), torch.as_tensor(cols)
        targets_t = torch.as_tensor(targets, device=lay.ids.device)
        if reference and self.config.finetune == "lora":
            with self.model.disable_adapter():
                hidden = self._hidden(self.base_model, lay)
                base = self.base_model
        elif reference:
            base = self.reference
            hidden = self._hidden(base, lay)
        else:
            base = self.base_model
            hidden = self._hidden(base, lay)
        logits = base.get_output_embeddings()(hidden[rows_t, cols_t])
        logp, ent = token_logprobs_and_entropy(logits, targets_t, self.config.temperature)
        vals: dict[str, torch.Tensor] = {}
        if heads is not None:
            vals = heads(
                {
                    n: hidden[torch.as_tensor(vr), torch.as_tensor(vc)]
                    for n, (vr, vc) in value_at.items()
                }
            )
        return logp, (ent if entropy else None), vals

    def _pad(self, batch: list[_Sample]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded token ids and the attention mask of a micro-batch, on the device."""
        ids, mask = pad_right([s.ids for s in batch])
        return ids.to(self.device), mask.to(self.device)

    def _hidden(self, model: Any, lay: Layout | torch.Tensor, mask: Any = None) -> torch.Tensor:
        """Last hidden states of a `Layout` (or of padded ``ids`` and their 2D ``mask``)."""
        if not isinstance(lay, Layout):
            lay = Layout(lay, mask, None, [], [], 0)
        out = self.dist.decoder(model)(**lay.inputs(), use_cache=False)
        return out.last_hidden_state

    # --------------------------------------------------------------------------------- prepare
    @torch.no_grad()
    def prepare(
        self, groups: Sequence[TrajectoryGroup], needs: set[str] | frozenset[str] = frozenset()
    ) -> dict[str, float]:
        """Score the batch under the policy before the update; fill the `Step` fields.

        The old-log-prob pass (old log-probs, token entropies into ``Step.entropies``, values
        when ``needs`` has "values") runs here when something needs it before credit: ``needs``
        has "entropies", "values" or "old_logprobs", or `old_pass_before_credit` is set.
        Otherwise it is deferred into `update`, whose first mini-batch takes its old log-probs
        from its own forward (the policy has not changed yet) and which scores only the other
        samples in a no-grad pass. The reference pass (when a loss term needs it) and IGPO's
        answer scoring ("answer_logprobs") run here. With ``old_logprobs: sampler`` the
        backend's log-probs are pi_old. Returns metrics, with the sampler/learner log-prob
        mismatch once the learner has scored the tokens.
        """
        unknown = set(needs) - set(NEEDS)
        if unknown:
            raise ValueError(f"unknown needs {sorted(unknown)}; the learner provides {list(NEEDS)}")
        t0 = time.perf_counter()
        forwarded0 = self.tokens_forwarded
        samples = self.build_samples(groups)
        want_values = "values" in needs
        if want_values:
            self._served_heads()
        self._old_stats = _OldStats()
        now = (
            self.old_pass_before_credit
            or bool(getattr(self.config, "decoupled", False))  # async: pi_prox before credit
            or bool(set(needs) & {"entropies", "values", NEED_OLD})
            or not self._dropout_free
        )
        self._deferred = not now
        was_training = self.model.training
        self.model.eval()
        extra: dict[str, float] = {}
        try:
            if now:
                self._score_old(samples, values=want_values)
            if self.objective.needs_reference:
                self._score_reference(samples)
            if "answer_logprobs" in needs:
                scored = score_answers(
                    self.base_model,
                    self.tokenizer,
                    groups,
                    self.config.answer_prefix,
                    self.config.micro_batch_tokens,
                )
                extra.update({f"train/{k}": v for k, v in scored.items()})
        finally:
            self.model.train(was_training)
        if self.config.old_logprobs == "sampler":
            for s in samples:
                s.old_logp = _sampler_logprobs(s)
        self._prepared = (self._key(groups), samples)
        n_samples, n_tok = self.dist.total(np.array([len(samples), sum(map(_ntok, samples))]))
        metrics = {
            "train/prepare_s": time.perf_counter() - t0,
            "train/samples": float(n_samples),
            "train/response_tokens": float(n_tok),
            "train/prepare_tokens_forwarded": float(self.tokens_forwarded - forwarded0),
            **extra,
        }
        if now:
            metrics.update(self._old_metrics())
        if want_values:
            for name in self.value_heads.names:
                vs = [s.values[name] for s in flat_steps(groups)]
                metrics[f"train/value_{name}_mean"] = float(np.mean(vs)) if vs else 0.0
        return metrics

    def _no_grad_pass(self, samples: list[_Sample], **kw: Any) -> Any:
        """Yield ``(micro-batch, log-probs, entropies, values)`` of a no-grad forward over
        ``samples`` (keyword arguments go to `_forward`); every rank makes the same calls."""
        for batch in self.dist.pad(self._micro_batches(samples)):
            if batch is None:  # another rank still has samples (fsdp2 gathers per forward)
                self.dist.dummy_forward()
                continue
            logp, ent, vals = self._forward(batch, **kw)
            yield batch, logp.cpu(), (None if ent is None else ent.cpu()), vals

    @torch.no_grad()
    def _score_old(self, samples: list[_Sample], values: bool = False) -> None:
        """The old-log-prob pass: old log-probs, entropies and (on request) values."""
        for batch, logp, ent, vals in self._no_grad_pass(samples, entropy=True, values=values):
            pos, vpos = 0, 0
            for s in batch:
                n = s.num_tokens
                self._record_old(s, logp[pos : pos + n], ent[pos : pos + n])
                if values:
                    for j, (_, step, _, _) in enumerate(s.parts):
                        step.values = {h: float(v[vpos + j].cpu()) for h, v in vals.items()}
                    vpos += len(s.parts)
                pos += n

    @torch.no_grad()
    def _score_reference(self, samples: list[_Sample]) -> None:
        for batch, ref, _, _ in self._no_grad_pass(samples, entropy=False, reference=True):
            pos = 0
            for s in batch:
                s.ref_logp = ref[pos : pos + s.num_tokens].clone()
                pos += s.num_tokens

    def _record_old(self, s: _Sample, logp: torch.Tensor, ent: torch.Tensor) -> None:
        """Store one sample's log-probs under the pre-update policy (as pi_old unless the
        sampler's are used), its steps' entropies and its sampler/learner mismatch."""
        logp = logp.detach().float().cpu().clone()
        ent_s = ent.detach().cpu().numpy().astype(np.float64)
        if self.config.old_logprobs != "sampler":
            s.old_logp = logp
        s.measured = True
        stats = self._old_stats
        stats.ent_sum += float(ent_s.sum())
        stats.tokens += s.num_tokens
        for _, step, off, k in s.parts:
            step.entropies = ent_s[off : off + k].copy()
            if step.sampler_logprobs is not None and len(step.sampler_logprobs) == k:
                sampled = np.asarray(step.sampler_logprobs, dtype=np.float64)
                stats.diffs.append(logp[off : off + k].numpy().astype(np.float64) - sampled)

    def _old_metrics(self) -> dict[str, float]:
        """Token-mean old entropy and the sampler/learner mismatch, over every rank."""
        st = self._old_stats
        d = np.concatenate(st.diffs) if st.diffs else np.zeros(0)
        k3 = np.exp(d) - d - 1.0
        ent_sum, tokens, n, abs_sum, k3_sum = self.dist.total(
            np.array([st.ent_sum, st.tokens, d.size, np.abs(d).sum(), k3.sum()])
        )
        out = {"train/old_entropy": float(ent_sum / max(tokens, 1))}
        if n:
            out["train/logprob_mismatch_abs"] = float(abs_sum / n)
            out["train/logprob_mismatch_max"] = float(
                self.dist.maximum(float(np.abs(d).max()) if d.size else 0.0)
            )
            # k3 estimate of KL(sampler || learner) on the sampled tokens.
            out["train/sampler_learner_kl"] = float(k3_sum / n)
        return out

    @staticmethod
    def _key(groups: Sequence[TrajectoryGroup]) -> tuple[int, ...]:
        return tuple(id(s) for s in flat_steps(groups))

    # ---------------------------------------------------------------------------------- update
    def update(self, groups: Sequence[TrajectoryGroup], advantages: Advantages) -> dict[str, float]:
        """The objective's epochs over the batch; returns ``train/...`` metrics.

        Samples whose every step is masked out (``Advantages.mask``) are dropped before the
        shuffle: they would add nothing to any loss part or token count.
        """
        t0 = time.perf_counter()
        n_steps = len(flat_steps(groups))
        if len(advantages.values) != n_steps:
            raise ValueError(f"{len(advantages.values)} advantages for {n_steps} steps")
        advantages.check(n_steps)
        if self._prepared is None or self._prepared[0] != self._key(groups):
            self.prepare(groups, set())
        step_mask, step_weight = advantages.step_mask(), advantages.step_weight()
        samples = [s for s in self._prepared[1] if any(step_mask[i] for i, *_ in s.parts)]
        if not self.dist.total(len(samples)):
            self._prepared = None
            return {"train/samples": 0.0}
        tokens_of = {
            id(s): (
                self._token_advantages(s, advantages),
                *self._token_mask_and_weight(s, step_mask, step_weight),
            )
            for s in samples
        }
        targets = self._value_targets(advantages, n_steps, step_mask)
        want_values = bool(targets)
        gen = np.random.default_rng([self.config.seed, self.updates])
        sums: dict[str, float] = dict.fromkeys(
            ["pg", *self.objective.terms, "approx_kl", "value", "tis_clip", "tis_w", "grad_norm"],
            0.0,
        )
        clipped, tokens, steps_taken = 0.0, 0, 0
        forwarded0 = self.tokens_forwarded
        keys = [s.group for s in samples] if self.config.minibatch_split == "group" else None
        plan = [
            self.dist.minibatches(samples, gen, self.config.mini_batches, keys)
            for _ in range(self.config.epochs)
        ]
        if self._deferred:  # score what the first mini-batch's own forward will not
            first = {id(s) for s in plan[0][0]}
            self.model.eval()
            self._score_old([s for s in self._prepared[1] if id(s) not in first and not s.measured])
        self.model.train()
        self._unchanged = True
        for epoch in plan:
            for mb in epoch:
                c, t = self._backward_minibatch(mb, tokens_of, targets, sums)
                clipped += c
                tokens += t
                params = [p for g in self.optimizer.param_groups for p in g["params"]]
                self.dist.reduce_gradients(params)
                norm = self.dist.grad_norm(params, self.config.max_grad_norm)
                sums["grad_norm"] += float(norm)
                self.optimizer.step()
                self._unchanged = False
                self.optimizer.zero_grad(set_to_none=True)
                steps_taken += 1
        self.updates += 1
        self._prepared = None
        old_metrics = self._old_metrics() if self._deferred else {}
        grad_norm = sums.pop("grad_norm")  # the same on every rank (gradients are reduced)
        names = list(sums)
        *parts, clipped, tokens = self.dist.total(np.array([*sums.values(), clipped, tokens]))
        sums = dict(zip(names, (float(v) for v in parts), strict=True)) | {"grad_norm": grad_norm}
        per_step = {k: v / max(steps_taken, 1) for k, v in sums.items()}
        metrics = {
            "train/pg_loss": per_step["pg"],
            **{f"train/{name}": per_step[name] for name in self.objective.terms},
            "train/approx_kl_old": per_step["approx_kl"],
            "train/grad_norm": per_step["grad_norm"],
            "train/clip_frac": clipped / max(tokens, 1),
            "train/optimizer_steps": float(steps_taken),
            "train/tokens": float(tokens),
            "train/lr": float(self.optimizer.param_groups[0]["lr"]),
            "train/update_s": time.perf_counter() - t0,
            "train/update_tokens_forwarded": float(self.tokens_forwarded - forwarded0),
            **old_metrics,
        }
        if want_values:
            metrics["train/value_loss"] = per_step["value"]
        if self.config.decoupled:  # sums of counted tokens: undo the per-step average
            total = max(steps_taken, 1) / max(tokens, 1)
            metrics["train/tis_clip_frac"] = per_step["tis_clip"] * total
            metrics["train/tis_weight_mean"] = per_step["tis_w"] * total
        return metrics

    def supervised_update(
        self, groups: Sequence[TrajectoryGroup], mini_batches: int | None = None, seed: int = 0
    ) -> dict[str, float]:
        """One epoch of behaviour cloning: minimise the token-mean NLL of the recorded responses.

        The same samples, micro-batching and optimizer as `update`, without advantages, clipping
        or KL (`creditgym.trainers.warmstart` uses it on expert demonstrations). Returns ``sft/...`` metrics,
        among them the mean NLL per response token, measured before each optimizer step.
        """
        t0 = time.perf_counter()
        samples = self.build_samples(groups)
        if not samples:
            raise ValueError("no response tokens to train on")
        n_mb = min(mini_batches or self.config.mini_batches, len(samples))
        order = np.random.default_rng([seed, self.updates]).permutation(len(samples))
        nll_sum, tokens, steps = 0.0, 0, 0
        self.model.train()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        for chunk in np.array_split(order, n_mb):
            mb = [samples[i] for i in chunk]
            denom = sum(s.num_tokens for s in mb)
            for micro in self._micro_batches(mb):
                logp, _, _ = self._forward(micro, entropy=False)
                loss = -logp.sum() / denom
                loss.backward()
                nll_sum += float(-logp.detach().sum())
                tokens += int(logp.numel())
            if self.config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            steps += 1
        self.updates += 1
        self._prepared = None
        return {
            "sft/nll": nll_sum / max(tokens, 1),
            "sft/samples": float(len(samples)),
            "sft/tokens": float(tokens),
            "sft/optimizer_steps": float(steps),
            "sft/update_s": time.perf_counter() - t0,
        }

    @torch.no_grad()
    def greedy_match(self, groups: Sequence[TrajectoryGroup]) -> float:
        """Fraction of recorded steps whose whole response is the policy's argmax, token by token.

        On expert demonstrations this is the greedy policy's step accuracy.
        """
        samples = self.build_samples(groups)
        if not samples:
            raise ValueError("no response tokens to score")
        self.model.eval()
        hits = sum(self._greedy_hits(micro) for micro in self._micro_batches(samples))
        self.model.train()
        return hits / len(samples)

    def _greedy_hits(self, batch: list[_Sample]) -> int:
        ids, mask = self._pad(batch)
        hidden = self._hidden(self.base_model, ids, mask)
        head = self.base_model.get_output_embeddings()
        hits = 0
        for b, s in enumerate(batch):
            pos = torch.as_tensor(s.positions)
            pred = head(hidden[b, pos - 1]).argmax(-1)
            hits += bool(torch.equal(pred, ids[b, pos]))
        return hits

    def _backward_minibatch(
        self,
        mb: list[_Sample],
        tokens_of: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
        targets: dict[str, np.ndarray],
        sums: dict[str, float],
    ) -> tuple[float, int]:
        """Accumulate the gradient of one mini-batch's token-mean objective over its
        micro-batches.

        ``tokens_of[id(sample)]`` holds the sample's per-token advantages, 0/1 mask and step
        weights; the denominator is the mini-batch's count of unmasked tokens. With value
        ``targets`` (flat per step, NaN = no target) the heads' squared error, averaged over the
        mini-batch's finite targets of each head, is added with ``value_coef``. Returns the
        number of clipped tokens and of counted loss tokens; adds loss parts to ``sums``.
        """
        denom = self.dist.total(int(sum(float(tokens_of[id(s)][1].sum()) for s in mb)))
        counts = {
            h: self.dist.total(sum(int(np.isfinite(t[i])) for s in mb for i, *_ in s.parts))
            for h, t in targets.items()
        }
        clipped, tokens = 0.0, 0
        micro_batches = self.dist.pad(self._micro_batches(mb))
        for j, micro in enumerate(micro_batches):
            with self.dist.accumulate(j, len(micro_batches)):
                if micro is None:  # this rank's share ran out: join the others' collectives
                    self.dist.dummy_backward(self)
                    continue
                c, t = self._backward_micro(micro, tokens_of, targets, counts, denom, sums)
            clipped += c
            tokens += t
        return clipped, tokens

    def _backward_micro(
        self,
        micro: list[_Sample],
        tokens_of: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
        targets: dict[str, np.ndarray],
        counts: dict[str, int],
        denom: int,
        sums: dict[str, float],
    ) -> tuple[float, int]:
        """One micro-batch of `_backward_minibatch`: forward, objective, backward; returns its
        clipped and counted loss tokens."""
        want_values = bool(targets)
        logp, ent, vals = self._forward(micro, entropy=True, values=want_values)
        if self._unchanged:  # the policy is still pi_old: this forward is the old pass
            pos = 0
            for s in micro:
                if not s.measured:
                    self._record_old(
                        s, logp[pos : pos + s.num_tokens], ent[pos : pos + s.num_tokens]
                    )
                pos += s.num_tokens
        dev = logp.device
        ref = None
        if all(s.ref_logp is not None for s in micro):
            ref = torch.cat([s.ref_logp for s in micro]).to(dev)
        adv, mask, weight = (
            torch.cat([tokens_of[id(s)][k] for s in micro]).to(dev) for k in range(3)
        )
        batch = TokenBatch(
            logp=logp,
            old_logp=torch.cat([s.old_logp for s in micro]).to(dev),
            advantages=adv,
            mask=mask,
            weight=weight,
            denominator=denom,
            ref_logp=ref,
            entropy=ent,
            sampler_logp=self._sampler_logp(micro, dev) if self.config.decoupled else None,
        )
        loss, policy_out, term_values = self.objective(batch)
        if want_values:
            index = [i for s in micro for i, *_ in s.parts]
            vloss = value_loss(vals, targets, index, counts)
            loss = loss + self.config.value_coef * vloss
            sums["value"] += float(vloss.detach())
        loss.backward()
        sums["pg"] += float(policy_out.loss.detach())
        for name, value in term_values.items():
            sums[name] += float(value)
        sums["approx_kl"] += float(approx_kl_old(batch))
        if policy_out.weight_clip_count is not None:
            sums["tis_clip"] += float(policy_out.weight_clip_count)
            sums["tis_w"] += float(policy_out.weight_sum)
        return float(policy_out.clip_count), int(mask.sum())

    @staticmethod
    def _sampler_logp(micro: list[_Sample], dev: Any) -> torch.Tensor:
        """Decoupled PPO's mu: each step's recorded sampler log-probs on its response tokens;
        a step without them (or with a wrong count) takes pi_prox, so its weight is 1."""
        parts = []
        for s in micro:
            mu = s.old_logp.clone()
            for _, step, off, k in s.parts:
                lp = step.sampler_logprobs
                if lp is not None and len(lp) == k:
                    vals = torch.as_tensor(np.asarray(lp, dtype=np.float64), dtype=mu.dtype)
                    if bool(torch.isfinite(vals).all()):
                        mu[off : off + k] = vals
            parts.append(mu)
        return torch.cat(parts).to(dev)

    def _token_advantages(self, sample: _Sample, advantages: Advantages) -> torch.Tensor:
        """Each step's advantage on its own response tokens; span-routed when given."""
        out = torch.zeros(sample.num_tokens, dtype=torch.float32)
        for index, step, off, k in sample.parts:
            out[off : off + k] = float(advantages.values[index])
            if advantages.spans and step.spans:
                for name, ranges in step.spans.items():
                    if name not in advantages.spans:
                        continue
                    value = float(advantages.spans[name][index])
                    for a, b in ranges:
                        a, b = max(0, int(a)), min(k, int(b))
                        out[off + a : off + b] = value
        return out

    def _token_mask_and_weight(
        self, sample: _Sample, step_mask: np.ndarray, step_weight: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each step's mask (1.0 / 0.0) and weight on its own response tokens; with
        ``prob_mask`` (SPO) a token whose sampler probability is >= it is masked too."""
        mask = torch.ones(sample.num_tokens, dtype=torch.float32)
        weight = torch.ones(sample.num_tokens, dtype=torch.float32)
        threshold = getattr(self.config, "prob_mask", None)
        for index, step, off, k in sample.parts:
            if not step_mask[index]:
                mask[off : off + k] = 0.0
            elif threshold is not None:
                lp = step.sampler_logprobs
                if lp is None or len(lp) != k:
                    raise ValueError(
                        f"learner.prob_mask needs the sampler's log-prob of every response "
                        f"token; a step has {None if lp is None else len(lp)} for {k} tokens"
                    )
                high = torch.exp(torch.as_tensor(lp, dtype=torch.float64)) >= threshold
                mask[off : off + k][high] = 0.0
            if step_weight[index] != 1.0:
                weight[off : off + k] = float(step_weight[index])
        return mask, weight

    def _value_targets(
        self, advantages: Advantages, n_steps: int, step_mask: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Value targets by head from a critic module (`creditgym.credit.ppo.CriticAdvantages`),
        NaN (no target) on masked-out steps."""
        targets = getattr(advantages, "targets", None) or {}
        if not targets:
            return {}
        served = self.value_heads.names if self.value_heads is not None else []
        out = value_targets(targets, served, n_steps)
        return {name: np.where(step_mask, t, np.nan) for name, t in out.items()}

    # ------------------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Adapter (or full model), value heads, optimizer and update counter."""
        if self.config.finetune == "lora":
            from peft import get_peft_model_state_dict

            weights = {
                k: v.detach().clone() for k, v in get_peft_model_state_dict(self.model).items()
            }
        else:
            weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return {
            "finetune": self.config.finetune,
            "model": weights,
            "value_heads": None if self.value_heads is None else self.value_heads.state_dict(),
            # deep copy: the optimizer's own dict shares its live moment tensors
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "updates": self.updates,
            "config": asdict(self.config),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (the model must have been built the same way)."""
        if state.get("finetune") != self.config.finetune:
            raise ValueError(
                f"checkpoint holds a {state.get('finetune')!r} model, this learner is "
                f"{self.config.finetune!r}"
            )
        if self.config.finetune == "lora":
            from peft import set_peft_model_state_dict

            result = set_peft_model_state_dict(self.model, state["model"])
            missing = [k for k in getattr(result, "unexpected_keys", []) if "lora" in k]
            if missing:
                raise ValueError(f"checkpoint adapter keys do not match the model: {missing[:3]}")
        else:
            self.model.load_state_dict(state["model"])
        saved = state.get("value_heads")
        saved_names = sorted({k.split(".")[1] for k in saved}) if saved else []
        if saved_names != sorted(self.value_heads.names if self.value_heads else []):
            raise ValueError(
                f"checkpoint has value heads {saved_names}, this learner serves "
                f"{sorted(self.head_positions)} (the credit module's value_heads)"
            )
        if saved:
            self.value_heads.load_state_dict(saved)
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])
        self._prepared = None

    def save_merged(self, directory: str | os.PathLike[str]) -> str:
        """Write the current policy as a plain HF folder (LoRA merged, safetensors); return it.

        Files are written to a temporary sibling and moved in, so a reader (a vLLM reload) never
        sees a half-written weights file.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        if self.config.finetune == "lora":
            merged = copy.deepcopy(self.model).merge_and_unload()
        else:
            merged = self.model
        try:
            merged.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            for f in tmp.iterdir():
                os.replace(f, out / f.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return str(out)
