"""Perturbations of the inner loop, one small object each, chosen by name (`--noise`).

A perturbation owns its meta-parameters phi (meta-learned, never adapted in the inner loop,
Algorithm 1 line 11) and perturbs the network at two places: the pre-activation of each conv block
and the logits. `eps` draws standard-normal noise of a shape; it is None on deterministic passes
(the query set, Eq. 4, and MAML everywhere).
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from layers import conv2d, dense, variable

Eps = Callable[[tf.Tensor], tf.Tensor] | None
Params = dict[str, tf.Tensor]


class Perturbation:
    """No perturbation: base MAML."""

    stochastic = False  # whether inner steps average over Monte-Carlo samples (Eq. 3)

    def init_phi(self, convs: list[tuple[int, int]], feat_dim: int, dtype: tf.DType) -> Params:
        """Create phi for conv blocks with (in, out) channels `convs` and `feat_dim` features."""
        return {}

    def conv(self, phi: Params, l: int, h: tf.Tensor, f: tf.Tensor, eps: Eps) -> tf.Tensor:
        """Perturb the pre-activation `f` of conv block `l`, whose input is `h`."""
        return f

    def dense(self, phi: Params, h: tf.Tensor, logits: tf.Tensor, eps: Eps) -> tf.Tensor:
        """Perturb the logits computed from the last-layer features `h`."""
        return logits


class MetaDropout(Perturbation):
    """Multiplicative input-dependent noise (Eq. 5-6) and additive noise on the logits."""

    stochastic = True

    def init_phi(self, convs: list[tuple[int, int]], feat_dim: int, dtype: tf.DType) -> Params:
        phi = {}
        for l, (cin, cout) in enumerate(convs):
            phi[f"conv{l}_w"] = variable(f"conv{l}_w", [3, 3, cin, cout], "conv", dtype)
            phi[f"conv{l}_b"] = variable(f"conv{l}_b", [cout], "zeros", dtype)
        # One output column shared by all classes: a per-example std of the logits' noise.
        phi["dense_w"] = variable("dense_w", [feat_dim, 1], "dense", dtype)
        phi["dense_b"] = variable("dense_b", [1], "zeros", dtype)
        return phi

    def conv(self, phi: Params, l: int, h: tf.Tensor, f: tf.Tensor, eps: Eps) -> tf.Tensor:
        mu = conv2d(h, phi[f"conv{l}_w"], phi[f"conv{l}_b"])  # mu^(l)(h^(l-1)), Eq. 5
        a = mu if eps is None else mu + eps(tf.shape(mu))  # a ~ N(mu, I); a = mu for Eq. 4
        return f * tf.nn.softplus(a)  # f^(l) o z^(l), Eq. 6

    def dense(self, phi: Params, h: tf.Tensor, logits: tf.Tensor, eps: Eps) -> tf.Tensor:
        if eps is None:
            return logits
        sigma = tf.nn.softplus(dense(h, phi["dense_w"], phi["dense_b"]))
        return logits + sigma * eps(tf.shape(logits))


PERTURBATIONS: dict[str, type[Perturbation]] = {
    "none": Perturbation,
    "metadrop": MetaDropout,
}


def get(name: str) -> Perturbation:
    if name not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {name!r}; choose one of {sorted(PERTURBATIONS)}")
    return PERTURBATIONS[name]()
