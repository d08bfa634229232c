"""Meta-Dropout and MAML as one static graph (Algorithms 1-2 of the paper).

theta (conv and dense weights) is adapted in the inner loop; the batch-norm offsets are meta-learned
only, and so is the perturbation's phi unless the perturbation declares `adapts_phi` (then the inner
loop adapts it with theta, under PHI-prefixed keys). The inner loop keeps its gradients in the graph, so
`tf.gradients` of the query loss holds the exact second-order terms.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import tensorflow as tf

import taml
from layers import accuracy, batch_norm, cross_entropy, dense, masked_batch_norm, max_pool, variable
from noise import Draw, Params, Perturbation, Site

CLIP = 3.0  # each meta-gradient element is clipped to [-3, 3] (Section 4)
PHI = "phi/"  # prefix of the phi entries among the inner loop's weights (a perturbation's adapts_phi)


@dataclass(frozen=True)
class Arch:
    """The 4-block conv net of Section 4: conv 3x3, batch norm, ReLU, 2x2 max-pool; then dense."""

    hw: int  # input side (square images)
    channels: int  # input channels
    filters: int  # conv width: 64 for Omniglot, 32 for miniImageNet
    way: int
    n_blocks: int = 4
    dtype: tf.DType = tf.float32

    @property
    def convs(self) -> list[tuple[int, int]]:
        return [(self.channels if l == 0 else self.filters, self.filters) for l in range(self.n_blocks)]

    @property
    def feat_dim(self) -> int:
        side = self.hw
        for _ in range(self.n_blocks):
            side //= 2
        if side < 1:
            raise ValueError(f"{self.hw}x{self.hw} inputs vanish after {self.n_blocks} 2x2 max-pools")
        return side * side * self.filters

    @property
    def x_dim(self) -> int:
        return self.hw * self.hw * self.channels


def step_sizes(
    params: Params, inner_lr: float, metasgd: bool, dt: tf.DType, shared_cols: tuple[str, ...] = ()
) -> dict[str, tf.Tensor | float]:
    """Inner step sizes: inner_lr for every entry, or, for Meta-SGD (Li et al. 2017), a meta-learned
    tensor of each entry's shape, initialised to inner_lr; the entries named in `shared_cols` get one
    column (last axis 1) shared by all output columns (Bayesian TAML's zero head, quirk Q1)."""
    if not metasgd:
        return dict.fromkeys(params, inner_lr)
    with tf.compat.v1.variable_scope("lr"):
        init = tf.compat.v1.constant_initializer(inner_lr)
        return {
            k: tf.compat.v1.get_variable(
                k, w.shape[:-1] + [1] if k in shared_cols else w.shape, dt, initializer=init
            )
            for k, w in params.items()
        }


class Model:
    """The meta-learner: MAML, Meta-SGD (`metasgd`), a perturbation of the inner loop (`noise`) and
    Bayesian TAML's balancing variables (`learner`, taml.py).

    Arguments: arch, the base network; noise, a perturbation (noise.get("none") for none); inner_lr,
    the scalar inner step size (Meta-SGD's initial value); n_steps, inner steps K; metasgd, alpha;
    first_order, drop second-order terms; learner, a taml.Learner (default all switches off: the
    graph is MAML's or Meta-SGD's exactly).

    Any-shot meta-batches (Bayesian TAML, spec 2.1): `placeholders(..., max_shot=S)` adds a mask
    `mtr` of the real support rows; padding changes no task's result (taml.py, quirks Q3/Q14).
    `meta_batch(ep, n_samp, sample)` is the training (one posterior draw per task) and validation
    (posterior means) objective, `evaluate(ep, n_samp, n_mc)` the meta-test prediction of E10,
    `balancing(ep)` the posterior means of omega and gamma.
    """

    def __init__(
        self,
        arch: Arch,
        noise: Perturbation,
        inner_lr: float,
        n_steps: int,
        metasgd: bool = False,
        first_order: bool = False,
        learner: taml.Learner | None = None,
    ) -> None:
        self.arch, self.noise, self.n_steps = arch, noise, n_steps
        self.learner = taml.Learner() if learner is None else learner
        self.first_order = first_order  # stop-gradient on inner gradients: drops second-order terms
        dt = arch.dtype
        head = {"dense_w": [arch.feat_dim, arch.way], "dense_b": [arch.way]}
        with tf.compat.v1.variable_scope("theta"):
            self.theta: Params = {}
            for l, (cin, cout) in enumerate(arch.convs):
                self.theta[f"conv{l}_w"] = variable(f"conv{l}_w", [3, 3, cin, cout], "conv", dt)
                self.theta[f"conv{l}_b"] = variable(f"conv{l}_b", [cout], "zeros", dt)
            if not self.learner.zero_head:
                self.theta["dense_w"] = variable("dense_w", head["dense_w"], "dense", dt)
                self.theta["dense_b"] = variable("dense_b", head["dense_b"], "zeros", dt)
        # The original's head (quirk Q1): zero at the start of every task, not meta-learned.
        self.head = {k: tf.zeros(v, dt) for k, v in head.items()} if self.learner.zero_head else {}
        shared = tuple(self.head)  # Meta-SGD's head step: one column shared by the classes (Q1)
        self.lr = step_sizes({**self.theta, **self.head}, inner_lr, metasgd, dt, shared)
        with tf.compat.v1.variable_scope("bn"):
            self.bn = [variable(f"offset{l}", [arch.filters], "zeros", dt) for l in range(arch.n_blocks)]
        with tf.compat.v1.variable_scope("phi"):
            self.phi = noise.init_phi(arch.convs, arch.feat_dim, dt)
        with tf.compat.v1.variable_scope("psi"):  # Bayesian TAML's inference network (spec 1.3)
            self.psi = self.learner.init_psi(arch.hw, arch.channels, arch.n_blocks, arch.filters, dt)
        # The phi entries the inner loop adapts, as it starts them (the perturbation's declared rule).
        self.inner_phi = {PHI + k: v for k, v in self.phi.items()} if noise.adapts_phi else {}
        self.lr.update(step_sizes(self.inner_phi, inner_lr, metasgd, dt))
        # Every noise draw is a stateless function of this seed: feed it to fix or vary the noise. A
        # task of a meta-batch with seeds of its own (placeholders(seeded=True)) draws from its row.
        random_seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)
        self.noise_seed = tf.compat.v1.placeholder_with_default(random_seed, [2], name="noise_seed")
        self._seed = self.noise_seed  # the seed of the draws built now
        self._draws = itertools.count(1)  # its draw sites, each a stream of its own
        # Adversarial MAML (Section 4.1): (theta, xtr, ytr) -> the training images each inner step
        # trains on instead of xtr; None trains on xtr itself.
        self.adversary: Callable[[Params, tf.Tensor, tf.Tensor], tf.Tensor] | None = None

    @property
    def meta_params(self) -> list[tf.Variable]:
        """Everything the outer loop trains (Algorithm 1, lines 10-11; Meta-SGD's step sizes)."""
        lrs = [v for v in self.lr.values() if isinstance(v, tf.Variable)]
        return list(self.theta.values()) + self.bn + list(self.phi.values()) + lrs + list(self.psi.values())

    def draw(self, n_samp: int, stochastic: bool) -> Draw | None:
        """The noise of one pass of n_samp samples; None for a deterministic pass (a = mu, Eq. 4)."""
        if not (stochastic and self.noise.stochastic):
            return None
        return Draw(self._seed, self._draws, n_samp, self.arch.dtype)

    @contextlib.contextmanager
    def seeded(self, ep: dict[str, tf.Tensor], t: int) -> Iterator[None]:
        """The draws built inside are task t's: with ep["seed"] [n_tasks, 2], a function of its row
        alone, counted from 1, so they do not depend on the meta-batch the task is in (nor on the
        graph built before); without, of noise_seed, counted across the graph."""
        if "seed" not in ep:
            yield
            return
        outer = self._seed, self._draws
        with tf.xla.experimental.jit_scope(compile_ops=False):  # outside XLA, as the draws (noise.Draw)
            self._seed, self._draws = ep["seed"][t], itertools.count(1)
        try:
            yield
        finally:
            self._seed, self._draws = outer

    def _phi(self, theta: Params) -> Params:
        """phi, with the entries the inner loop adapts taken from the inner-loop weights `theta`."""
        return {**self.phi, **{k[len(PHI) :]: v for k, v in theta.items() if k.startswith(PHI)}}

    def _blocks(
        self,
        x: tf.Tensor,
        theta: Params,
        n_samp: int,
        draw: Draw | None,
        y: tf.Tensor | None = None,
        mask: tf.Tensor | None = None,
    ) -> tuple[list[tf.Tensor], tf.Tensor | None, list[tf.Tensor]]:
        """Block outputs, the labels y [N, way] as the perturbation leaves them (tiled like x) and
        the regularizers it adds, for x [N, D] and weights theta (with adapted phi entries, if any);
        batch-norm moments over the rows where mask [N] is 1 (None: all rows)."""
        a, noise, phi = self.arch, self.noise, self._phi(theta)
        h = tf.reshape(x, [-1, a.hw, a.hw, a.channels])
        if n_samp > 1:
            h = tf.tile(h, [n_samp, 1, 1, 1])
            y = None if y is None else tf.tile(y, [n_samp, 1])
        out, regs = [], []
        for l in range(a.n_blocks):
            h, y = noise.mix(l, a.n_blocks, h, y, draw)
            f = noise.linear(phi, l, h, theta[f"conv{l}_w"], theta[f"conv{l}_b"], draw)
            f, reg = noise.conv(phi, l, h, f, draw)
            regs.append(reg)
            if mask is None:
                f = batch_norm(f, self.bn[l], groups=n_samp)
            else:
                f = masked_batch_norm(f, self.bn[l], n_samp, mask)
            f = noise.act(phi, l, f, draw, Site(a.filters, a.hw))
            h = max_pool(tf.nn.relu(f))
            out.append(h)
        return out, y, [r for r in regs if r is not None]

    def _forward(
        self,
        x: tf.Tensor,
        theta: Params,
        n_samp: int,
        draw: Draw | None,
        y: tf.Tensor | None = None,
        mask: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None, list[tf.Tensor]]:
        """Features, logits, labels and regularizers of one pass (see _blocks)."""
        blocks, y, regs = self._blocks(x, theta, n_samp, draw, y, mask)
        h = tf.reshape(blocks[-1], [-1, self.arch.feat_dim])
        logits = dense(h, theta["dense_w"], theta["dense_b"])
        logits, reg = self.noise.dense(self._phi(theta), h, logits, draw)
        return h, logits, y, regs + ([] if reg is None else [reg])

    def blocks(
        self, x: tf.Tensor, theta: Params, n_samp: int = 1, stochastic: bool = False
    ) -> list[tf.Tensor]:
        """Each conv block's output h^(l) [n_samp*N, h, w, C] for x [N, D] (Eq. 6, then BN, ReLU, pool)."""
        return self._blocks(x, theta, n_samp, self.draw(n_samp, stochastic))[0]

    def forward(
        self, x: tf.Tensor, theta: Params, n_samp: int = 1, stochastic: bool = False
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Features and logits of x [N, D]; with n_samp > 1, n_samp noisy passes stacked: [n_samp*N, .]."""
        return self._forward(x, theta, n_samp, self.draw(n_samp, stochastic))[:2]

    def initial(self, balance: taml.Balance | None = None) -> Params:
        """The inner loop's starting weights: theta (the zero head, Q1), modulated by the task's z (E2),
        and the phi entries the inner loop adapts."""
        theta = {**self.theta, **self.head}
        if balance is not None:
            theta = balance.initial(theta, self.arch.n_blocks)
        return {**theta, **self.inner_phi}

    def inner_step(
        self,
        theta: Params,
        xtr: tf.Tensor,
        ytr: tf.Tensor,
        n_samp: int,
        lr: dict | None = None,
        mask: tf.Tensor | None = None,
        balance: taml.Balance | None = None,
    ) -> Params:
        """One SGD step on the training loss averaged over n_samp noise samples (Eq. 3), plus the
        perturbation's regularizers (beta * KL). Bayesian TAML (E3-E5): support rows with mask [N] = 0
        left out, class losses weighted by the balance's omega, each layer's step scaled by its gamma."""
        lr = self.lr if lr is None else lr
        balance = taml.Balance() if balance is None else balance
        if not self.noise.stochastic:
            n_samp = 1
        _, logits, y, regs = self._forward(xtr, theta, n_samp, self.draw(n_samp, True), ytr, mask)
        if balance.omega is None and mask is None:
            loss = cross_entropy(logits, y)
        else:
            ce = tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=logits)
            loss = balance.inner_loss(ce, y, mask, n_samp)
        if regs:
            loss += tf.add_n(regs)
        grads = tf.gradients(loss, list(theta.values()))
        if self.first_order:
            grads = [tf.stop_gradient(g) for g in grads]
        new = {}
        for (k, w), g in zip(theta.items(), grads):
            gamma = balance.scale(k)
            new[k] = w - (lr[k] if gamma is None else gamma * lr[k]) * g
        return new

    def adapt(
        self,
        xtr: tf.Tensor,
        ytr: tf.Tensor,
        n_samp: int,
        mask: tf.Tensor | None = None,
        balance: taml.Balance | None = None,
    ) -> Params:
        """theta* after n_steps inner steps (Algorithm 1 lines 4-9, Algorithm 2 lines 4-9); with an
        adversary, each step trains on its examples of xtr (adversarial MAML, Section 4.1). With a
        mask [N] of the real support rows and a taml.Balance, Bayesian TAML's inner loop (E2-E6)."""
        theta = self.initial(balance)
        for _ in range(self.n_steps):
            x = xtr if self.adversary is None else self.adversary(theta, xtr, ytr)
            theta = self.inner_step(theta, x, ytr, n_samp, mask=mask, balance=balance)
        return theta

    def task(
        self,
        xtr: tf.Tensor,
        ytr: tf.Tensor,
        xte: tf.Tensor,
        yte: tf.Tensor,
        n_samp: int,
        mask: tf.Tensor | None = None,
        balance: taml.Balance | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Query loss and accuracy of one task, with deterministic noise a = mu (Eq. 4)."""
        return self.query(self.adapt(xtr, ytr, n_samp, mask, balance), xte, yte)

    def query(self, theta: Params, xte: tf.Tensor, yte: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Loss and accuracy of the query set under adapted weights theta, deterministic (Eq. 4)."""
        _, logits = self.forward(xte, theta)
        return cross_entropy(logits, yte), accuracy(logits, yte)

    def placeholders(
        self,
        n_tasks: int,
        shot: int,
        query: int,
        name: str,
        max_shot: int | None = None,
        seeded: bool = False,
    ) -> dict[str, tf.Tensor]:
        """xtr/ytr/xte/yte for a meta-batch of n_tasks episodes with `shot` training and `query` test
        examples per class; labels are one-hot. Every dimension is known, so gradients of
        same-shape products need no broadcast reductions (bench/RESULTS.md, 'static placeholder shapes').

        Any-shot episodes (max_shot given; `shot` is then unused): xtr [n_tasks, way*max_shot, D] and
        ytr [n_tasks, way*max_shot, way] zero-padded, and mtr [n_tasks, way*max_shot], 1.0 on real
        support rows and 0.0 on padding (any order).

        seeded: also seed [n_tasks, 2] int64, each task's noise seed (see seeded()), so a task's noise
        draws depend on its row only."""
        a, dt = self.arch, self.arch.dtype
        n = {"tr": a.way * (shot if max_shot is None else max_shot), "te": a.way * query}
        dim = {"x": a.x_dim, "y": a.way}
        ph = {
            k: tf.compat.v1.placeholder(dt, [n_tasks, n[k[1:]], dim[k[0]]], name=f"{name}_{k}")
            for k in ("xtr", "ytr", "xte", "yte")
        }
        if max_shot is not None:
            ph["mtr"] = tf.compat.v1.placeholder(dt, [n_tasks, n["tr"]], name=f"{name}_mtr")
        if seeded:
            ph["seed"] = tf.compat.v1.placeholder(tf.int64, [n_tasks, 2], name=f"{name}_seed")
        return ph

    def _posterior(self, ep: dict[str, tf.Tensor], t: int) -> tuple[taml.Posterior, tf.Tensor | None]:
        """Task t's q(phi~ | D) (spec 1.3), which never sees padding, and the base network's mask of
        its support rows (None without padding; taml.Learner.base_mask)."""
        mask = ep["mtr"][t] if "mtr" in ep else None
        a = self.arch
        post = self.learner.posterior(self.psi, ep["xtr"][t], ep["ytr"][t], a.hw, a.channels, mask)
        return post, None if mask is None else self.learner.base_mask(ep["mtr"], t)

    def _draw(self) -> Draw:
        return Draw(self._seed, self._draws, 1, self.arch.dtype)

    def objective(self, ep: dict[str, tf.Tensor], n_samp: int, sample: bool = True) -> dict[str, tf.Tensor]:
        """The meta-batch objective (E8-E9): loss = cent + kl, each the mean over tasks; cent, the query
        cross-entropy; kl, KL[q || p] / (N + M) (N real support rows, M query rows; 0 without balancing
        variables); acc [n_tasks]. sample: one posterior draw per task (meta-training), else the
        posterior means (validation)."""
        cents, kls, accs = [], [], []
        for t in range(ep["xtr"].shape[0]):
            with self.seeded(ep, t):
                post, mask = self._posterior(ep, t)
                balance = post.sample(self._draw()) if sample else post.mean()
                cent, acc = self.task(
                    ep["xtr"][t], ep["ytr"][t], ep["xte"][t], ep["yte"][t], n_samp, mask, balance
                )
            cents.append(cent)
            accs.append(acc)
            if self.learner.enabled:
                n_real = taml.real_rows(ep["xtr"][t], mask)
                kls.append(balance.kl / (n_real + float(ep["xte"].shape[1])))
        cent = tf.reduce_mean(tf.stack(cents))
        kl = tf.reduce_mean(tf.stack(kls)) if kls else tf.zeros([], cent.dtype)
        return {"loss": cent + kl if kls else cent, "cent": cent, "kl": kl, "acc": tf.stack(accs)}

    def meta_batch(
        self, ep: dict[str, tf.Tensor], n_samp: int, sample: bool = True
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Mean query loss over the meta-batch (with Bayesian TAML's KL term, E8-E9) and per-task
        accuracies, all tasks in one graph (see objective)."""
        out = self.objective(ep, n_samp, sample)
        return out["loss"], out["acc"]

    def predict(
        self,
        xtr: tf.Tensor,
        ytr: tf.Tensor,
        xte: tf.Tensor,
        n_samp: int,
        post: taml.Posterior,
        eps: dict[str, tf.Tensor],
        mask: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """Query probabilities [M, way] averaged over S posterior draws phi~ = mu + sigma * eps_s
        (eps: [S, ...] per enabled variable; zeros: the posterior means), each with its own inner loop
        (E10). The draws run one after the other in a tf.map_fn, so the graph holds one inner loop
        whatever S; without balancing variables (eps empty), one plain pass."""

        def probs(balance: taml.Balance) -> tf.Tensor:
            return tf.nn.softmax(self.forward(xte, self.adapt(xtr, ytr, n_samp, mask, balance))[1])

        if not eps:
            return probs(taml.Balance())
        each = tf.map_fn(
            lambda e: probs(post.at(e)), eps, fn_output_signature=self.arch.dtype, parallel_iterations=1
        )
        return tf.reduce_mean(each, axis=0)

    def evaluate(self, ep: dict[str, tf.Tensor], n_samp: int, n_mc: int) -> tuple[tf.Tensor, tf.Tensor]:
        """Meta-test (E10): mean query negative log-likelihood of the predictive probabilities and
        per-task accuracies of their argmax, for n_mc posterior draws per task each with its own inner
        loop (n_mc = 0: the posterior means; without balancing variables one pass, all draws equal)."""
        nll, accs = [], []
        for t in range(ep["xtr"].shape[0]):
            with self.seeded(ep, t):
                post, mask = self._posterior(ep, t)
                eps = (
                    post.noise(self._draw(), n_mc)
                    if n_mc > 0
                    else {k: tf.zeros_like(v)[None] for k, v in post.mu.items()}
                )
                p = self.predict(ep["xtr"][t], ep["ytr"][t], ep["xte"][t], n_samp, post, eps, mask)
            y = ep["yte"][t]
            nll.append(-tf.reduce_mean(tf.reduce_sum(y * tf.math.log(tf.maximum(p, 1e-30)), axis=-1)))
            accs.append(accuracy(p, y))
        return tf.reduce_mean(tf.stack(nll)), tf.stack(accs)

    def balancing(self, ep: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Posterior means of the enabled balancing variables, for logging (spec 2.3; Bayesian TAML's
        README): omega [n_tasks, way] (softmax), gamma [n_tasks, n_blocks + 1] (exp; conv1..convL,
        head), z [n_tasks, 2 * n_blocks * filters]; only the enabled ones are keys."""
        means = [self._posterior(ep, t)[0].mean() for t in range(ep["xtr"].shape[0])]
        return {k: tf.stack([getattr(b, k) for b in means]) for k in self.learner.enabled}

    def train_op(self, loss: tf.Tensor, meta_lr: float, step: tf.Variable) -> tf.Operation:
        """Adam on theta, batch-norm offsets and phi, each gradient element clipped (Section 4).
        A parameter the loss does not reach gets a zero gradient: with first_order, the part of phi
        that acts only inside the inner loop (Meta-dropout's logit noise) stays where it starts."""
        params = self.meta_params
        grads = tf.gradients(loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        grads = [tf.clip_by_value(g, -CLIP, CLIP) for g in grads]
        opt = tf.compat.v1.train.AdamOptimizer(meta_lr)
        return opt.apply_gradients(zip(grads, params), global_step=step)

    def trace(
        self,
        xtr: tf.Tensor,
        ytr: tf.Tensor,
        xte: tf.Tensor,
        cols: tf.Tensor,
        n_samp: int,
        n_perturbed: int = 10,
    ) -> dict[str, tf.Tensor]:
        """The inner loop of a two-way task on the last layer's columns `cols` [2] only (Appendix C).

        ytr [N, 2] is one-hot over (cols[0], cols[1]); each inner step averages n_samp noise samples
        (Eq. 3). For k = 0..n_steps (before the first and after every step), stacked on axis 0:
        htr [N, F] and hte [M, F] deterministic last-layer features (a = mu, Eq. 4); htr_samp
        [n_perturbed, N, F] noisy features of xtr (zero samples without a stochastic perturbation);
        w [F, 2] and b [2], the two columns of the adapted last layer.
        """
        theta = self.initial()
        for k in ("dense_w", "dense_b"):
            theta[k] = tf.gather(theta[k], cols, axis=-1)
        # Meta-SGD's dense step sizes are per column: restrict them too.
        lr = {
            k: v
            if isinstance(v, float) or k[:5] != "dense" or v.shape[-1] == 1
            else tf.gather(v, cols, axis=-1)
            for k, v in self.lr.items()
        }
        thetas = [theta]
        for _ in range(self.n_steps):
            thetas.append(self.inner_step(thetas[-1], xtr, ytr, n_samp, lr))
        feat = self.arch.feat_dim
        out: dict[str, list[tf.Tensor]] = {k: [] for k in ("htr", "hte", "htr_samp", "w", "b")}
        for theta in thetas:
            out["htr"].append(self.forward(xtr, theta)[0])
            out["hte"].append(self.forward(xte, theta)[0])
            if self.noise.stochastic:
                h, _ = self.forward(xtr, theta, n_perturbed, stochastic=True)
                out["htr_samp"].append(tf.reshape(h, [n_perturbed, -1, feat]))
            else:
                out["htr_samp"].append(tf.zeros(tf.stack([0, tf.shape(xtr)[0], feat]), self.arch.dtype))
            out["w"].append(theta["dense_w"])
            out["b"].append(theta["dense_b"])
        return {k: tf.stack(v) for k, v in out.items()}


def export_graph(
    model: Model, n_samp: int, n_perturbed: int, n_fmap_samples: int
) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor], list[list[tf.Tensor]]]:
    """The graph of `main.py --mode export` (Figure 4, Figure 8, Appendix C).

    Placeholders xtr [N, D], ytr [N, 2] (one-hot over the two columns), xte [M, D] and cols [2] of a
    two-way task; `trace`, Model.trace of that task with n_samp noise samples per inner step; `fmaps`,
    every conv block's output for xte under the meta-learned theta: first without noise, then (for a
    stochastic perturbation) n_fmap_samples noise samples stacked on the batch axis.
    """
    a = model.arch
    ph = {
        k: tf.compat.v1.placeholder(a.dtype, [None, a.x_dim if k[0] == "x" else 2], name=f"export_{k}")
        for k in ("xtr", "ytr", "xte")
    }
    ph["cols"] = tf.compat.v1.placeholder(tf.int32, [2], name="export_cols")
    trace = model.trace(ph["xtr"], ph["ytr"], ph["xte"], ph["cols"], n_samp, n_perturbed)
    fmaps = [model.blocks(ph["xte"], model.theta)]
    if model.noise.stochastic:
        fmaps.append(model.blocks(ph["xte"], model.theta, n_fmap_samples, stochastic=True))
    return ph, trace, fmaps


# ---------------------------------------------------------------------------------------------
# The graphs of main.py's modes (episodic.py feeds them)


def build(
    arch: Arch,
    perturbation: Perturbation,
    inner_lr: float,
    n_steps: int,
    *,
    metasgd: bool = False,
    first_order: bool = False,
    omega: bool = False,
    gamma: bool = False,
    z: bool = False,
    shot: int = 1,
    max_shot: int | None = None,
) -> Model:
    """The network of main.py's flags: MAML, Meta-SGD (metasgd) or Meta-Dropout (perturbation);
    Bayesian TAML's balancing variables omega, gamma, z (taml.py) for tasks of up to max_shot
    examples per class (any-shot) or `shot`, with its zero-initialised head (spec Q1) when any-shot.
    Adversarial MAML's inner loop is set by the caller (Model.adversary, attack.Adversary)."""
    learner = taml.get(omega=omega, gamma=gamma, z=z, max_shot=max_shot or shot, zero_head=bool(max_shot))
    return Model(
        arch, perturbation, inner_lr, n_steps, metasgd=metasgd, first_order=first_order, learner=learner
    )


def training_graph(
    model: Model, n_tasks: int, shot: int, query: int, max_shot: int | None, meta_lr: float, step: tf.Variable
) -> tuple[dict[str, tf.Tensor], list[tf.Tensor]]:
    """A meta-batch's placeholders and the fetches of one meta-training iteration (Algorithm 1):
    [train op, loss, accuracy [n_tasks], KL], one noise sample and one posterior draw per task
    (Section 3.1; spec 1.7); loss = cross-entropy + KL (Bayesian TAML, spec E8-E9)."""
    ph = model.placeholders(n_tasks, shot, query, "train", max_shot=max_shot)
    out = model.objective(ph, 1)
    return ph, [model.train_op(out["loss"], meta_lr, step), out["loss"], out["acc"], out["kl"]]


def evaluation_graph(
    model: Model, n_tasks: int, shot: int, query: int, max_shot: int | None, n_samp: int, n_mc: int = 0
) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """A meta-batch's placeholders and its query accuracies [n_tasks] after the inner loop with
    n_samp noise samples per step (Algorithm 2) and, for Bayesian TAML, n_mc posterior draws of
    the balancing variables, each with its own inner loop (0: the posterior means; E10)."""
    ph = model.placeholders(n_tasks, shot, query, "eval", max_shot=max_shot, seeded=True)
    if n_mc:
        _, acc = model.evaluate(ph, n_samp, n_mc)
    else:  # the posterior means (validation's pass; Meta-Dropout's graph as before)
        _, acc = model.meta_batch(ph, n_samp, sample=False)
    return ph, acc
