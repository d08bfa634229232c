"""Our graph against the original Meta-Dropout code's float64 outputs (../shared/golden/metadrop-original).

The same weights, episodes and noise draws as the authors' code was run on (its README defines every
array): MAML, Meta-Dropout's training objective with given draws and with zero draws, and meta-test
with 3 MC samples per inner step. Every output is held to 1e-9 relative: query loss, accuracies,
logits, adapted weights and the meta-gradients of theta, phi and the batch-norm offsets; and Adam's
first step on the clipped meta-gradient (Section 4), which the clip's value changes.
"""

import json
import os
from collections.abc import Iterator

import numpy as np
import pytest
import tensorflow as tf

import noise
from model import Arch, Model

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "golden", "metadrop-original")
CASES = ("maml_f64", "mdrop_f64", "mdrop_eps0_f64", "mdrop_test3_f64")
pytestmark = pytest.mark.skipif(
    not all(os.path.isfile(os.path.join(GOLDEN, f"{c}.npz")) for c in ("inputs", *CASES)),
    reason=f"the original code's golden outputs are not in {os.path.normpath(GOLDEN)}",
)
ARCH = Arch(hw=28, channels=1, filters=64, way=5, dtype=tf.float64)
RTOL = 1e-9


def is_conv_bias(k: str) -> bool:
    """Whether the golden name k is a conv bias (followed by batch norm: zero meta-gradient)."""
    return "conv" in k and k.endswith("_b")


META_LR, CLIP = 1.0, 3.0  # Adam's first step: -lr * g / (|g| + eps / sqrt(1 - beta2)), g clipped


class GivenDraw(noise.Draw):
    """The noise of one inner step of one task: the golden eps of (task, step, sample m, site l),
    samples stacked on axis 0 as the graph tiles them; each site's shape is checked."""

    def __init__(self, case: dict, task: int, step: int, groups: int) -> None:
        super().__init__(None, iter(()), groups, tf.float64)
        self.case, self.task, self.step = case, task, step
        self.site = iter(range(ARCH.n_blocks + 1))  # conv blocks 0..3, then the logits

    def normal(self, shape: tf.Tensor) -> tf.Tensor:
        l = next(self.site)
        side = ARCH.hw >> l
        one = [5, side, side, 64] if l < ARCH.n_blocks else [5, 5]
        eps = [self.eps(m, l, one) for m in range(self.groups)]
        out = np.concatenate(eps)
        assert list(tf.get_static_value(shape)) == list(out.shape), (shape, out.shape)
        return tf.constant(out)

    def eps(self, m: int, l: int, shape: list[int]) -> np.ndarray:
        if self.case["eps"] == "zero":
            return np.zeros(shape)
        key = [self.case["seed"], self.task, self.step, m, l]
        return np.random.default_rng(key).standard_normal(shape)


class GoldenModel(Model):
    """Model whose noise is the golden draws, one Draw per inner step in the order the graph is
    built (task by task, step by step), and whose query passes are recorded (adapted weights, logits)."""

    def __init__(self, case: dict) -> None:
        super().__init__(ARCH, noise.get(case["noise"]), case["inner_lr"], case["n_steps"])
        self.case = case
        self.passes: Iterator[int] = iter(range(10**6))
        self.queries: list[tuple[dict, tf.Tensor]] = []

    def draw(self, n_samp: int, stochastic: bool) -> noise.Draw | None:
        if super().draw(n_samp, stochastic) is None:
            return None
        task, step = divmod(next(self.passes), self.n_steps)
        return GivenDraw(self.case, task, step, n_samp)

    def query(self, theta, xte, yte):
        self.queries.append((theta, self.forward(xte, theta)[1]))
        return super().query(theta, xte, yte)


def load(name: str) -> dict[str, np.ndarray]:
    with np.load(os.path.join(GOLDEN, f"{name}.npz")) as f:
        return dict(f)


def variables(model: Model) -> dict[str, tf.Variable]:
    """Our variables under the golden names: theta.<k>, phi.<k>, bn.<l>."""
    named = {f"theta.{k}": v for k, v in model.theta.items()}
    named.update({f"phi.{k}": v for k, v in model.phi.items()})
    named.update({f"bn.{l}": v for l, v in enumerate(model.bn)})
    return named


def run(name: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Our outputs, under the golden names, for the case `name`."""
    with open(os.path.join(GOLDEN, f"{name}.json")) as f:
        case = json.load(f)
    assert (case["way"], case["dtype"], case["shot"]) == (ARCH.way, "float64", 1)
    inputs = load("inputs")
    with tf.Graph().as_default():
        model = GoldenModel(case)
        ph = model.placeholders(case["metabatch"], case["shot"], case["query"], "golden")
        n_samp = case["n_mc"]
        loss, acc = model.meta_batch(ph, n_samp, sample=case["training"])
        named = variables(model)
        out = {"loss": loss, "acc": acc}
        for t, (theta, logits) in enumerate(model.queries):
            out[f"logits.{t}"] = logits
            out.update({f"adapted.{t}.theta.{k}": v for k, v in theta.items()})
        if case["training"]:
            out.update({f"grad.{k}": g for k, g in zip(named, tf.gradients(loss, list(named.values())))})
            step = tf.compat.v1.train.get_or_create_global_step()
            train = model.train_op(loss, META_LR, step)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            for k, v in named.items():
                v.load(inputs[k], sess)
            feed = {ph[k]: inputs[k] for k in ph}
            values = sess.run(out, feed)
            if case["training"]:
                sess.run(train, feed)
                values.update({f"step.{k}": v - inputs[k] for k, v in sess.run(named).items()})
    return case, values


@pytest.mark.parametrize("name", CASES)
def test_our_graph_reproduces_the_original_code(name):
    case, ours = run(name)
    golden = load(name)
    expected = {k: v for k, v in golden.items() if k not in ("trained", "noise_used")}
    assert set(expected) <= set(ours), set(expected) - set(ours)
    for k, v in expected.items():
        # relative to the array's scale; conv biases precede batch norm: their meta-gradients are
        # rounding noise (< 1e-13)
        atol = 1e-12 if k.startswith("grad.") and is_conv_bias(k) else RTOL * np.abs(v).max()
        np.testing.assert_allclose(ours[k], v, rtol=RTOL, atol=atol, err_msg=f"{name}: {k}")
    if not case["training"]:
        return
    # Adam's first step on each meta-gradient element clipped to [-3, 3]: TensorFlow's defaults
    # beta2 = 0.999 and epsilon = 1e-8, both held in float32 by tf.compat.v1.train.AdamOptimizer
    eps_hat = np.float32(1e-8).item() / np.sqrt(1 - np.float32(0.999).item())
    for k in (k for k in expected if k.startswith("grad.") and not is_conv_bias(k)):
        g = np.clip(ours[k], -CLIP, CLIP)  # our meta-gradient, equal to the golden one (above)
        np.testing.assert_allclose(
            ours[f"step.{k[5:]}"], -META_LR * g / (np.abs(g) + eps_hat), rtol=RTOL, atol=1e-12, err_msg=k
        )
