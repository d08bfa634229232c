"""The networks of MetaPerturb's transfer protocol (spec 1.1, 1.3), chosen by name (`--model`).

Conv4/Conv6 (`conv4_<width>`, `conv6_<width>`), VGG9 (`vgg9`) and CIFAR-style ResNet-20/32/44/56
(`resnet20`, ...; option-A shortcuts). Every weight is an explicit tensor of `Network.theta`, given to a
functional forward; batch norm keeps running statistics (PyTorch's: momentum 0.1, eps 1e-5; batch
statistics in training mode, running ones in evaluation mode). The perturbation's hooks (noise.py) act
where the paper's code puts MetaPerturb: after batch norm (and the residual sum), before the ReLU
(`act`, once per plain block or residual block, never on the ResNet stem); `mix` at each block's input,
`linear`/`conv` at each conv of the blocks, `dense` on the logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from layers import dense, max_pool
from lazy import tf
from noise import Draw, Params, Perturbation, Site

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


@dataclass(frozen=True)
class Plain:
    """conv 3x3 (bias) -> BN -> act -> ReLU (-> 2x2 max-pool) per block; flatten; linear."""

    widths: tuple[int, ...]
    pools: tuple[bool, ...]
    c_norm: float  # MetaPerturb's C_norm (M5)


@dataclass(frozen=True)
class ResNet:
    """CIFAR ResNet-(6n+2): stem conv3x3 16 -> BN -> ReLU; 3 stages of n basic blocks (16, 32, 64
    channels, strides 1, 2, 2); global average pool; linear."""

    n: int
    c_norm: float = 64.0


Arch = Plain | ResNet
WIDE = "<width>"  # architectures whose name ends in _<width>


def conv4(w: int) -> Plain:
    return Plain((w,) * 4, (True,) * 4, float(w))


def conv6(w: int) -> Plain:
    return Plain((w,) * 6, (True, True, False, True, False, True), float(w))


VGG9 = Plain(
    (64, 128, 256, 256, 512, 512, 512, 512), (True, True, False, True, False, True, False, True), 512.0
)
ARCHITECTURES: dict[str, object] = {
    "conv4_" + WIDE: conv4,
    "conv6_" + WIDE: conv6,
    "vgg9": VGG9,
    **{f"resnet{6 * n + 2}": ResNet(n) for n in (3, 5, 7, 9)},
}


def architecture(name: str) -> Arch:
    """The architecture called `name` (e.g. conv4_64, resnet20); ValueError if there is none."""
    if name in ARCHITECTURES:
        return ARCHITECTURES[name]  # type: ignore[return-value]
    stem, _, width = name.rpartition("_")
    make = ARCHITECTURES.get(stem + "_" + WIDE)
    if make is None or not width.isdigit() or int(width) < 1:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(ARCHITECTURES)} (e.g. conv4_64)")
    return make(int(width))  # type: ignore[operator]


@dataclass
class Out:
    """One forward pass: logits [N, classes], the labels as the perturbation leaves them (mixup),
    the regularizers the training loss adds, and the ops that update the running statistics."""

    logits: tf.Tensor
    y: tf.Tensor | None
    regs: list[tf.Tensor] = field(default_factory=list)
    updates: list[tf.Operation] = field(default_factory=list)


def kaiming(name: str, shape: list[int], dtype: tf.DType) -> tf.Variable:
    """Conv kernel [3, 3, in, out], Kaiming normal with fan_out and the ReLU gain."""
    std = math.sqrt(2.0 / (shape[0] * shape[1] * shape[3]))
    init = tf.compat.v1.random_normal_initializer(stddev=std)
    return tf.compat.v1.get_variable(name, shape, dtype, init)


def uniform(name: str, shape: list[int], fan_in: int, dtype: tf.DType) -> tf.Variable:
    """PyTorch's default for linear layers and conv biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    b = 1.0 / math.sqrt(fan_in)
    return tf.compat.v1.get_variable(name, shape, dtype, tf.compat.v1.random_uniform_initializer(-b, b))


def const(name: str, shape: list[int], value: float, dtype: tf.DType, trainable: bool = True) -> tf.Variable:
    init = tf.compat.v1.constant_initializer(value)
    return tf.compat.v1.get_variable(name, shape, dtype, init, trainable=trainable)


class Network:
    """An architecture's weights theta, batch-norm running statistics and the perturbation's running
    statistics (one set per `act` insertion point), created in the current variable scope.

    `convs` lists the (in, out) channels of the convs the `conv` hook sees, for noise.init_phi; phi
    itself is shared and made by the caller.
    """

    def __init__(
        self,
        arch: Arch,
        shape: tuple[int, int, int],
        n_classes: int,
        noise: Perturbation,
        dtype: tf.DType = tf.float32,
    ) -> None:
        self.arch, self.shape, self.noise, self.dtype = arch, shape, noise, dtype
        self.theta: Params = {}
        self.bn_stats: dict[str, Params] = {}
        self.site_stats: list[Params] = []
        self.convs: list[tuple[int, int]] = []
        self.conv_keys: list[str] = []  # theta's conv kernels and biases: what fine-tuning copies (spec 2.4)
        self.n_classes = n_classes
        if isinstance(arch, ResNet):
            self._conv("stem", shape[2], 16, bias=False, hooked=False)
            cin = 16
            for j, (cout, stride) in enumerate(self._blocks()):
                self._conv(f"b{j}_1", cin, cout, bias=False, hooked=stride == 1)
                self._conv(f"b{j}_2", cout, cout, bias=False)
                self._site(j, cout)
                cin = cout
            feat = cin
        else:
            side, cin = shape[0], shape[2]
            for j, (cout, pool) in enumerate(zip(arch.widths, arch.pools)):
                self._conv(f"b{j}", cin, cout, bias=True)
                self._site(j, cout)
                cin, side = cout, side // 2 if pool else side
            if side < 1:
                raise ValueError(f"{shape[0]}x{shape[1]} inputs vanish after the max-pools of this model")
            feat = side * side * cin
        self.feat_dim = feat
        self.theta["dense_w"] = uniform("dense_w", [feat, n_classes], feat, dtype)
        self.theta["dense_b"] = uniform("dense_b", [n_classes], feat, dtype)

    def _blocks(self) -> list[tuple[int, int]]:
        """A ResNet's residual blocks: (channels, stride)."""
        n = self.arch.n  # type: ignore[union-attr]
        return [(c, s if i == 0 else 1) for c, s in ((16, 1), (32, 2), (64, 2)) for i in range(n)]

    def _conv(self, name: str, cin: int, cout: int, bias: bool, hooked: bool = True) -> None:
        dt = self.dtype
        self.theta[f"{name}_w"] = kaiming(f"{name}_w", [3, 3, cin, cout], dt)
        self.conv_keys.append(f"{name}_w")
        if bias:
            self.theta[f"{name}_b"] = uniform(f"{name}_b", [cout], 9 * cin, dt)
            self.conv_keys.append(f"{name}_b")
        self.theta[f"{name}_gamma"] = const(f"{name}_gamma", [cout], 1.0, dt)
        self.theta[f"{name}_beta"] = const(f"{name}_beta", [cout], 0.0, dt)
        self.bn_stats[name] = {
            "mean": const(f"{name}_bn_mean", [cout], 0.0, dt, trainable=False),
            "var": const(f"{name}_bn_var", [cout], 1.0, dt, trainable=False),
        }
        if hooked:
            self.convs.append((cin, cout))

    def _site(self, j: int, channels: int) -> None:
        with tf.compat.v1.variable_scope(f"perturb{j}"):
            self.site_stats.append(self.noise.init_stats(channels, self.dtype))

    @property
    def n_sites(self) -> int:
        """Insertion points of the `act` hook (MetaPerturb's layers)."""
        return len(self.site_stats)

    @property
    def variables(self) -> list[tf.Variable]:
        """Everything of this network a checkpoint keeps: theta and all running statistics."""
        stats = [v for s in self.bn_stats.values() for v in s.values()]
        return list(self.theta.values()) + stats + [v for s in self.site_stats for v in s.values()]

    def forward(
        self,
        x: tf.Tensor,
        phi: Params,
        training: bool,
        draw: Draw | None,
        lam: tf.Tensor | float = 1.0,
        y: tf.Tensor | None = None,
        noise_training: bool | None = None,
        theta: Params | None = None,
    ) -> Out:
        """Logits of images x [N, H, W, C] under weights theta (self.theta, or the tensors of the same
        keys given, e.g. theta after a differentiable step) and perturbation parameters phi.

        training: batch norm (and the perturbation's scale) use batch statistics and queue updates
        of the running ones; otherwise the running ones. noise_training overrides the mode of the
        perturbation's scale only (spec Q3: the source phi step has BN in evaluation mode and the
        scale in training mode). y [N, classes] (one-hot) is mixed along by mixup in training mode.
        """
        out = Out(logits=x, y=y)
        noise_training = training if noise_training is None else noise_training
        sites = [
            Site(self.arch.c_norm, float(self.shape[0]), lam, s, noise_training, out.updates)
            for s in self.site_stats
        ]
        t, noise, n_blocks = self.theta if theta is None else theta, self.noise, self.n_sites
        hook = iter(range(len(self.convs)))

        def conv(name: str, h: tf.Tensor, stride: int = 1) -> tf.Tensor:
            """conv (+ the linear/conv hooks, stride-1 convs of the blocks) -> batch norm."""
            w, b = t[f"{name}_w"], t.get(f"{name}_b")
            if stride == 1 and name != "stem":
                l = next(hook)
                f = noise.linear(phi, l, h, w, tf.zeros([w.shape[-1]], self.dtype) if b is None else b, draw)
                f, reg = noise.conv(phi, l, h, f, draw)
                if reg is not None:
                    out.regs.append(reg)
            else:
                f = tf.nn.conv2d(h, w, strides=stride, padding="SAME")
                f = f if b is None else tf.nn.bias_add(f, b)
            return self._bn(name, f, t, training, out.updates)

        h = x
        if isinstance(self.arch, ResNet):
            h = tf.nn.relu(conv("stem", h))
            for j, (cout, stride) in enumerate(self._blocks()):
                if training:
                    h, out.y = noise.mix(j, n_blocks, h, out.y, draw)
                f = tf.nn.relu(conv(f"b{j}_1", h, stride))
                f = conv(f"b{j}_2", f) + shortcut(h, cout, stride)
                h = tf.nn.relu(noise.act(phi, j, f, draw, sites[j]))
            h = tf.reduce_mean(h, axis=[1, 2])
        else:
            for j, pool in enumerate(self.arch.pools):
                if training:
                    h, out.y = noise.mix(j, n_blocks, h, out.y, draw)
                h = tf.nn.relu(noise.act(phi, j, conv(f"b{j}", h), draw, sites[j]))
                h = max_pool(h) if pool else h
            h = tf.reshape(h, [-1, self.feat_dim])
        logits = dense(h, t["dense_w"], t["dense_b"])
        out.logits, reg = noise.dense(phi, h, logits, draw)
        if reg is not None:
            out.regs.append(reg)
        return out

    def _bn(
        self, name: str, f: tf.Tensor, theta: Params, training: bool, updates: list[tf.Operation]
    ) -> tf.Tensor:
        """Batch norm with theta's scale and offset; training mode queues the running statistics'
        updates (the unbiased batch variance, as PyTorch)."""
        stats, gamma, beta = self.bn_stats[name], theta[f"{name}_gamma"], theta[f"{name}_beta"]
        if not training:
            return tf.nn.batch_normalization(f, stats["mean"], stats["var"], beta, gamma, BN_EPS)
        mean = tf.reduce_mean(f, axis=[0, 1, 2])
        var = tf.reduce_mean(tf.square(f - mean), axis=[0, 1, 2])
        n = tf.cast(tf.reduce_prod(tf.shape(f)[:3]), f.dtype)
        r = BN_MOMENTUM
        updates += [
            stats["mean"].assign((1 - r) * stats["mean"] + r * tf.stop_gradient(mean)),
            stats["var"].assign((1 - r) * stats["var"] + r * tf.stop_gradient(var * n / (n - 1))),
        ]
        return tf.nn.batch_normalization(f, mean, var, beta, gamma, BN_EPS)


def shortcut(h: tf.Tensor, cout: int, stride: int) -> tf.Tensor:
    """Option A: identity, or every stride-th pixel with the new channels zero-padded on both sides."""
    cin = h.shape[-1]
    if stride == 1 and cin == cout:
        return h
    h = h[:, ::stride, ::stride, :]
    pad = (cout - cin) // 2
    return tf.pad(h, [[0, 0], [0, 0], [0, 0], [pad, cout - cin - pad]])


def mc_probs(logits: tf.Tensor, samples: int) -> tf.Tensor:
    """The mean of the softmax over `samples` passes stacked on axis 0: [samples*N, K] -> [N, K]
    (spec 1.4: probabilities, not logits, are averaged)."""
    p = tf.nn.softmax(logits)
    return tf.reduce_mean(tf.reshape(p, tf.concat([[samples, -1], tf.shape(p)[1:]], 0)), axis=0)
