"""Perturbations of the inner loop, one small class each, chosen by name (`--noise`, `--noise_hp`).

A perturbation holds its hyperparameters as typed dataclass fields, owns its parameters phi, and
perturbs the network where the paper does (Tables 2-3): the inputs and labels of an inner step
(`mix`), a block's conv weights (`linear`), a block's pre-activation (`conv`), its batch-normalised
features before the ReLU (`act`, MetaPerturb) and the logits (`dense`).
Each hook gets a `Draw`, the noise of one pass, or None on deterministic passes (the query set,
Eq. 4, and every pass of a deterministic perturbation); `conv` and `dense` also return a
regularizer the inner loss adds (beta * KL), or None. `adapts_phi` declares whether the inner loop
adapts phi with theta (Table 2's baselines, "for fair comparison"; Table 3's "MAML + more param")
or phi is meta-learned only (Algorithm 1, line 11).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from layers import conv2d, dense, variable
from lazy import tf

Params = dict[str, "tf.Tensor"]
Reg = typing.Optional["tf.Tensor"]  # a regularizer the inner loss adds, or None


class Draw:
    """The noise of one pass of `groups` Monte-Carlo samples stacked on axis 0 (Eq. 3).

    Every draw is a stateless function of the run's seed and a count shared by all draw sites of the
    graph, so feeding the seed fixes or varies all noise. `shared` keeps values a pass draws once and
    several hooks use (mixup's lambda, pairs and layer).
    """

    def __init__(self, seed: tf.Tensor, count: Iterator[int], groups: int, dtype: tf.DType) -> None:
        self.seed, self.count, self.groups, self.dtype = seed, count, groups, dtype
        self._shared: dict[str, tf.Tensor] = {}

    def _draw(
        self, sample: Callable[..., tf.Tensor], shape: tf.Tensor | list[int], **kw: object
    ) -> tf.Tensor:
        """sample(shape, seed=..., **kw) with the next seed. Always drawn by TensorFlow's kernels,
        outside any XLA cluster (main.py --xla): XLA's sampler gives other numbers for the same seed;
        a static shape is taken as a constant, so no op of the cluster feeds the draw."""
        with tf.xla.experimental.jit_scope(compile_ops=False):
            static = tf.get_static_value(shape)
            seed = tf.random.experimental.stateless_fold_in(self.seed, next(self.count))
            return sample(shape if static is None else static, seed=seed, **kw)

    def normal(self, shape: tf.Tensor | list[int]) -> tf.Tensor:
        """N(0, I)."""
        return self._draw(tf.random.stateless_normal, shape, dtype=self.dtype)

    def uniform(self, shape: tf.Tensor | list[int]) -> tf.Tensor:
        """U[0, 1)."""
        return self._draw(tf.random.stateless_uniform, shape, dtype=self.dtype)

    def integers(self, shape: list[int], n: int) -> tf.Tensor:
        """Uniform on {0, ..., n-1}, int32."""
        return self._draw(tf.random.stateless_uniform, shape, minval=0, maxval=n, dtype=tf.int32)

    def beta(self, a: float, b: float, shape: list[int]) -> tf.Tensor:
        """Beta(a, b) as X / (X + Y), X ~ Gamma(a), Y ~ Gamma(b) (0 where both underflow)."""
        x = self._draw(tf.random.stateless_gamma, shape, alpha=a, dtype=self.dtype)
        y = self._draw(tf.random.stateless_gamma, shape, alpha=b, dtype=self.dtype)
        return tf.math.divide_no_nan(x, x + y)

    def shared(self, key: str, make: Callable[[], tf.Tensor]) -> tf.Tensor:
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]


def inverse_softplus(y: float) -> float:
    return math.log(math.expm1(y))


def constant(name: str, shape: list[int], value: float, dtype: tf.DType) -> tf.Variable:
    init = tf.compat.v1.constant_initializer(value)
    return tf.compat.v1.get_variable(name, shape, dtype=dtype, initializer=init)


def conv_nets(convs: list[tuple[int, int]], dtype: tf.DType, name: str = "conv", bias: float = 0.0) -> Params:
    """A 3x3 conv of each block's input h^(l-1) to its channels, e.g. mu^(l) of Eq. 5."""
    phi = {}
    for l, (cin, cout) in enumerate(convs):
        phi[f"{name}{l}_w"] = variable(f"{name}{l}_w", [3, 3, cin, cout], "conv", dtype)
        phi[f"{name}{l}_b"] = constant(f"{name}{l}_b", [cout], bias, dtype)
    return phi


def conv_net(phi: Params, l: int, h: tf.Tensor, name: str = "conv") -> tf.Tensor:
    return conv2d(h, phi[f"{name}{l}_w"], phi[f"{name}{l}_b"])


def dense_net(feat_dim: int, dtype: tf.DType) -> Params:
    """One output column shared by all classes: a per-example std of the logits' noise."""
    return {
        "dense_w": variable("dense_w", [feat_dim, 1], "dense", dtype),
        "dense_b": variable("dense_b", [1], "zeros", dtype),
    }


@dataclass
class Site:
    """One insertion point of the `act` hook (after batch norm and the residual sum, before the ReLU).

    c_norm, h_norm: MetaPerturb's C_norm and H_norm (the network's width and the input side, M5);
    lam: the annealing coefficient lambda (M6; 1 when meta-learning); stats: the point's running
    statistics (`init_stats`), empty for batch statistics always (the episodic learner's transductive
    batch norm); training: batch statistics that also update `stats` (their ops go to `updates`), or
    `stats` read as they are (evaluation mode, M7).
    """

    c_norm: float
    h_norm: float
    lam: tf.Tensor | float = 1.0
    stats: Params = field(default_factory=dict)
    training: bool = True
    updates: list[tf.Operation] = field(default_factory=list)


def per_example(units: tf.Tensor) -> tf.Tensor:
    """Sum over an example's units, mean over examples (and Monte-Carlo samples)."""
    return tf.reduce_mean(tf.reduce_sum(tf.reshape(units, [tf.shape(units)[0], -1]), axis=1))


def positive(**values: float) -> None:
    for k, v in values.items():
        if not v > 0:
            raise ValueError(f"{k} must be > 0, not {v}")


@dataclass(frozen=True)
class Perturbation:
    """No perturbation: base MAML."""

    name: ClassVar[str] = "none"
    title: ClassVar[str] = "MAML"  # display name (plot.py, report.py)
    stochastic: ClassVar[bool] = False  # whether passes draw noise (inner steps average MC samples, Eq. 3)
    adapts_phi: ClassVar[bool] = False  # whether the inner loop adapts phi with theta
    # whether phi is meta-learned on source tasks and frozen at target time (transfer.py); otherwise
    # a target network trains its phi (if any) with theta, as a regulariser of its own
    transferred: ClassVar[bool] = False
    # The parametrisation's version (phi's initial values, the regularizer's scale), recorded in
    # config.json as noise_version (1 where a config predates it); a savedir of another version is
    # neither resumed nor evaluated (savedir.check_settings). `since` says what the current one changed.
    version: ClassVar[int] = 1
    since: ClassVar[str] = ""

    def init_phi(self, convs: list[tuple[int, int]], feat_dim: int, dtype: tf.DType) -> Params:
        """Create phi for conv blocks with (in, out) channels `convs` and `feat_dim` features."""
        return {}

    def mix(
        self, l: int, n_blocks: int, h: tf.Tensor, y: tf.Tensor | None, draw: Draw | None
    ) -> tuple[tf.Tensor, tf.Tensor | None]:
        """Perturb the input h of block l (l = 0: the images) and the labels y (None: no labels)."""
        return h, y

    def linear(
        self, phi: Params, l: int, h: tf.Tensor, w: tf.Tensor, b: tf.Tensor, draw: Draw | None
    ) -> tf.Tensor:
        """The pre-activation f^(l) of block l from its input h and conv weights w, b."""
        return conv2d(h, w, b)

    def conv(
        self, phi: Params, l: int, h: tf.Tensor, f: tf.Tensor, draw: Draw | None
    ) -> tuple[tf.Tensor, Reg]:
        """Perturb the pre-activation `f` of conv block `l`, whose input is `h`."""
        return f, None

    def init_stats(self, channels: int, dtype: tf.DType) -> Params:
        """Create the running statistics (not trained) of one `act` insertion point of `channels`."""
        return {}

    def act(self, phi: Params, l: int, f: tf.Tensor, draw: Draw | None, site: Site) -> tf.Tensor:
        """Perturb the batch-normalised features `f` [N, H, W, C] of block l before the ReLU."""
        return f

    def dense(self, phi: Params, h: tf.Tensor, logits: tf.Tensor, draw: Draw | None) -> tuple[tf.Tensor, Reg]:
        """Perturb the logits computed from the last-layer features `h`."""
        return logits, None

    def hp(self) -> dict[str, float]:
        """The hyperparameters, by name."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MetaDropout(Perturbation):
    """Multiplicative input-dependent noise (Eq. 5-6) and additive noise on the logits."""

    name: ClassVar[str] = "metadrop"
    title: ClassVar[str] = "Meta-dropout"
    stochastic: ClassVar[bool] = True

    def init_phi(self, convs: list[tuple[int, int]], feat_dim: int, dtype: tf.DType) -> Params:
        return {**conv_nets(convs, dtype), **dense_net(feat_dim, dtype)}

    def conv(
        self, phi: Params, l: int, h: tf.Tensor, f: tf.Tensor, draw: Draw | None
    ) -> tuple[tf.Tensor, Reg]:
        mu = conv_net(phi, l, h)  # mu^(l)(h^(l-1)), Eq. 5
        a = mu if draw is None else mu + draw.normal(tf.shape(mu))  # a ~ N(mu, I); a = mu for Eq. 4
        return f * tf.nn.softplus(a), None  # f^(l) o z^(l), Eq. 6

    def dense(self, phi: Params, h: tf.Tensor, logits: tf.Tensor, draw: Draw | None) -> tuple[tf.Tensor, Reg]:
        if draw is None:
            return logits, None
        sigma = tf.nn.softplus(dense(h, phi["dense_w"], phi["dense_b"]))
        return logits + sigma * draw.normal(tf.shape(logits)), None


@dataclass(frozen=True)
class AdditiveMetaDropout(MetaDropout):
    """Additive meta-dropout (Appendix B): f^(l) + zeta, zeta ~ N(0, lam^2 diag(sigma^2(h^(l-1)))) (Eq. 9-10).

    sigma^(l) = softplus of a 3x3 conv of the block input, as mu^(l) in Eq. 5. Choice: the logits
    (the last layer's pre-activation; "at each layer l") get the same additive noise, lam times
    meta-dropout's logit std. phi is meta-learned only, as for meta-dropout.
    """

    name: ClassVar[str] = "metadrop_add"
    title: ClassVar[str] = "Meta-dropout (additive)"
    lam: float = 0.1  # "We fix lambda = 0.1 in all our experiments" (Appendix B)

    def __post_init__(self) -> None:
        positive(lam=self.lam)

    def conv(
        self, phi: Params, l: int, h: tf.Tensor, f: tf.Tensor, draw: Draw | None
    ) -> tuple[tf.Tensor, Reg]:
        if draw is None:
            return f, None
        return f + self.lam * tf.nn.softplus(conv_net(phi, l, h)) * draw.normal(tf.shape(f)), None

    def dense(self, phi: Params, h: tf.Tensor, logits: tf.Tensor, draw: Draw | None) -> tuple[tf.Tensor, Reg]:
        if draw is None:
            return logits, None
        sigma = tf.nn.softplus(dense(h, phi["dense_w"], phi["dense_b"]))
        return logits + self.lam * sigma * draw.normal(tf.shape(logits)), None


@dataclass(frozen=True)
class LearnedVariance(MetaDropout):
    """Meta-dropout with learned variance (Table 3): a ~ N(mu(h), sigma^2(h)) instead of N(mu, I) in Eq. 5.

    sigma^(l) = softplus of a second 3x3 conv of the block input; its bias starts at
    softplus^-1(1), so training starts from meta-dropout's unit variance. Logits as meta-dropout.
    """

    name: ClassVar[str] = "learned_var"
    title: ClassVar[str] = "Meta-dropout w/ learned var."

    def init_phi(self, convs: list[tuple[int, int]], feat_dim: int, dtype: tf.DType) -> Params:
        return {
            **super().init_phi(convs, feat_dim, dtype),
            **conv_nets(convs, dtype, "sigma", inverse_softplus(1.0)),
        }

    def conv(
        self, phi: Params, l: int, h: tf.Tensor, f: tf.Tensor, draw: Draw | None
    ) -> tuple[tf.Tensor, Reg]:
        mu = conv_net(phi, l, h)
        if draw is not None:
            mu += tf.nn.softplus(conv_net(phi, l, h, "sigma")) * draw.normal(tf.shape(mu))
        return f * tf.nn.softplus(mu), None


@dataclass(frozen=True)
class DeterministicMetaDropout(Perturbation):
    """Deterministic meta-dropout (Table 3): f^(l) o softplus(mu^(l)(h^(l-1))), a = mu always; no
    noise on the logits. phi is meta-learned only ("not participating in the inner-gradient steps")."""

    name: ClassVar[str] = "deterministic_metadrop"
    title: ClassVar[str] = "Determ. meta-dropout"

    def init_phi(self, convs: list[tuple[int, int]], feat_dim: int, dtype: tf.DType) -> Params:
        return conv_nets(convs, dtype)

    def conv(
        self, phi: Params, l: int, h: tf.Tensor, f: tf.Tensor, draw: Draw | None
    ) -> tuple[tf.Tensor, Reg]:
        return f * tf.nn.softplus(conv_net(phi, l, h)), None


@dataclass(frozen=True)
class MoreParam(DeterministicMetaDropout):
    """MAML + more param (Table 3): deterministic meta-dropout whose phi the inner loop adapts too."""

    name: ClassVar[str] = "more_param"
    title: ClassVar[str] = "MAML + more param"
    adapts_phi: ClassVar[bool] = True


@dataclass(frozen=True)
class FixedGaussian(Perturbation):
    """Fixed Gaussian (Table 3): f^(l) o softplus(a), a ~ N(0, I), no parameters; a = 0 on
    deterministic passes (the mean, as Eq. 4). Conv blocks only: the logits' noise needs phi."""

    name: ClassVar[str] = "fixed_gaussian"
    title: ClassVar[str] = "Fixed Gaussian"
    stochastic: ClassVar[bool] = True

    def conv(
        self, phi: Params, l: int, h: tf.Tensor, f: tf.Tensor, draw: Draw | None
    ) -> tuple[tf.Tensor, Reg]:
        a = tf.zeros_like(f) if draw is None else draw.normal(tf.shape(f))
        return f * tf.nn.softplus(a), None


@dataclass(frozen=True)
class IndependentGaussian(Perturbation):
    """Independent Gaussian (Table 3): f^(l) o softplus(a), a ~ N(mu^(l), I), mu^(l) one meta-learned
    value per channel (input-independent, "similarly to channel-wise dropout"), zero-initialised."""

    name: ClassVar[str] = "independent_gaussian"
    title: ClassVar[str] = "Independent Gaussian"
    stochastic: ClassVar[bool] = True

    def init_phi(self, convs: list[tuple[int, int]], feat_dim: int, dtype: tf.DType) -> Params:
        return {f"mu{l}": variable(f"mu{l}", [cout], "zeros", dtype) for l, (_, cout) in enumerate(convs)}

    def conv(
        self, phi: Params, l: int, h: tf.Tensor, f: tf.Tensor, draw: Draw | None
    ) -> tuple[tf.Tensor, Reg]:
        a = phi[f"mu{l}"] + (tf.zeros_like(f) if draw is None else draw.normal(tf.shape(f)))
        return f * tf.nn.softplus(a), None


@dataclass(frozen=True)
class WeightGaussian(Perturbation):
    """Weight Gaussian (Table 3): fully factorised Gaussian conv kernels w ~ N(theta, sigma^2),
    sigma = softplus(rho) per kernel entry, rho meta-learned (phi), starting at sigma = 0.01 (half
    the kernels' initial std, Section 4). One kernel sample per Monte-Carlo sample; the mean theta on
    deterministic passes. No KL term: the paper names none, and the variances are meta-learned by
    the query loss like meta-dropout's phi."""

    name: ClassVar[str] = "weight_gaussian"
    title: ClassVar[str] = "Weight Gaussian"
    stochastic: ClassVar[bool] = True
    SIGMA0: ClassVar[float] = 0.01

    def init_phi(self, convs: list[tuple[int, int]], feat_dim: int, dtype: tf.DType) -> Params:
        rho = inverse_softplus(self.SIGMA0)
        return {
            f"rho{l}": constant(f"rho{l}", [3, 3, cin, cout], rho, dtype)
            for l, (cin, cout) in enumerate(convs)
        }

    def linear(
        self, phi: Params, l: int, h: tf.Tensor, w: tf.Tensor, b: tf.Tensor, draw: Draw | None
    ) -> tf.Tensor:
        if draw is None:
            return conv2d(h, w, b)
        sigma = tf.nn.softplus(phi[f"rho{l}"])
        groups = tf.split(h, draw.groups, axis=0)
        return tf.concat([conv2d(g, w + sigma * draw.normal(tf.shape(w)), b) for g in groups], axis=0)


def check_beta(beta: float) -> None:
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, not {beta}")


@dataclass(frozen=True)
class InputDependentKL(Perturbation):
    """Table 2's regularizers with a KL term: a 3x3 conv of each block input (phi) sets the noise
    scale, the inner loop adapts phi ("for fair comparison"), beta weighs the KL term."""

    stochastic: ClassVar[bool] = True
    adapts_phi: ClassVar[bool] = True
    beta: float = 1e-3

    def __post_init__(self) -> None:
        check_beta(self.beta)

    def init_phi(self, convs: list[tuple[int, int]], feat_dim: int, dtype: tf.DType) -> Params:
        return conv_nets(convs, dtype)


@dataclass(frozen=True)
class VIB(InputDependentKL):
    """Variational information bottleneck (Alemi et al. 2017) at each block's pre-activation:
    z = f^(l) + sigma^(l)(h^(l-1)) o eps, eps ~ N(0, I), i.e. q(z|x) = N(f, diag(sigma^2)) with mean
    the block's own pre-activation and sigma = softplus of a 3x3 conv of the block input (phi); the
    inner loss adds beta * KL[q(z|x) || N(0, I)]. Deterministic passes use the mean z = f. phi is
    adapted in the inner steps (Table 2).

    Scale (the paper gives none for VIB in a conv net): Alemi et al.'s bottleneck has K = 256 units
    and sigma = softplus(. - 5) (Section 4.1), so the noise starts small (std 0.0067) and beta
    weighs a KL summed over 256 units. Here every unit of every block is a bottleneck unit (~66k per
    Omniglot example) and the pre-activations start at ~0.03 (kernels of std 0.02): summing the KL
    makes beta * KL (~7 nats at beta 1e-3) outweigh the cross-entropy, and a std of softplus(0) = 0.69
    drowns the signal. So, as Alemi et al., sigma's conv bias starts at -5 (sigma = softplus(-5) =
    0.0067), and the KL is the mean over a block's units (nats per unit), summed over blocks and
    averaged over examples: beta keeps its meaning per unit whatever the block's size.
    """

    name: ClassVar[str] = "vib"
    title: ClassVar[str] = "Variational information bottleneck"
    SIGMA_BIAS: ClassVar[float] = -5.0  # Alemi et al. 2017, Section 4.1: sigma = softplus(. - 5)
    version: ClassVar[int] = 2  # 1: sigma's bias started at 0 (softplus(0) = 0.69), KL summed over units
    since: ClassVar[str] = (
        "sigma starts at softplus(-5) and the KL is averaged over units, Alemi et al.'s scale"
    )

    def init_phi(self, convs: list[tuple[int, int]], feat_dim: int, dtype: tf.DType) -> Params:
        return conv_nets(convs, dtype, bias=self.SIGMA_BIAS)

    def conv(
        self, phi: Params, l: int, h: tf.Tensor, f: tf.Tensor, draw: Draw | None
    ) -> tuple[tf.Tensor, Reg]:
        if draw is None:
            return f, None
        sigma = tf.nn.softplus(conv_net(phi, l, h))
        kl = 0.5 * (tf.square(f) + tf.square(sigma) - 1.0) - tf.math.log(sigma)
        return f + sigma * draw.normal(tf.shape(f)), self.beta * tf.reduce_mean(kl)


@dataclass(frozen=True)
class InformationDropout(InputDependentKL):
    """Information dropout, ReLU version (Achille & Soatto 2018): f^(l) o eps with log-normal
    eps = exp(alpha o n), n ~ N(0, I), alpha^(l)(h^(l-1)) = alpha_max * sigmoid(3x3 conv of the
    block input) (phi; alpha_max = 0.7 as in their experiments). For ReLU activations their KL term
    against the log-uniform prior is -log alpha + const for each unit with f > 0 (0 otherwise); the
    inner loss adds beta times its sum over units and blocks, averaged over examples. Applied before
    batch norm and ReLU: eps > 0 commutes with ReLU. Deterministic passes use eps = 1 (log eps = 0, its
    mean). phi is adapted in the inner steps (Table 2).
    """

    name: ClassVar[str] = "infodrop"
    title: ClassVar[str] = "Information dropout (ReLU)"
    beta: float = 1e-5
    alpha_max: float = 0.7

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(alpha_max=self.alpha_max)

    def conv(
        self, phi: Params, l: int, h: tf.Tensor, f: tf.Tensor, draw: Draw | None
    ) -> tuple[tf.Tensor, Reg]:
        if draw is None:
            return f, None
        alpha = self.alpha_max * tf.sigmoid(conv_net(phi, l, h))
        active = tf.cast(f > 0, f.dtype)
        kl = -active * tf.math.log(alpha)
        return f * tf.exp(alpha * draw.normal(tf.shape(f))), self.beta * per_example(kl)


@dataclass(frozen=True)
class Mixup(Perturbation):
    """Input & manifold mixup (Zhang et al. 2017; Verma et al. 2019) of an inner step's examples.

    Per Monte-Carlo sample: lam ~ Beta(gamma, gamma), a random permutation pi of the N training
    examples, and a layer k uniform on {0 (the images), 1, ..., n_blocks-1 (block outputs)}, as
    Verma et al. draw k over the input and hidden layers; the input of block k becomes
    lam * h_i + (1 - lam) * h_pi(i) and the labels lam * y_i + (1 - lam) * y_pi(i). Deterministic
    passes (the query set; meta-test as Table 2 says) are not mixed. No parameters.
    """

    name: ClassVar[str] = "mixup"
    title: ClassVar[str] = "Input & manifold mixup"
    stochastic: ClassVar[bool] = True
    gamma: float = 0.2

    def __post_init__(self) -> None:
        positive(gamma=self.gamma)

    def mix(
        self, l: int, n_blocks: int, h: tf.Tensor, y: tf.Tensor | None, draw: Draw | None
    ) -> tuple[tf.Tensor, tf.Tensor | None]:
        if draw is None:
            return h, y
        g = draw.groups
        lam = draw.shared("lam", lambda: tf.stop_gradient(draw.beta(self.gamma, self.gamma, [g])))
        n = tf.shape(h)[0] // g
        pi = draw.shared("pi", lambda: tf.argsort(draw.uniform(tf.stack([g, n])), axis=1))
        k = draw.shared("k", lambda: draw.integers([g], n_blocks))

        def interpolate(v: tf.Tensor, at: tf.Tensor) -> tf.Tensor:
            vg = tf.reshape(v, tf.concat([[g, n], tf.shape(v)[1:]], 0))
            shape = [g] + [1] * (len(v.shape))
            lg = tf.reshape(lam, shape)
            mixed = lg * vg + (1 - lg) * tf.gather(vg, pi, axis=1, batch_dims=1)
            return tf.reshape(tf.where(tf.reshape(at, shape), mixed, vg), tf.shape(v))

        h = interpolate(h, tf.equal(k, l))
        if y is not None and l == 0:  # the labels follow the pair wherever it is mixed
            y = interpolate(y, tf.ones([g], tf.bool))
        return h, y


def depthwise(x: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
    """The 3x3 kernel k [3, 3, 1, 1] applied to every channel of x [N, H, W, C] alike, zero padding 1."""
    return tf.nn.depthwise_conv2d(x, tf.tile(k, [1, 1, tf.shape(x)[-1], 1]), [1, 1, 1, 1], "SAME")


def equivariant(u: tf.Tensor, k_id: tf.Tensor, k_all: tf.Tensor) -> tf.Tensor:
    """M1: E(u)_c = k_id * u_c + k_all * mean_c'(u_c'), 3x3 convolutions shared by all channels."""
    mean = tf.reduce_mean(u, axis=-1, keepdims=True)
    return depthwise(u, k_id) + tf.nn.conv2d(mean, k_all, strides=1, padding="SAME")


@dataclass(frozen=True)
class MetaPerturb(Perturbation):
    """MetaPerturb (Ryu et al. 2020; spec M1-M7): one 82-parameter network shared by every block.

    On the batch-normalised features h [N, H, W, C] of a block, before its ReLU:
    noise z = softplus(a + eps), a = E2(ReLU(E1(h))) with the channel-equivariant layers E (M1-M3);
    channel scale s_c = sigmoid(w . [m_c; v_c; C / C_norm; H / H_norm]) (M5), m_c and v_c the batch
    mean and unbiased variance of g_{b,c} = GAP(ReLU(K * h_{b,c})) (M4; the running averages in
    evaluation mode, M7); out = min(h (1 + lam (s z - 1)), clipval) (M6). Deterministic passes
    (the episodic learner's query set) take eps = 0. Each Monte-Carlo sample of a pass has its own
    batch statistics, as batch norm. phi is meta-learned only (not adapted in the inner loop).
    The running variance takes the batch's variance once (fixed Q6); double_bessel=1 multiplies it
    by N/(N-1) again, as the original code does.
    """

    name: ClassVar[str] = "metaperturb"
    title: ClassVar[str] = "MetaPerturb"
    stochastic: ClassVar[bool] = True
    transferred: ClassVar[bool] = True
    H_DIM: ClassVar[int] = 4  # kernels of K: the batch descriptor's size (M4)
    MOMENTUM: ClassVar[float] = 0.1  # of the running statistics (M7)
    clipval: float = 100.0  # upper clip of the perturbed features (--clipval)
    double_bessel: int = 0

    def __post_init__(self) -> None:
        positive(clipval=self.clipval)
        if self.double_bessel not in (0, 1):
            raise ValueError(f"double_bessel must be 0 or 1, not {self.double_bessel}")

    def init_phi(self, convs: list[tuple[int, int]], feat_dim: int, dtype: tf.DType) -> Params:
        """phi: E1 and E2's kernels [3, 3, 1, 1] each, K [3, 3, 1, 4], w [10]; all N(0, 0.01^2)."""
        init = tf.compat.v1.random_normal_initializer(stddev=0.01)
        shapes = {
            "k1_id": [3, 3, 1, 1],
            "k1_all": [3, 3, 1, 1],
            "k2_id": [3, 3, 1, 1],
            "k2_all": [3, 3, 1, 1],
            "K": [3, 3, 1, self.H_DIM],
            "w": [2 * self.H_DIM + 2],
        }
        return {k: tf.compat.v1.get_variable(k, s, dtype=dtype, initializer=init) for k, s in shapes.items()}

    def init_stats(self, channels: int, dtype: tf.DType) -> Params:
        """M7's running mean (0) and variance (1) of g_{b,c} [channels, 4]; not trained."""

        def stat(name: str, value: float) -> tf.Variable:
            init = tf.compat.v1.constant_initializer(value)
            shape = [channels, self.H_DIM]
            return tf.compat.v1.get_variable(name, shape, dtype, init, trainable=False)

        return {"running_mean": stat("running_mean", 0.0), "running_var": stat("running_var", 1.0)}

    def act(self, phi: Params, l: int, f: tf.Tensor, draw: Draw | None, site: Site) -> tf.Tensor:
        eps = None if draw is None else draw.normal(tf.shape(f))
        return self.perturb(phi, f, eps, 1 if draw is None else draw.groups, site)

    def perturb(self, phi: Params, f: tf.Tensor, eps: tf.Tensor | None, groups: int, site: Site) -> tf.Tensor:
        """M6 for f [N, H, W, C] holding `groups` passes stacked on axis 0, noise eps (None: 0)."""
        a = self.noise_mean(phi, f)
        z = tf.nn.softplus(a if eps is None else a + eps)  # M3
        shape = tf.shape(f)
        s = self.scale(phi, f, groups, site)
        sg = tf.reshape(s, tf.stack([tf.shape(s)[0], 1, 1, 1, shape[-1]]))
        zg = tf.reshape(z, tf.concat([[groups, -1], shape[1:]], 0))
        out = f * tf.reshape(1.0 + site.lam * (sg * zg - 1.0), shape)
        return tf.minimum(out, tf.cast(self.clipval, f.dtype))

    @staticmethod
    def noise_mean(phi: Params, f: tf.Tensor) -> tf.Tensor:
        """M2: a = E2(ReLU(E1(f))), the shape of f."""
        return equivariant(
            tf.nn.relu(equivariant(f, phi["k1_id"], phi["k1_all"])), phi["k2_id"], phi["k2_all"]
        )

    def scale(self, phi: Params, f: tf.Tensor, groups: int, site: Site) -> tf.Tensor:
        """M5: s [groups (1 in evaluation mode), C], one scale per channel."""
        m, v = self.moments(phi, f, groups, site)
        shape = tf.shape(f)
        size = tf.cast(tf.stack([shape[-1], shape[1]]), f.dtype) / tf.constant(
            [site.c_norm, site.h_norm], f.dtype
        )
        size = tf.broadcast_to(size, tf.concat([tf.shape(m)[:2], [2]], 0))
        return tf.sigmoid(tf.tensordot(tf.concat([m, v, size], -1), phi["w"], 1))

    def moments(self, phi: Params, f: tf.Tensor, groups: int, site: Site) -> tuple[tf.Tensor, tf.Tensor]:
        """M4: per group the batch mean and unbiased variance of g_{b,c} [groups, C, 4] (training
        mode; updates the running statistics if the site has them), or the running ones [1, C, 4]."""
        if site.stats and not site.training:
            return site.stats["running_mean"][None], site.stats["running_var"][None]
        per_group = f.shape[0] // groups if f.shape[0] is not None else None
        msg = "MetaPerturb's batch-dependent scale (M4) needs at least 2 examples per batch in training mode"
        if per_group is not None and per_group < 2:
            raise ValueError(f"{msg}; got {per_group}")
        shape = tf.shape(f)
        n = shape[0] // groups
        # A static batch size was checked above; a dynamic one is checked when it runs (outside XLA).
        checks = [] if per_group is not None else [tf.debugging.assert_greater_equal(n, 2, message=msg)]
        # g [N, C, 4]; one depthwise conv per kernel of K: 10x faster on a CPU than one with a channel
        # multiplier of 4 (bench/RESULTS.md)
        g = tf.stack(
            [
                tf.reduce_mean(tf.nn.relu(depthwise(f, phi["K"][..., m : m + 1])), axis=[1, 2])
                for m in range(4)
            ],
            axis=-1,
        )
        with tf.control_dependencies(checks):
            g = tf.reshape(g, tf.stack([groups, n, shape[-1], self.H_DIM]))
        m = tf.reduce_mean(g, axis=1)
        nf = tf.cast(n, f.dtype)
        v = tf.reduce_sum(tf.square(g - m[:, None]), axis=1) / (nf - 1.0)
        if site.stats and site.training:
            r = self.MOMENTUM
            v_in = v * nf / (nf - 1.0) if self.double_bessel else v
            rm, rv = site.stats["running_mean"], site.stats["running_var"]
            site.updates += [
                rm.assign((1 - r) * rm + r * tf.stop_gradient(tf.reduce_mean(m, 0))),
                rv.assign((1 - r) * rv + r * tf.stop_gradient(tf.reduce_mean(v_in, 0))),
            ]
        return m, v


PERTURBATIONS: dict[str, type[Perturbation]] = {
    c.name: c
    for c in (
        Perturbation,
        MetaDropout,
        Mixup,
        VIB,
        InformationDropout,
        AdditiveMetaDropout,
        FixedGaussian,
        WeightGaussian,
        IndependentGaussian,
        MoreParam,
        DeterministicMetaDropout,
        LearnedVariance,
        MetaPerturb,
    )
}


def get(name: str, **hp: object) -> Perturbation:
    """The perturbation `name` with hyperparameters `hp` (numbers or text); ValueError if unknown or bad."""
    if name not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {name!r}; choose one of {sorted(PERTURBATIONS)}")
    cls = PERTURBATIONS[name]
    types = {f.name: typing.get_type_hints(cls)[f.name] for f in dataclasses.fields(cls)}
    takes = ", ".join(types) or "no hyperparameters"
    values = {}
    for k, v in hp.items():
        if k not in types:
            raise ValueError(f"{name} has no hyperparameter {k!r} (it takes {takes})")
        try:
            values[k] = types[k](v)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: {k}={v!r} is not a {types[k].__name__}") from None
        if isinstance(values[k], float) and not math.isfinite(values[k]):
            raise ValueError(f"{name}: {k}={v!r} is not finite")
    try:
        return cls(**values)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def build(name: str, hp: str | dict) -> Perturbation:
    """The perturbation `name` with the hyperparameters of --noise_hp: K=V[,K=V] text, or a dict;
    ValueError if bad."""
    if isinstance(hp, str):
        items = [item.partition("=") for item in hp.split(",") if item.strip()]
        if any(not sep for _, sep, _ in items):
            raise ValueError(f"--noise_hp {hp!r}: write K=V[,K=V], e.g. gamma=0.2")
        hp = {k.strip(): v.strip() for k, _, v in items}
    return get(name, **hp)
