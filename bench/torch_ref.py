"""The benchmark's PyTorch reference: MAML and Meta-Dropout written the way PyTorch users write MAML.

Functional weights in a dict, `torch.autograd.grad(..., create_graph=True)` for the inner loop (as
learn2learn and higher do), NCHW tensors, `F.conv2d`, `F.batch_norm` with batch statistics, one
backward per task accumulating the meta-gradient, then Adam. It computes what model.py computes:

- 4 blocks of 3x3 SAME conv, the multiplicative noise f * softplus(mu + eps) with mu a conv of the
  block input (Eq. 5-6; a = mu on the query set, Eq. 4), batch norm with batch statistics and a
  learned offset only (eps 1e-3), ReLU, 2x2 max-pool; then a dense layer and, in the inner loop,
  the additive logit noise softplus(h @ w_phi + b_phi) * eps (one shared column);
- n_steps inner SGD steps with second-order terms kept, query loss with a = mu, meta-gradient of
  theta, batch-norm offsets and phi clipped elementwise to [-3, 3], Adam.

`from_tf` converts the TensorFlow model's weights (HWIO kernels, features flattened h, w, c) so both
can be run on the same values (tests/test_bench_torch_ref.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

CLIP = 3.0
BN_EPS = 1e-3
Params = dict[str, torch.Tensor]
Eps = Callable[[torch.Size], torch.Tensor] | None


class TorchMetaDrop:
    """MAML (noise=False) or Meta-Dropout (noise=True) on [N, hw*hw*channels] inputs (HWC order)."""

    def __init__(
        self,
        hw: int,
        channels: int,
        filters: int,
        way: int,
        noise: bool,
        inner_lr: float,
        n_steps: int,
        meta_lr: float = 1e-3,
        adam_eps: float = 1e-8,
        n_blocks: int = 4,
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.hw, self.channels, self.filters, self.way = hw, channels, filters, way
        self.noise, self.inner_lr, self.n_steps, self.n_blocks = noise, inner_lr, n_steps, n_blocks
        self.gen = torch.Generator(device=device).manual_seed(seed)
        kw = {"dtype": dtype, "device": device}
        side = hw // 2**n_blocks
        feat = side * side * filters

        def init(*shape: int, std: float = 0.02) -> torch.Tensor:
            return (torch.randn(*shape, generator=self.gen, **kw) * std).requires_grad_()

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(*shape, **kw, requires_grad=True)

        self.theta: Params = {}
        self.phi: Params = {}
        for l in range(n_blocks):
            cin = channels if l == 0 else filters
            self.theta[f"conv{l}_w"] = init(filters, cin, 3, 3)
            self.theta[f"conv{l}_b"] = zeros(filters)
            if noise:
                self.phi[f"conv{l}_w"] = init(filters, cin, 3, 3)
                self.phi[f"conv{l}_b"] = zeros(filters)
        self.theta["dense_w"] = init(way, feat)
        self.theta["dense_b"] = zeros(way)
        if noise:
            self.phi["dense_w"] = init(1, feat)
            self.phi["dense_b"] = zeros(1)
        self.bn = [zeros(filters) for _ in range(n_blocks)]
        self.opt = torch.optim.Adam(self.meta_params, lr=meta_lr, eps=adam_eps)

    @property
    def meta_params(self) -> list[torch.Tensor]:
        return list(self.theta.values()) + self.bn + list(self.phi.values())

    def randn(self, shape: torch.Size) -> torch.Tensor:
        return torch.randn(shape, generator=self.gen, dtype=self.bn[0].dtype, device=self.bn[0].device)

    def forward(self, x: torch.Tensor, theta: Params, n_samp: int = 1, eps: Eps = None) -> torch.Tensor:
        """Logits of x [N, D]; n_samp noisy passes stacked along the batch; eps=None: a = mu."""
        h = x.view(-1, self.hw, self.hw, self.channels).permute(0, 3, 1, 2)
        if n_samp > 1:
            h = h.repeat(n_samp, 1, 1, 1)
        for l in range(self.n_blocks):
            f = F.conv2d(h, theta[f"conv{l}_w"], theta[f"conv{l}_b"], padding=1)
            if self.noise:
                mu = F.conv2d(h, self.phi[f"conv{l}_w"], self.phi[f"conv{l}_b"], padding=1)
                f = f * F.softplus(mu if eps is None else mu + eps(mu.shape))
            h = F.max_pool2d(F.relu(self.batch_norm(f, self.bn[l], n_samp)), 2)
        h = h.flatten(1)
        logits = F.linear(h, theta["dense_w"], theta["dense_b"])
        if self.noise and eps is not None:
            sigma = F.softplus(F.linear(h, self.phi["dense_w"], self.phi["dense_b"]))
            logits = logits + sigma * eps(logits.shape)
        return logits

    @staticmethod
    def batch_norm(f: torch.Tensor, offset: torch.Tensor, groups: int) -> torch.Tensor:
        """Batch statistics per MC sample: the groups become channels of one F.batch_norm call. The
        scale is a tensor of ones, not None: CUDA's second-order batch-norm gradient needs one."""
        scale = torch.ones_like(offset).repeat(groups)
        if groups == 1:
            return F.batch_norm(f, None, None, scale, offset, training=True, eps=BN_EPS)
        n, c, hh, ww = f.shape
        g = f.view(groups, n // groups, c, hh, ww).transpose(0, 1).reshape(n // groups, groups * c, hh, ww)
        g = F.batch_norm(g, None, None, scale, offset.repeat(groups), training=True, eps=BN_EPS)
        return g.view(n // groups, groups, c, hh, ww).transpose(0, 1).reshape(n, c, hh, ww)

    def adapt(
        self, xtr: torch.Tensor, ytr: torch.Tensor, n_samp: int, eps: Eps, create_graph: bool
    ) -> Params:
        """n_steps SGD steps on the support loss averaged over n_samp noise samples (Eq. 3)."""
        if not self.noise:
            n_samp = 1
        theta = dict(self.theta)
        for _ in range(self.n_steps):
            logits = self.forward(xtr, theta, n_samp, eps if self.noise else None)
            loss = F.cross_entropy(logits, ytr.repeat(n_samp))
            grads = torch.autograd.grad(loss, list(theta.values()), create_graph=create_graph)
            theta = {k: w - self.inner_lr * g for (k, w), g in zip(theta.items(), grads)}
        return theta

    def task_loss(
        self, xtr: torch.Tensor, ytr: torch.Tensor, xte: torch.Tensor, yte: torch.Tensor, eps: Eps
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Query loss with a = mu (Eq. 4) after the second-order inner loop, and query accuracy."""
        theta = self.adapt(xtr, ytr, 1, eps, create_graph=True)
        logits = self.forward(xte, theta)
        return F.cross_entropy(logits, yte), (logits.argmax(1) == yte).double().mean()

    def meta_gradients(self, batch: dict[str, torch.Tensor], eps: Eps) -> tuple[float, list[float]]:
        """Mean query loss over the meta-batch; its gradient accumulates in .grad, one task at a time."""
        n_tasks = batch["xtr"].shape[0]
        losses, accs = [], []
        for t in range(n_tasks):
            loss, acc = self.task_loss(
                batch["xtr"][t], batch["ytr"][t], batch["xte"][t], batch["yte"][t], eps
            )
            (loss / n_tasks).backward()
            losses.append(loss.item())
            accs.append(acc.item())
        return float(np.mean(losses)), accs

    def train_step(self, batch: dict[str, torch.Tensor], eps: Eps = None) -> tuple[float, list[float]]:
        """One meta-training iteration: one noise sample per inner step (Section 3.1); eps=None: fresh."""
        self.opt.zero_grad()
        loss, accs = self.meta_gradients(batch, eps or self.randn)
        for p in self.meta_params:
            p.grad.clamp_(-CLIP, CLIP)
        self.opt.step()
        return loss, accs

    def evaluate(self, batch: dict[str, torch.Tensor], n_samp: int) -> list[float]:
        """Query accuracies after adapting with n_samp noise samples per inner step (Algorithm 2)."""
        accs = []
        for t in range(batch["xtr"].shape[0]):
            theta = self.adapt(batch["xtr"][t], batch["ytr"][t], n_samp, self.randn, create_graph=False)
            with torch.no_grad():
                logits = self.forward(batch["xte"][t], theta)
            accs.append((logits.argmax(1) == batch["yte"][t]).double().mean().item())
        return accs

    def load_tf(self, values: dict[str, np.ndarray]) -> None:
        """Set every weight from `from_tf` output (keys theta/<k>, bn/<l>, phi/<k>)."""
        with torch.no_grad():
            for group, params in (("theta", self.theta), ("phi", self.phi)):
                for k, p in params.items():
                    p.copy_(torch.as_tensor(values[f"{group}/{k}"]))
            for l, p in enumerate(self.bn):
                p.copy_(torch.as_tensor(values[f"bn/{l}"]))


def from_tf(theta: dict, bn: list, phi: dict, side: int) -> dict[str, np.ndarray]:
    """TensorFlow weight values in this module's layout: HWIO kernels to OIHW; dense [in, out] with
    inputs in (h, w, c) order, as NHWC features flatten, to [out, in] in (c, h, w) order (NCHW)."""
    out: dict[str, np.ndarray] = {}
    for group, params in (("theta", theta), ("phi", phi)):
        for k, v in params.items():
            v = np.asarray(v)
            if k.startswith("conv") and k.endswith("_w"):
                v = v.transpose(3, 2, 0, 1)
            elif k == "dense_w":
                v = v.reshape(side, side, -1, v.shape[1]).transpose(3, 2, 0, 1).reshape(v.shape[1], -1)
            out[f"{group}/{k}"] = np.ascontiguousarray(v)
    for l, v in enumerate(bn):
        out[f"bn/{l}"] = np.asarray(v)
    return out


def as_torch(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """A meta-batch of the TensorFlow layout (one-hot labels) for this module (class indices)."""
    return {k: torch.from_numpy(v.argmax(-1) if k[0] == "y" else v) for k, v in batch.items()}
