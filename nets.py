"""The networks of MetaPerturb's transfer protocol (spec 1.1, 1.3), chosen by name (`--model`).

Conv4/Conv6 (`conv4_<width>`, `conv6_<width>`), VGG9 (`vgg9`) and CIFAR-style ResNet-20/32/44/56
(`resnet20`, ...; option-A shortcuts). Every weight is an explicit tensor of `Network.theta`, given to a
functional forward; batch norm keeps running statistics (PyTorch's: momentum 0.1, eps 1e-5; batch
statistics in training mode, running ones in evaluation mode). The perturbation's hooks (noise.py) act
where the paper's code puts MetaPerturb: after batch norm (and the residual sum), before the ReLU
(`act`, once per plain block or residual block, never on the ResNet stem); `mix` at each block's input,
`linear`/`conv` at each conv of the blocks, `dense` on the logits.

Below the networks, the transfer protocol's graphs (transfer.py builds them): the input pipeline
(`images`), source meta-training of phi over several tasks (`Source`) and target training (`Target`).
"""

from __future__ import annotations

import argparse
import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from layers import dense, max_pool
from lazy import tf
from noise import Draw, Params, Perturbation, Site

BN_EPS = 1e-5
BN_MOMENTUM = 0.1
WEIGHT_DECAY = 5e-4  # L2 added to every gradient, as torch.optim.Adam(weight_decay=5e-4)
BETAS, EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, as the original uses them
# The networks, inputs and optimiser of the transfer protocol as the original's (docs/metaperturb.md):
# version 2 pads the ResNets' convs as PyTorch, the random crops as its dataloader, resizes as PIL and
# steps as torch.optim.Adam. transfer.py records it in config.json; runs of another version do not resume.
PIPELINE_VERSION = 2


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
        dtype: object = None,
    ) -> None:
        dtype = dtype or tf.float32  # not a default value: importing nets leaves TensorFlow unloaded
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
                f = conv3x3(h, w, stride)
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


def conv3x3(h: tf.Tensor, w: tf.Tensor, stride: int) -> tf.Tensor:
    """h [N, H, W, Cin] convolved with w [3, 3, Cin, Cout] at `stride`, zero-padded by one pixel on
    every side (PyTorch's padding=1): [N, floor((H - 1) / stride) + 1, ..., Cout]. At stride 2 the
    output's pixel i is centred on input pixel 2i, where the option-A shortcut samples (TensorFlow's
    "SAME" would pad an even side 0 before and 1 after and centre it on 2i + 1)."""
    return tf.nn.conv2d(tf.pad(h, [[0, 0], [1, 1], [1, 1], [0, 0]]), w, strides=stride, padding="VALID")


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


# ---------------------------------------------------------------------------------------------
# The transfer protocol's graphs: inputs, source meta-training (Source), target training (Target)


@dataclass
class Inputs:
    x: tf.Tensor  # [N, H*W*C] images in [0, 1] as stored
    y: tf.Tensor  # [N] int labels
    seed: tf.Tensor  # [2] noise and augmentation seed


def inputs(dim: int, name: str) -> Inputs:

    return Inputs(
        tf.compat.v1.placeholder(tf.float32, [None, dim], name=f"{name}_x"),
        tf.compat.v1.placeholder(tf.int64, [None], name=f"{name}_y"),
        tf.compat.v1.placeholder(tf.int64, [2], name=f"{name}_seed"),
    )


def crop_padding(size: int) -> int:
    """Pixels of black around a size x size image before its random crop (the original's
    dataloader, spec 2.4): 4 at 32 px, 8 at every other size."""
    return 4 if size == 32 else 8


def images(
    x: tf.Tensor, shape: tuple[int, int, int], size: int, augment: str, seed: tf.Tensor | None
) -> tf.Tensor:
    """[N, D] in [0, 1] -> [N, size, size, C] in [-1, 1], as the original's torchvision pipeline:
    resized (bilinear with antialiasing, within PIL's uint8 rounding of its bilinear, bench/resize.py);
    with a seed, a random crop of the image padded with crop_padding(size) black pixels (and a
    horizontal flip, `crop_flip`) per image; then normalised, (x - 0.5) / 0.5, so padding is -1."""

    h = tf.reshape(x, [-1, *shape])
    if shape[0] != size or shape[1] != size:
        h = tf.image.resize(h, [size, size], antialias=True)
    if seed is not None and augment != "none":
        h = random_crop(h, size, crop_padding(size), seed)
        if augment == "crop_flip":
            flip = tf.random.stateless_uniform(
                tf.stack([tf.shape(h)[0], 1, 1, 1]), tf.random.experimental.stateless_fold_in(seed, 2)
            )
            h = tf.where(flip < 0.5, tf.reverse(h, axis=[2]), h)
    return (h - 0.5) / 0.5


def random_crop(h: tf.Tensor, size: int, pad: int, seed: tf.Tensor) -> tf.Tensor:
    """Per image of h [N, size, size, C], the size x size window at offsets drawn uniformly from
    0..2 pad (rows and columns) of the image zero-padded by `pad` on every side."""
    n = tf.shape(h)[0]
    padded = tf.pad(h, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    full = size + 2 * pad - 1
    off = tf.random.stateless_uniform(
        tf.stack([n, 2]),
        tf.random.experimental.stateless_fold_in(seed, 1),
        minval=0,
        maxval=2 * pad + 1,
        dtype=tf.int32,
    )
    off = tf.cast(off, tf.float32)
    boxes = tf.concat([off, off + size - 1], axis=1) / full  # (y1, x1, y2, x2): pixel-exact crops
    return tf.image.crop_and_resize(padded, boxes, tf.range(n), [size, size], method="nearest")


def make_draw(seed: tf.Tensor, dtype: object = None) -> object:
    """The noise of one pass, a function of the batch's seed."""

    return Draw(tf.random.experimental.stateless_fold_in(seed, 3), itertools.count(1), 1, dtype or tf.float32)


def decayed(
    grads: list[tf.Tensor | None], params: list[tf.Variable]
) -> tuple[list[tf.Tensor], list[tf.Variable]]:
    """grad + weight decay * param, and param, for the parameters the loss reaches (torch.optim.Adam's
    weight_decay: L2 added to the gradient)."""
    reached = [(g + WEIGHT_DECAY * p, p) for g, p in zip(grads, params) if g is not None]
    return [g for g, _ in reached], [p for _, p in reached]


def adam(
    p: tf.Tensor, m: tf.Tensor, v: tf.Tensor, g: tf.Tensor, t: tf.Tensor, lr: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """torch.optim.Adam's step t (counted from 1) of parameter p with moments m, v on gradient g
    (Kingma & Ba 2015, Alg. 1, with eps added to sqrt(v_hat) as PyTorch does; TensorFlow's Adam adds
    it to sqrt(v), eps / sqrt(1 - b2^t) in these terms): m' = b1 m + (1 - b1) g,
    v' = b2 v + (1 - b2) g^2, p' = p - lr / (1 - b1^t) m' / (sqrt(v') / sqrt(1 - b2^t) + eps).
    Returns (p', m', v'), tensors differentiable in g (and p) of p's dtype; the bias corrections
    in float64, as PyTorch's Python floats."""
    (b1, b2), dtype = BETAS, p.dtype
    t64 = tf.cast(t, tf.float64)
    c1, c2 = (tf.cast(1 - tf.pow(tf.constant(b, tf.float64), t64), dtype) for b in (b1, b2))
    m1 = b1 * m + (1 - b1) * g
    v1 = b2 * v + (1 - b2) * tf.square(g)
    # sqrt(v') with a finite derivative at v' = 0 (g = v = 0; that of the step is then lr / (c1 eps))
    sqrt_v1 = tf.where(v1 > 0, tf.sqrt(tf.where(v1 > 0, v1, tf.ones_like(v1))), tf.zeros_like(v1))
    return p - tf.cast(lr, dtype) / c1 * m1 / (sqrt_v1 / tf.sqrt(c2) + EPS), m1, v1


@dataclass
class AdamStep:
    """One Adam step's new values: parameters, moments and step count."""

    params: list[tf.Tensor]
    m: list[tf.Tensor]
    v: list[tf.Tensor]
    t: tf.Tensor


class Adam:
    """torch.optim.Adam over `params` (their gradients with weight decay added: `decayed`): moments
    m, v per parameter and the step count t, variables in variable scope `name`. `step` gives the
    step's values as tensors (differentiable: the second-order source step); `assign` applies them,
    `apply` both: the applied and the differentiated step are one computation (`adam`)."""

    def __init__(self, params: list[tf.Variable], name: str) -> None:
        self.params = params
        with tf.compat.v1.variable_scope(name):
            self.t = const("t", [], 0.0, params[0].dtype, trainable=False)
            self.m, self.v = (
                [const(f"{p.op.name}/{k}", p.shape.as_list(), 0.0, p.dtype, trainable=False) for p in params]
                for k in ("m", "v")
            )

    def step(self, grads: list[tf.Tensor], lr: tf.Tensor) -> AdamStep:
        """The values after one step on grads (one per parameter, in order)."""
        t = self.t + 1
        new = [adam(p, m, v, g, t, lr) for p, m, v, g in zip(self.params, self.m, self.v, grads)]
        params, m, v = (list(values) for values in zip(*new))
        return AdamStep(params, m, v, t)

    def assign(self, new: AdamStep) -> tf.Operation:
        """Op: the variables take the values of `new`."""
        targets = [*self.params, *self.m, *self.v, self.t]
        values = [*new.params, *new.m, *new.v, new.t]
        return tf.group(*[var.assign(x) for var, x in zip(targets, values)])

    def apply(self, grads: list[tf.Tensor], lr: tf.Tensor) -> tf.Operation:
        """Op: one step on grads (one per parameter, in order)."""
        return self.assign(self.step(grads, lr))


def cross_entropy(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:

    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=logits))


class Source:
    """The joint meta-training graph of T tasks (spec 2.3): per task a network, its Adam and two
    inputs (training and validation batch); phi shared, one Adam. First order: run theta_op (training
    feeds), then phi_op (validation feeds). Second order (args.second_order, Q5): phi_op alone, both
    feeds: phi's gradient through theta_t' = theta_next (Adam.step), then theta_t takes that step."""

    def __init__(
        self,
        args: argparse.Namespace,
        shape: tuple[int, int, int],
        n_classes: list[int],
        perturbation: Perturbation,
        dtype: object = None,
    ) -> None:

        dtype = dtype or tf.float32
        self.lr = tf.compat.v1.placeholder_with_default(tf.constant(args.lr, dtype), [], name="lr")
        arch, size, dim = architecture(args.model), args.img_size, int(np.prod(shape))
        self.nets: list[Network] = []
        for t, k in enumerate(n_classes):
            with tf.compat.v1.variable_scope(f"task{t}"):
                self.nets.append(Network(arch, (size, size, shape[2]), k, perturbation, dtype))
        with tf.compat.v1.variable_scope("phi"):
            self.phi = perturbation.init_phi([], 0, dtype)
        self.train_in = [inputs(dim, f"train{t}") for t in range(len(n_classes))]
        self.val_in = [inputs(dim, f"val{t}") for t in range(len(n_classes))]
        self.second_order = args.second_order
        self.theta_ops, self.val_losses, self.train_losses = [], [], []
        self.theta_next: list[Params] = []  # second order: each theta_t' as a function of phi
        self.theta_adams: list[Adam] = []
        steps = []  # second order: per task (Adam, its step, train updates), applied after phi's gradient
        for t, (net, tr, va) in enumerate(zip(self.nets, self.train_in, self.val_in)):
            out = net.forward(
                self.image(tr, shape, size, args.augment, dtype), self.phi, True, make_draw(tr.seed, dtype)
            )
            loss = cross_entropy(out.logits, tf.one_hot(tr.y, net.n_classes, dtype=dtype))
            theta_vars = list(net.theta.values())
            grads, params = decayed(tf.gradients(loss, theta_vars), theta_vars)
            opt = Adam(params, f"adam{t}")
            self.theta_adams.append(opt)
            theta, after = None, []  # first order: the validation pass at the variables theta_t
            if self.second_order:  # at theta_t'(phi), after the training pass's updates
                step = opt.step(grads, self.lr)
                key = {id(p): k for k, p in net.theta.items()}
                theta = {**net.theta, **{key[id(p)]: new for p, new in zip(params, step.params)}}
                after = out.updates
                self.theta_next.append(theta)
                steps.append((opt, step, out.updates))
            else:
                with tf.control_dependencies(out.updates):
                    self.theta_ops.append(opt.apply(grads, self.lr))
            self.train_losses.append(loss)
            # phi's step: BN in evaluation mode, the scale in training mode (spec 1.4, Q3), the new theta_t.
            with tf.control_dependencies(after):
                vout = net.forward(
                    self.image(va, shape, size, args.augment, dtype),
                    self.phi,
                    False,
                    make_draw(va.seed, dtype),
                    noise_training=True,
                    theta=theta,
                )
            self.val_losses.append(
                (cross_entropy(vout.logits, tf.one_hot(va.y, net.n_classes, dtype=dtype)), vout.updates)
            )
        phi = list(self.phi.values())
        per_task = [tf.gradients(loss, phi) for loss, _ in self.val_losses]
        self.phi_grads = [tf.add_n(gs) / len(per_task) for gs in zip(*per_task)]  # first or second order (Q5)
        val_updates = [u for _, ups in self.val_losses for u in ups]
        # Second order: theta_t takes the step theta_t' once phi's gradient (which reads theta_t and
        # Adam's state) is computed.
        for opt, step, ups in steps:
            with tf.control_dependencies([*self.phi_grads, *val_updates, *ups]):
                self.theta_ops.append(opt.assign(step))
        grads, phi = decayed(self.phi_grads, phi)
        self.phi_adam = Adam(phi, "adam_phi")
        with tf.control_dependencies(val_updates + (self.theta_ops if steps else [])):
            self.phi_op = self.phi_adam.apply(grads, self.lr)
        self.theta_op = tf.group(self.theta_ops)

    @staticmethod
    def image(i: Inputs, shape: tuple[int, int, int], size: int, augment: str, dtype: object) -> tf.Tensor:

        return tf.cast(images(i.x, shape, size, augment, i.seed), dtype)


class Target:
    """Target training (spec 2.4): one network; phi frozen (transferred) or trained with theta."""

    def __init__(
        self,
        args: argparse.Namespace,
        shape: tuple[int, int, int],
        n_classes: int,
        perturbation: Perturbation,
    ) -> None:

        size, dim = args.img_size, int(np.prod(shape))
        with tf.compat.v1.variable_scope("net"):
            self.net = Network(architecture(args.model), (size, size, shape[2]), n_classes, perturbation)
        with tf.compat.v1.variable_scope("phi"):
            self.phi_vars = perturbation.init_phi(self.net.convs, self.net.feat_dim, tf.float32)
        # A transferred phi is frozen: no gradient reaches it (stop_gradient) and no optimiser holds it.
        frozen = perturbation.transferred
        phi = {k: tf.stop_gradient(v) for k, v in self.phi_vars.items()} if frozen else self.phi_vars
        self.lam = tf.compat.v1.placeholder(tf.float32, [], name="lam")
        self.lr = tf.compat.v1.placeholder(tf.float32, [], name="lr")
        self.train_in, self.test_in = inputs(dim, "train"), inputs(dim, "test")
        tr = self.train_in
        out = self.net.forward(
            images(tr.x, shape, size, args.augment, tr.seed),
            phi,
            True,
            make_draw(tr.seed),
            self.lam,
            y=tf.one_hot(tr.y, n_classes),
        )
        self.loss = cross_entropy(out.logits, out.y) + tf.add_n([tf.constant(0.0), *out.regs])
        # the training batch's accuracy against its (possibly mixed) labels' argmax: the progress bar's
        self.acc = tf.reduce_mean(
            tf.cast(tf.equal(tf.argmax(out.logits, 1), tf.argmax(out.y, 1)), tf.float32)
        )
        self.params = list(self.net.theta.values()) + ([] if frozen else list(self.phi_vars.values()))
        self.step = tf.compat.v1.train.get_or_create_global_step()
        grads, params = decayed(tf.gradients(self.loss, self.params), self.params)
        self.adam = Adam(params, "adam")
        with tf.control_dependencies(out.updates):
            update = self.adam.apply(grads, self.lr)
        with tf.control_dependencies([update]):
            self.train_op = self.step.assign_add(1)
        te = self.test_in
        stochastic = make_draw(te.seed) if perturbation.stochastic else None
        test = self.net.forward(images(te.x, shape, size, "none", None), phi, False, stochastic, self.lam)
        self.probs = tf.nn.softmax(test.logits)
