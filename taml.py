"""Bayesian TAML (Lee et al., "Learning to Balance", ICLR 2020): the balancing variables of the inner loop.

A `Learner` holds the switches of Bayesian TAML's three balancing variables (`--omega_on`,
`--gamma_on`, `--z_on`; alpha, Meta-SGD's step sizes, stays `Model(metasgd=True)`) and, when one is
on, the weights psi of the inference network q(phi~ | D) over a task's support set D
(specs/bayesian-taml.md, section 1.3). For each task model.py asks it for a `Posterior` and takes
from it a `Balance`: one reparameterised draw (meta-training, MC prediction) or the posterior means
(validation, `--n_mc_samples 0`). The Balance gives the inner loop its initial point (z, E2), its
loss (omega, E3-E4) and each step's scale (gamma, E5), and the KL term of the meta-objective (E7).
With every switch off the Balance is neutral and the graph is MAML's (or Meta-SGD's) exactly.

Decisions on the quirks of the original code (spec section 6):
- Q1 head: `Learner.zero_head` reproduces the original's head (constant zero at the start of every
  task, only the inner loop gives it values; Meta-SGD's head step is one column [F, 1] and one
  scalar shared by all classes), which makes the learner symmetric under class relabelling. The
  original trains MAML and Meta-SGD with the same head, so it is a switch of the Bayesian TAML protocol,
  not of Bayesian TAML; off (metadrop's meta-learned head) by default, so that all switches off is
  metadrop's MAML graph.
- Q3/Q14 padding: padded support rows (mask 0) change no task's result: batch-norm moments of the
  support passes are those of the real rows (layers.masked_batch_norm), N in E3 and in E8's
  KL / (N + M) is the task's own number of real support rows (the paper's N), and the inference
  network pools real rows only. `Learner.original_padding` reproduces the original instead: every
  task padded with zero rows to the largest support of its meta-batch, and those padding rows in the
  base network's support moments and in both N (the inference network still masks them), with which
  a task's result depends on the other tasks of its meta-batch (`Learner.base_mask`).
- Q5/Q6: batch norm (batch statistics, no scale) follows every conv, so the bias modulator z~_b
  cancels exactly in every prediction (it acts only through its KL term) and conv biases get zero
  inner gradients; 1 + z~_w acts through the inner-loop dynamics and its sign. Kept as the original,
  tested in tests/test_taml.py (T8).
- Q12: the inference network reads the base learner's input size (`Arch.hw`, `Arch.channels`);
  which image size a dataset has is the data's business, not the model's.
- Q13: omega's head always has its hidden layer of 64 units; the original's multi-dataset runs skip
  it (the layer is still created, unused), which looks accidental and is not reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from layers import conv2d, dense, max_pool, variable
from lazy import tf
from noise import Draw, Params

ENC_FILTERS = 10  # NN1's conv channels (spec 1.3)
ENC_FEAT = 64  # NN1's output per example; also the heads' hidden units
ENC_CLASS = 32  # NN2's output per class
ENC_INTERACT = 4  # the 3 pooled statistics of each feature -> 4 ("interact1/2")
VARIABLES = ("omega", "gamma", "z")  # the balancing variables phi~, in this order


def gaussian_kl(mu: tf.Tensor, rho: tf.Tensor) -> tf.Tensor:
    """KL[N(mu, sigma^2) || N(0, 1)] summed over the entries, sigma = softplus(rho) (E7, closed form):
    sum of -log sigma + (sigma^2 + mu^2) / 2 - 1/2."""
    sigma = tf.nn.softplus(rho)
    return tf.reduce_sum(-tf.math.log(sigma) + 0.5 * (tf.square(sigma) + tf.square(mu)) - 0.5)


def stat_pool(h: tf.Tensor, y: tf.Tensor, max_shot: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-class statistics pooling (spec 1.3 step 2): for h [N, F] and one-hot labels y [N, C]
    (padding rows all zero, so they pool nowhere), the table [C, F, 3] of each class's element-wise
    mean, population variance and normalised count (n_c - 1) / (max_shot - 1) copied over F, and the
    normalised counts [C]. A class without rows would divide by 1 instead of 0 (all zeros)."""
    n = tf.reduce_sum(y, axis=0)  # [C]
    n_safe = tf.maximum(n, 1.0)[:, None]
    mean = tf.matmul(y, h, transpose_a=True) / n_safe  # [C, F]
    dev = tf.square(h[None, :, :] - mean[:, None, :])  # [C, N, F]
    var = tf.reduce_sum(tf.transpose(y)[:, :, None] * dev, axis=1) / n_safe
    count = (n - 1.0) / max(max_shot - 1, 1)
    table = tf.stack([mean, var, tf.broadcast_to(count[:, None], tf.shape(mean))], axis=-1)
    return table, count


def set_pool(u: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
    """Statistics pooling over the C classes (spec 1.3 step 5): for u [C, F] and normalised class
    counts [C], the table [F, 3] of the mean over classes, the population variance over classes and
    the mean normalised count copied over F."""
    mean = tf.reduce_mean(u, axis=0)
    var = tf.reduce_mean(tf.square(u - mean), axis=0)
    return tf.stack([mean, var, tf.broadcast_to(tf.reduce_mean(count), tf.shape(mean))], axis=-1)


@dataclass
class Balance:
    """The balancing variables of one task: one posterior draw, or the posterior means (spec 1.4).

    omega [C] (softmax over classes of omega~), gamma [n_blocks + 1] (exp of gamma~; conv1..convL,
    then the head), z [2 * n_blocks * filters] (z~: the weight modulators of conv1..convL, then the
    bias modulators); None where the variable is off. kl: the task's KL[q || p] of the enabled
    variables (E7), 0.0 without any.
    """

    omega: tf.Tensor | None = None
    gamma: tf.Tensor | None = None
    z: tf.Tensor | None = None
    kl: tf.Tensor | float = 0.0

    def initial(self, theta: Params, n_blocks: int) -> Params:
        """The inner loop's starting point (E2): W_l (x) (1 + z~_w,l) per output channel and
        b_l + z~_b,l for every conv block l; the head and anything else unchanged."""
        if self.z is None:
            return theta
        zw, zb = tf.split(self.z, 2)
        zw, zb = tf.reshape(zw, [n_blocks, -1]), tf.reshape(zb, [n_blocks, -1])
        theta = dict(theta)
        for l in range(n_blocks):
            theta[f"conv{l}_w"] = theta[f"conv{l}_w"] * (1.0 + zw[l])
            theta[f"conv{l}_b"] = theta[f"conv{l}_b"] + zb[l]
        return theta

    def scale(self, key: str) -> tf.Tensor | None:
        """gamma of the layer of weight `key` (E5): conv{l}_* -> gamma[l], dense_* -> gamma[-1];
        None (no scaling) without gamma and for other weights (a perturbation's adapted phi)."""
        if self.gamma is None:
            return None
        if key.startswith("dense_"):
            return self.gamma[-1]
        if key.startswith("conv"):
            return self.gamma[int(key[4 : key.index("_")])]
        return None

    def inner_loss(self, ce: tf.Tensor, y: tf.Tensor, mask: tf.Tensor | None, n_samp: int) -> tf.Tensor:
        """The inner objective (E3-E4) from per-row cross-entropies ce [n_samp*N] of labels y [n_samp*N, C].

        Without omega: the sum over the rows of mask [N] (1 = in; None: every row) divided by their
        number, over the n_samp samples. With omega: sum_c omega_c L_c, L_c = (C / N) * sum of the
        class-c rows' ce, N the rows of the mask (the task's real rows, quirk Q3 decided; the
        original's padding with Learner.original_padding). Equal for uniform omega. As E3's class sums,
        a row weighs its label mass: a padding row (zero labels) none, whose ce is 0 but whose
        gradient from softmax_cross_entropy_with_logits is not (softmax - labels assumes one-hot).
        """
        if self.omega is None and mask is None:
            return tf.reduce_mean(ce)
        w = tf.ones_like(ce) if mask is None else tf.tile(tf.cast(mask, ce.dtype), [n_samp])
        if self.omega is None:
            w *= tf.reduce_sum(y, axis=-1)
        else:
            w *= y.shape[-1] * tf.linalg.matvec(y, self.omega)
        return tf.reduce_sum(w * ce) / (n_samp * real_rows(ce, mask))


def real_rows(like: tf.Tensor, mask: tf.Tensor | None) -> tf.Tensor | float:
    """The number of real rows of a support set: sum of the mask, or the rows of `like` [N, ...]."""
    if mask is None:
        return float(like.shape[0])
    return tf.reduce_sum(tf.cast(mask, like.dtype))


@dataclass
class Posterior:
    """q(phi~ | D) of one task: mu and rho (sigma = softplus(rho)) of each enabled variable."""

    mu: dict[str, tf.Tensor] = field(default_factory=dict)
    rho: dict[str, tf.Tensor] = field(default_factory=dict)

    def kl(self) -> tf.Tensor | float:
        """KL[q || N(0, I)] summed over the enabled variables only (E7); 0.0 without any."""
        terms = [gaussian_kl(self.mu[k], self.rho[k]) for k in self.mu]
        return tf.add_n(terms) if terms else 0.0

    def balance(self, phi: dict[str, tf.Tensor]) -> Balance:
        """The Balance of values phi~ (omega -> softmax, gamma -> exp, z as it is; spec 1.4)."""
        transform = {"omega": tf.nn.softmax, "gamma": tf.exp, "z": tf.identity}
        return Balance(**{k: transform[k](v) for k, v in phi.items()}, kl=self.kl())

    def mean(self) -> Balance:
        """The posterior means E_q[phi~] plugged in (validation; E10's "naive" prediction)."""
        return self.balance(self.mu)

    def at(self, eps: dict[str, tf.Tensor]) -> Balance:
        """The Balance of phi~ = mu + sigma * eps, eps of each variable's shape (reparameterisation)."""
        return self.balance({k: mu + tf.nn.softplus(self.rho[k]) * eps[k] for k, mu in self.mu.items()})

    def noise(self, draw: Draw, n: int) -> dict[str, tf.Tensor]:
        """n draws of eps ~ N(0, I) for each variable, stacked on axis 0: [n, ...]."""
        return {k: draw.normal(tf.concat([[n], tf.shape(mu)], 0)) for k, mu in self.mu.items()}

    def sample(self, draw: Draw) -> Balance:
        """One reparameterised draw phi~ = mu + sigma * eps, eps ~ N(0, I) (spec 1.6)."""
        return self.at({k: v[0] for k, v in self.noise(draw, 1).items()})


@dataclass(frozen=True)
class Learner:
    """The balancing switches of Bayesian TAML; all off: MAML (Meta-SGD with Model(metasgd=True)).

    max_shot: the largest shot of the any-shot episodes, the inference network's count normaliser
    (n_c - 1) / (max_shot - 1). zero_head: the original's per-task zero head (quirk Q1).
    original_padding: the original's padding enters the base network (Q3/Q14; see base_mask).
    """

    omega: bool = False
    gamma: bool = False
    z: bool = False
    max_shot: int = 50
    zero_head: bool = False
    original_padding: bool = False

    def __post_init__(self) -> None:
        if self.max_shot < 1:
            raise ValueError(f"max_shot must be >= 1, not {self.max_shot}")

    @property
    def enabled(self) -> list[str]:
        """The names of the balancing variables that are on, in VARIABLES order."""
        return [k for k in VARIABLES if getattr(self, k)]

    def base_mask(self, mtr: tf.Tensor, t: int) -> tf.Tensor:
        """The support rows of task t that the base network sees (inner loop, its batch-norm moments,
        N of E3 and E8), as a mask [N] over its padded rows, from the real-row masks mtr [T, N] of the
        meta-batch: the task's real rows (Q3 decided); with original_padding, the original's padding
        (spec 2.2, Q3/Q14): each task zero-padded to the largest support of its meta-batch, i.e. its
        real rows and the first n_max - n_t of its padding rows. This reproduces the original only
        where padding rows are zero images with zero labels, as data/episodes.py makes them."""
        mask = mtr[t]
        if not self.original_padding:
            return mask
        n = tf.reduce_sum(mtr, axis=1)
        pad = 1.0 - mask
        return mask + pad * tf.cast(tf.cumsum(pad) <= tf.reduce_max(n) - n[t], mask.dtype)

    def init_psi(self, hw: int, channels: int, n_blocks: int, filters: int, dtype: tf.DType) -> Params:
        """The inference network's weights (spec 1.3); empty when every switch is off. Heads only for
        the enabled variables: omega one scalar per class, gamma n_blocks + 1, z 2 * n_blocks * filters."""
        if not self.enabled:
            return {}
        side = hw // 2 // 2
        shapes = {
            "nn1_conv0": [3, 3, channels, ENC_FILTERS],
            "nn1_conv1": [3, 3, ENC_FILTERS, ENC_FILTERS],
            "nn1_dense": [side * side * ENC_FILTERS, ENC_FEAT],
            "interact1": [3, ENC_INTERACT],
            "nn2_dense0": [ENC_FEAT * ENC_INTERACT, 128],
            "nn2_dense1": [128, ENC_CLASS],
            "interact2": [3, ENC_INTERACT],
        }
        reads = {
            "omega": ENC_FEAT * ENC_INTERACT,
            "gamma": ENC_CLASS * ENC_INTERACT,
            "z": ENC_CLASS * ENC_INTERACT,
        }
        outs = {"omega": 1, "gamma": n_blocks + 1, "z": 2 * n_blocks * filters}
        for k in self.enabled:
            shapes[f"{k}_hidden"] = [reads[k], ENC_FEAT]
            shapes[f"{k}_mu"] = [ENC_FEAT, outs[k]]
            shapes[f"{k}_rho"] = [ENC_FEAT, outs[k]]
        psi = {}
        for k, shape in shapes.items():
            psi[f"{k}_w"] = variable(f"{k}_w", shape, "conv" if "conv" in k else "dense", dtype)
            psi[f"{k}_b"] = variable(f"{k}_b", shape[-1:], "zeros", dtype)
        return psi

    def posterior(
        self, psi: Params, x: tf.Tensor, y: tf.Tensor, hw: int, channels: int, mask: tf.Tensor | None = None
    ) -> Posterior:
        """q(phi~ | D) for a support set x [N, hw*hw*channels], one-hot y [N, C] (spec 1.3), rows with
        mask [N] = 0 left out; an empty Posterior when every switch is off."""
        if not self.enabled:
            return Posterior()
        if mask is not None:
            y = y * tf.cast(mask, y.dtype)[:, None]
        h = tf.reshape(x, [-1, hw, hw, channels])
        for l in range(2):
            h = max_pool(tf.nn.relu(conv2d(h, psi[f"nn1_conv{l}_w"], psi[f"nn1_conv{l}_b"])))
        h = dense(tf.reshape(h, [tf.shape(h)[0], -1]), psi["nn1_dense_w"], psi["nn1_dense_b"])  # [N, 64]
        table, count = stat_pool(h, y, self.max_shot)  # [C, 64, 3]
        s = tf.nn.relu(interact(table, psi, "interact1"))  # s_c [C, 256]
        u = dense(
            tf.nn.relu(dense(s, psi["nn2_dense0_w"], psi["nn2_dense0_b"])),
            psi["nn2_dense1_w"],
            psi["nn2_dense1_b"],
        )
        v = tf.nn.relu(interact(set_pool(u, count)[None], psi, "interact2"))[0]  # [128]
        reads = {"omega": s, "gamma": v[None], "z": v[None]}
        post = Posterior()
        for k in self.enabled:
            hidden = tf.nn.relu(dense(reads[k], psi[f"{k}_hidden_w"], psi[f"{k}_hidden_b"]))
            # omega: [C, 1] -> [C]; gamma, z: [1, L] -> [L]
            post.mu[k] = tf.reshape(dense(hidden, psi[f"{k}_mu_w"], psi[f"{k}_mu_b"]), [-1])
            post.rho[k] = tf.reshape(dense(hidden, psi[f"{k}_rho_w"], psi[f"{k}_rho_b"]), [-1])
        return post


def interact(table: tf.Tensor, psi: Params, name: str) -> tf.Tensor:
    """A linear map 3 -> 4 applied to every row of the pooled tables [B, F, 3], flattened: [B, 4F]."""
    out = tf.einsum("bfs,st->bft", table, psi[f"{name}_w"]) + psi[f"{name}_b"]
    return tf.reshape(out, [tf.shape(table)[0], -1])


def get(**switches: bool | int) -> Learner:
    """The learner of the Bayesian TAML switches: omega, gamma, z (--omega_on, --gamma_on, --z_on),
    max_shot (--max_shot), zero_head and original_padding (quirks Q1, Q3/Q14); see Learner."""
    return Learner(**switches)
