"""The benchmark's models compute what model.py computes, on the same weights and noise: the PyTorch
reference (bench/torch_ref.py; skipped without PyTorch)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tensorflow as tf
from tiny import ARCH, QUERY, SHOT, episodes, randomize

import model as model_module
import noise
from model import Model

try:
    import torch

    from bench import torch_ref
    from bench.torch_ref import TorchMetaDrop, as_torch, from_tf
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(
    torch is None, reason="PyTorch is a benchmark-only dependency: pip install -r bench/requirements.txt"
)

SEED = np.array([5, 6])
INNER_LR, N_STEPS, META_LR = 0.5, 2, 0.01
SIDE = ARCH.hw // 2**ARCH.n_blocks
CLIP = 0.05
ADAM_EPS = 1e-30
CONFIG = tf.compat.v1.ConfigProto()
CONFIG.graph_options.rewrite_options.disable_meta_optimizer = True  # grappler: ~20 s here, no use


class Recording(Model):
    """Keeps every noise tensor it draws, in the order the graph is built."""

    def __init__(self, *args, **kw) -> None:
        self.draws: list[tf.Tensor] = []
        super().__init__(*args, **kw)

    def _eps(self, shape):
        e = super()._eps(shape)
        self.draws.append(e)
        return e


def replay(draws: list[np.ndarray]):
    """eps for the torch model: TensorFlow's draws in order, NHWC -> NCHW."""
    it = iter(draws)

    def eps(shape):
        e = next(it)
        e = e.transpose(0, 3, 1, 2) if e.ndim == 4 else e
        assert e.shape == tuple(shape)
        return torch.from_numpy(np.ascontiguousarray(e))

    return eps


def torch_twin(model: Model, sess, noise_name: str) -> TorchMetaDrop:
    ref = TorchMetaDrop(
        ARCH.hw,
        ARCH.channels,
        ARCH.filters,
        ARCH.way,
        noise=noise_name == "metadrop",
        inner_lr=INNER_LR,
        n_steps=N_STEPS,
        meta_lr=META_LR,
        adam_eps=ADAM_EPS,
        n_blocks=ARCH.n_blocks,
        dtype=torch.float64,
    )
    ref.load_tf(from_tf(*sess.run([model.theta, model.bn, model.phi]), side=SIDE))
    return ref


def tf_named(model: Model, values: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Values in model.meta_params order, in the torch layout under from_tf's keys."""
    n, m = len(model.theta), len(model.bn)
    theta = dict(zip(model.theta, values[:n]))
    phi = dict(zip(model.phi, values[n + m :]))
    return from_tf(theta, values[n : n + m], phi, side=SIDE)


def torch_named(ref: TorchMetaDrop, grads: bool) -> dict[str, np.ndarray]:
    pairs = [(f"theta/{k}", p) for k, p in ref.theta.items()] + [(f"phi/{k}", p) for k, p in ref.phi.items()]
    pairs += [(f"bn/{l}", p) for l, p in enumerate(ref.bn)]
    return {k: (p.grad if grads else p).detach().numpy() for k, p in pairs}


@needs_torch
@pytest.mark.parametrize("noise_name", ["none", "metadrop"])
def test_meta_gradients_and_adam_steps_match(noise_name, monkeypatch):
    # A clip small enough to bind on this tiny model, so that the clipping is compared too.
    monkeypatch.setattr(model_module, "CLIP", CLIP)
    monkeypatch.setattr(torch_ref, "CLIP", CLIP)
    # Adam's epsilon sits at different places in the two libraries; make it negligible in both.
    adam = functools.partial(tf.compat.v1.train.AdamOptimizer, epsilon=ADAM_EPS)
    monkeypatch.setattr(tf.compat.v1.train, "AdamOptimizer", adam)
    batch = episodes(2)
    with tf.Graph().as_default():
        model = Recording(ARCH, noise.get(noise_name), INNER_LR, N_STEPS)
        ph = model.placeholders(2, SHOT, QUERY, "t")
        loss, acc = model.meta_batch(ph, 1)
        grads = tf.gradients(loss, model.meta_params)
        train = model.train_op(loss, META_LR, tf.compat.v1.train.get_or_create_global_step())
        feed = {ph[k]: v for k, v in batch.items()}
        feed[model.noise_seed] = SEED
        with tf.compat.v1.Session(config=CONFIG) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            randomize(sess, model.meta_params, scale=0.5)
            ref = torch_twin(model, sess, noise_name)
            l_tf, a_tf, g_tf, draws = sess.run([loss, acc, grads, model.draws], feed)
            for _ in range(2):
                sess.run(train, feed)
            after = tf_named(model, sess.run(model.meta_params))
    assert len(draws) == (2 * N_STEPS * (ARCH.n_blocks + 1) if noise_name == "metadrop" else 0)
    tb = as_torch(batch)
    l_pt, a_pt = ref.meta_gradients(tb, replay(draws))
    np.testing.assert_allclose(l_pt, l_tf, rtol=1e-10)
    np.testing.assert_allclose(a_pt, a_tf)
    g_ref, g_pt = tf_named(model, g_tf), torch_named(ref, grads=True)
    assert sorted(g_pt) == sorted(g_ref)
    for k in g_ref:
        np.testing.assert_allclose(g_pt[k], g_ref[k], rtol=1e-8, atol=1e-12, err_msg=k)
    # Two Adam steps (the first is lr * sign(g), whatever the clip); the clip binds on some elements.
    assert any((np.abs(g) > CLIP).any() for g in g_tf) and any((np.abs(g) < CLIP).any() for g in g_tf)
    for _ in range(2):
        ref.train_step(tb, replay(draws))
    now = torch_named(ref, grads=False)
    # In MAML a conv bias is cancelled by the batch norm that follows: its gradient is rounding noise,
    # which Adam (with a negligible epsilon) turns into steps of random sign. Those are left out.
    dead = {k for k, g in g_ref.items() if (np.abs(g) < 1e-12).any()}
    assert dead == (set() if noise_name == "metadrop" else {f"theta/conv{l}_b" for l in range(ARCH.n_blocks)})
    for k in sorted(set(after) - dead):
        # TensorFlow keeps Adam's beta powers in float32: parameters agree to ~1e-8, the steps are ~1e-2.
        np.testing.assert_allclose(now[k], after[k], rtol=0, atol=1e-6, err_msg=k)


@needs_torch
def test_inner_loop_with_several_noise_samples_matches():
    # n_samp > 1 stacks the samples; batch norm keeps one set of statistics per sample.
    batch = episodes(1)
    with tf.Graph().as_default():
        model = Recording(ARCH, noise.get("metadrop"), INNER_LR, N_STEPS)
        ph = model.placeholders(1, SHOT, QUERY, "t")
        theta_star = model.adapt(ph["xtr"][0], ph["ytr"][0], n_samp=3)
        with tf.compat.v1.Session(config=CONFIG) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            randomize(sess, model.meta_params, scale=0.5)
            ref = torch_twin(model, sess, "metadrop")
            feed = {ph[k]: v for k, v in batch.items()}
            feed[model.noise_seed] = SEED
            t_tf, draws = sess.run([theta_star, model.draws], feed)
    tb = as_torch(batch)
    t_pt = ref.adapt(tb["xtr"][0], tb["ytr"][0], 3, replay(draws), create_graph=False)
    expected = from_tf(t_tf, [], {}, side=SIDE)
    for k, v in t_pt.items():
        np.testing.assert_allclose(v.detach().numpy(), expected[f"theta/{k}"], rtol=1e-9, err_msg=k)
