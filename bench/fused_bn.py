"""The "fused batch norm" lever: layers.batch_norm as one FusedBatchNormV3 op where it can be.

layers.batch_norm spells the statistics out (mean, squared deviations, rsqrt): about ten
elementwise ops and reductions per block, and many more in their first- and second-order
gradients. tf.compat.v1.nn.fused_batch_norm with is_training=True computes the same thing (batch
statistics, biased variance, epsilon inside the square root) in one kernel, FusedBatchNormGradV3
is its gradient, and TensorFlow differentiates that gradient again (exactly; checked in
tests/test_bench_torch_ref.py against layers.batch_norm). The op has no float64 kernel and no
notion of groups, so several MC samples (groups > 1) and float64 keep the explicit version.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import tensorflow as tf

import layers
import model


def batch_norm(x: tf.Tensor, offset: tf.Tensor, groups: int) -> tf.Tensor:
    """layers.batch_norm, fused when there is one group of float32/16 values."""
    if groups != 1 or x.dtype == tf.float64:
        return layers.batch_norm(x, offset, groups)
    y, _, _ = tf.compat.v1.nn.fused_batch_norm(
        x, tf.ones_like(offset), offset, epsilon=layers.BN_EPS, is_training=True
    )
    return y


@contextlib.contextmanager
def patched() -> Iterator[None]:
    """Graphs built inside use the fused batch norm (model.py calls batch_norm by this name)."""
    original = model.batch_norm
    model.batch_norm = batch_norm
    try:
        yield
    finally:
        model.batch_norm = original
