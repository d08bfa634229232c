"""A tiny float64 model with batch norm and max-pool, for exact gradient checks."""

import numpy as np
import tensorflow as tf

import noise
from model import Arch, Model

ARCH = Arch(hw=8, channels=1, filters=3, way=3, n_blocks=2, dtype=tf.float64)
SHOT, QUERY = 2, 3  # training and test examples per class of `episodes`


def episodes(n_tasks: int, shot: int = SHOT, query: int = QUERY, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    eye = np.eye(ARCH.way)
    return {
        "xtr": rng.random((n_tasks, ARCH.way * shot, ARCH.x_dim)),
        "ytr": np.tile(np.repeat(eye, shot, 0), (n_tasks, 1, 1)),
        "xte": rng.random((n_tasks, ARCH.way * query, ARCH.x_dim)),
        "yte": np.tile(np.repeat(eye, query, 0), (n_tasks, 1, 1)),
    }


def build(noise_name: str = "metadrop", n_steps: int = 2, inner_lr: float = 0.5, **kw) -> Model:
    """A Model in a fresh default graph (call inside `with tf.Graph().as_default()`)."""
    tf.compat.v1.set_random_seed(1)
    model = Model(ARCH, noise.get(noise_name), inner_lr, n_steps, **kw)
    return model


def randomize(sess: tf.compat.v1.Session, params: list[tf.Variable], scale: float = 0.3) -> None:
    """Move every parameter away from its initial value (zeros would hide bias terms)."""
    rng = np.random.default_rng(7)
    for p in params:
        v = sess.run(p)
        p.load(v + scale * rng.standard_normal(v.shape), sess)


def check_directional_fd(
    sess: tf.compat.v1.Session, params: list, grads: list, loss: tf.Tensor, feed: dict, seed: int = 0
) -> None:
    """Each variable's gradient `grads` (values) against a central finite difference of `loss` along
    a random direction (h = 1e-6, float64): |fd - <g, d>| <= 1e-6 max(1, |fd|)."""
    rng = np.random.default_rng(seed)
    h = 1e-6
    for p, gp in zip(params, grads):
        v0 = sess.run(p)
        d = rng.standard_normal(v0.shape)
        p.load(v0 + h * d, sess)
        up = sess.run(loss, feed)
        p.load(v0 - h * d, sess)
        down = sess.run(loss, feed)
        p.load(v0, sess)
        fd = (up - down) / (2 * h)
        analytic = float(np.sum(gp * d))
        assert abs(fd - analytic) <= 1e-6 * max(1.0, abs(fd)), (p.name, fd, analytic)
