"""PGD attacks of L1, L2 and Linf norm (Section 4.1, Figures 5-6) and adversarial MAML's inner steps.

PGD (Madry et al. 2017) maximises the query loss of the adapted weights theta*, held fixed, over
images x of each example's set {x : |x - x0|_p <= eps, 0 <= x <= 1}, one ball per example:

- it starts at x0 (no random start), so eps = 0 returns x0 itself: exactly the clean accuracy;
- step size alpha = 2.5 * eps / steps, Madry et al.'s rule: the steps can cross the ball 2.5 times;
- ascent directions of unit norm: sign(g) (Linf), g / |g|_2 (L2), and for L1 the sparse step of
  Tramer & Boneh 2019 (SLIDE): the top 1% of coordinates by |g| among those the box lets move in
  the direction of g's sign, each moved by sign(g) / (number chosen);
- each iterate is projected onto the intersection of its ball and the box [0, 1]: for Linf exactly
  (a box); for L2 onto the ball, then into the box (feasible, and the standard practice, but not
  the exact Euclidean projection onto the intersection); for L1 exactly, see `L1.project`.

The attack is a `tf.while_loop` over the steps; no gradient flows through it (`tf.stop_gradient`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lazy import tf
from noise import Params

if TYPE_CHECKING:
    from model import Model

STEP = 2.5  # alpha = STEP * eps / steps (Madry et al. 2017)
L1_TOP = 0.01  # fraction of coordinates moved by one L1 step (Tramer & Boneh 2019: 99th percentile)


class Norm:
    """A threat model: the unit ascent direction and the projection for one Lp norm."""

    def direction(self, g: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        """Unit-norm ascent direction [N, D] from the loss gradient g at the images x [N, D]."""
        raise NotImplementedError

    def project(self, d: tf.Tensor, x0: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
        """The perturbation d [N, D] (row by row) brought into |d|_p <= eps with 0 <= x0 + d <= 1."""
        raise NotImplementedError

    @staticmethod
    def norm(d: tf.Tensor) -> tf.Tensor:
        """|d|_p of each row of d [N, D]: [N, 1]."""
        raise NotImplementedError


def shrink(d: tf.Tensor, size: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
    """d scaled by min(1, eps / size), size [N, 1] its norm: into the ball, 0 when eps = 0."""
    return d * tf.where(size > eps, eps / tf.where(size > eps, size, 1), 1)


class Linf(Norm):
    def direction(self, g: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        return tf.sign(g)

    def project(self, d: tf.Tensor, x0: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
        return tf.clip_by_value(tf.clip_by_value(d, -eps, eps), -x0, 1 - x0)

    @staticmethod
    def norm(d: tf.Tensor) -> tf.Tensor:
        return tf.reduce_max(tf.abs(d), axis=-1, keepdims=True)


class L2(Norm):
    def direction(self, g: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        return tf.math.divide_no_nan(g, self.norm(g))

    def project(self, d: tf.Tensor, x0: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
        # Clipping into the box (which holds 0) after the ball never leaves the ball.
        return tf.clip_by_value(shrink(d, self.norm(d), eps), -x0, 1 - x0)

    @staticmethod
    def norm(d: tf.Tensor) -> tf.Tensor:
        return tf.norm(d, axis=-1, keepdims=True)


class L1(Norm):
    def direction(self, g: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        movable = ((g > 0) & (x < 1)) | ((g < 0) & (x > 0))
        score = tf.where(movable, tf.abs(g), tf.zeros_like(g))
        k = max(1, round(L1_TOP * g.shape[-1]))
        kth = tf.math.top_k(score, k).values[:, -1:]
        chosen = (score >= kth) & (score > 0)  # ties may add a few coordinates
        step = tf.where(chosen, tf.sign(g), tf.zeros_like(g))
        return tf.math.divide_no_nan(step, tf.reduce_sum(tf.abs(step), axis=-1, keepdims=True))

    def project(self, d: tf.Tensor, x0: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
        """The exact Euclidean projection onto {|p|_1 <= eps, -x0 <= p <= 1 - x0}.

        The Lagrangian 1/2 |p - d|^2 + tau (|p|_1 - eps) separates over coordinates; each is a
        convex 1-D problem on an interval, whose minimiser is the clip of its unconstrained one:
        p_i(tau) = sign(d_i) min(max(|d_i| - tau, 0), b_i), b_i the room in the box in d_i's direction.
        tau = 0 if |p(0)|_1 <= eps; otherwise m(tau) = |p(tau)|_1 = eps, m piecewise linear and
        decreasing, with slope -(number of i with |d_i| - b_i < tau < |d_i|). As in Duchi et al.'s
        (2008) sorting method, the breakpoints |d_i| and max(|d_i| - b_i, 0) are sorted, m is
        summed at each, and tau is interpolated exactly inside the interval where m crosses eps.
        """
        a = tf.abs(d)
        b = tf.where(d >= 0, 1 - x0, x0)
        t = tf.concat([tf.maximum(a - b, 0), a], axis=-1)  # coordinate i is active on (t_i, t_{D+i})
        ones = tf.ones_like(d)
        events = tf.concat([ones, -ones], axis=-1)
        order = tf.argsort(t, axis=-1, stable=True)
        t = tf.gather(t, order, batch_dims=1)
        active = tf.cumsum(tf.gather(events, order, batch_dims=1), axis=-1)  # on (t_j, t_{j+1})
        m0 = tf.reduce_sum(tf.minimum(a, b), axis=-1, keepdims=True)
        drop = tf.cumsum(active[:, :-1] * (t[:, 1:] - t[:, :-1]), axis=-1)
        m = tf.concat([m0, m0 - drop], axis=-1)  # m at each sorted breakpoint
        below = tf.concat([m[:, :-1] <= eps, tf.ones_like(m0, tf.bool)], axis=-1)  # m(t_max) = 0
        k = tf.argmax(tf.cast(below, tf.int32), axis=-1, output_type=tf.int32)[:, None]  # first crossing
        j = tf.maximum(k - 1, 0)
        t_j, m_j = tf.gather(t, j, batch_dims=1), tf.gather(m, j, batch_dims=1)
        slope = tf.maximum(tf.gather(active, j, batch_dims=1), 1)
        tau = tf.where(k > 0, t_j + (m_j - eps) / slope, tf.zeros_like(t_j))
        p = tf.sign(d) * tf.minimum(tf.maximum(a - tau, 0), b)
        return shrink(p, self.norm(p), eps)  # absorbs tau's rounding

    @staticmethod
    def norm(d: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.abs(d), axis=-1, keepdims=True)


NORMS: dict[str, Norm] = {"l1": L1(), "l2": L2(), "linf": Linf()}


def pgd(
    model: Model, theta: Params, x0: tf.Tensor, y: tf.Tensor, eps: tf.Tensor | float, norm: str, steps: int
) -> tf.Tensor:
    """Images [N, D] within eps of x0 [N, D] (in `norm`, per row) and in [0, 1] that raise the
    deterministic loss of labels y under theta (held fixed): `steps` PGD steps from x0."""
    p = NORMS[norm]
    theta = {k: tf.stop_gradient(w) for k, w in theta.items()}
    x0 = tf.stop_gradient(x0)
    eps = tf.cast(eps, x0.dtype)
    alpha = STEP * eps / steps

    def step(i: tf.Tensor, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        loss, _ = model.query(theta, x, y)
        g = tf.gradients(loss, x)[0]
        d = p.project(x + alpha * p.direction(g, x) - x0, x0, eps)
        return i + 1, tf.clip_by_value(x0 + d, 0, 1)  # the clip only absorbs rounding

    _, x = tf.while_loop(lambda i, x: i < steps, step, [tf.constant(0), x0])
    return tf.stop_gradient(x)


class Adversary:
    """Adversarial MAML's inner steps (Section 4.1): each trains on `steps`-step PGD examples of
    the training set within eps (in `norm`) under the current inner iterate theta; the examples are
    constants to the meta-gradient."""

    def __init__(self, model: Model, norm: str, eps: float, steps: int = 10) -> None:
        self.model, self.norm, self.eps, self.steps = model, norm, eps, steps

    def __call__(self, theta: Params, xtr: tf.Tensor, ytr: tf.Tensor) -> tf.Tensor:
        return pgd(self.model, theta, xtr, ytr, self.eps, self.norm, self.steps)


def robust_meta_batch(
    model: Model, ep: dict[str, tf.Tensor], n_samp: int, eps: tf.Tensor, norm: str, steps: int
) -> tuple[list[Params], tf.Tensor, tf.Tensor]:
    """Per task of a meta-batch: theta* (identities, to be fed back so that one inner loop serves
    every eps), clean and adversarial query accuracy [n_tasks]."""
    thetas, clean, adv = [], [], []
    for t in range(ep["xtr"].shape[0]):
        with model.seeded(ep, t):  # task t's noise from its own seed row, if ep has seeds
            theta = {k: tf.identity(w) for k, w in model.adapt(ep["xtr"][t], ep["ytr"][t], n_samp).items()}
        x = pgd(model, theta, ep["xte"][t], ep["yte"][t], eps, norm, steps)
        thetas.append(theta)
        clean.append(model.query(theta, ep["xte"][t], ep["yte"][t])[1])
        adv.append(model.query(theta, x, ep["yte"][t])[1])
    return thetas, tf.stack(clean), tf.stack(adv)
