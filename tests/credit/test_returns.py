"""The shared primitives: discounted returns (penalty once, through Step), GAE, leave-one-out,
the options base and the one penalty constant."""

import dataclasses

import numpy as np
import pytest

from creditgym import credit
from creditgym.credit.base import NormOptions, summary_diagnostics
from creditgym.credit.returns import (
    DEFAULT_INVALID_PENALTY,
    batch_discounted_returns,
    discounted_returns,
    gae,
    leave_one_out,
    step_rewards,
)
from tests.credit.helpers import group, traj


def test_discounted_returns_apply_the_invalid_penalty_once():
    # r = [0 - 0.1 (invalid), 10] -> Rhat (gamma 0.5) = [-0.1 + 0.5 * 10, 10] = [4.9, 10].
    g = group(traj([("s0", "a", 0), ("s1", "b", 10)], invalid=(0,)), traj([("s0", "c", 0)]))
    np.testing.assert_allclose(step_rewards([g]), [-0.1, 10, 0])
    np.testing.assert_allclose(batch_discounted_returns([g], 0.5), [4.9, 10, 0])
    np.testing.assert_allclose(g.trajectories[0].discounted_returns(0.5), [4.9, 10])
    np.testing.assert_allclose(discounted_returns([1.0, 2.0, 3.0], 1.0), [6, 5, 3])
    assert DEFAULT_INVALID_PENALTY == 0.1 == credit.DEFAULT_INVALID_PENALTY


def test_gae_by_hand():
    # r = [1, 2], V = [0.5, 1], V' = [1, 0], gamma 0.9, lambda 0.5:
    # delta = [1 + 0.9 - 0.5, 2 + 0 - 1] = [1.4, 1]; A = [1.4 + 0.45 * 1, 1] = [1.85, 1].
    a = gae(np.array([1.0, 2.0]), np.array([0.5, 1.0]), np.array([1.0, 0.0]), 0.9, 0.5)
    np.testing.assert_allclose(a, [1.85, 1.0])


def test_leave_one_out_by_hand():
    # Group 0: [10, 0, 2]: 10 - 1 = 9, 0 - 6 = -6, 2 - 5 = -3. Group 1 alone: 0.
    np.testing.assert_allclose(
        leave_one_out(np.array([10.0, 0.0, 2.0, 7.0]), np.array([0, 0, 0, 1])), [9, -6, -3, 0]
    )


def test_one_options_base_checks_mode_and_std_for_every_module():
    for name in ("grpo", "gigpo", "hgpo", "salt", "igpo"):
        cfg = credit.make(name).config
        assert isinstance(cfg, NormOptions), name
        with pytest.raises(ValueError, match=r"mode='bad' is not valid.*mean_norm"):
            credit.make(name, mode="bad")
        with pytest.raises(ValueError, match=r"std='ddof' is not valid.*population"):
            credit.make(name, std="ddof")
    # Each module keeps its documented default std.
    assert credit.make("grpo").config.std == "sample"
    assert credit.make("hgpo").config.std == "population"


def test_every_penalty_default_is_the_one_constant():
    for name in credit.available():
        fields = {f.name: f for f in dataclasses.fields(credit.make(name).config)}
        if "invalid_penalty" in fields:
            assert fields["invalid_penalty"].default == DEFAULT_INVALID_PENALTY, name
    # summary_diagnostics counts tied groups with the same constant when a config has none:
    # returns [10 - 0.1, 9.9] tie only with penalty 0.1.
    g = group(traj([("s0", "a", 10)], invalid=(0,)), traj([("s0", "b", 9.9)]))
    assert summary_diagnostics(np.zeros(2), [g], object())["tied_groups"] == 1.0
