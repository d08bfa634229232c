"""Functional layers: every weight is an explicit tensor passed in, so an inner step is `w - lr * g`.

Batch-norm statistics are computed explicitly (mean, then mean of squared deviations): `tf.nn.moments`
stops the gradient through the mean inside the variance, which breaks second-order meta-gradients.
"""

from __future__ import annotations

from lazy import tf

BN_EPS = 1e-3


def variable(name: str, shape: list[int], init: str, dtype: tf.DType) -> tf.Variable:
    """A weight of the paper's Section 4 setup: conv kernels truncated-normal(0.02), dense normal(0.02)."""
    initializers = {
        "conv": tf.compat.v1.truncated_normal_initializer(stddev=0.02),
        "dense": tf.compat.v1.random_normal_initializer(stddev=0.02),
        "zeros": tf.compat.v1.zeros_initializer(),
    }
    return tf.compat.v1.get_variable(name, shape, dtype=dtype, initializer=initializers[init])


def conv2d(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """3x3 convolution, stride 1, "SAME" padding, NHWC. The bias goes through BiasAdd: its gradient
    kernel sums over the batch 5x faster than a broadcast `+ b`'s reduce_sum, and oneDNN fuses both
    into the convolution's kernels (bench/RESULTS.md)."""
    return tf.nn.bias_add(tf.nn.conv2d(x, w, strides=1, padding="SAME"), b)


def batch_norm(x: tf.Tensor, offset: tf.Tensor, groups: int) -> tf.Tensor:
    """Transductive batch norm (statistics of the batch at hand, as in MAML), offset only.

    The batch holds `groups` independent forward passes (one per Monte-Carlo sample), stacked along
    axis 0; each gets its own statistics, as if run alone. One group of float32/16 values runs as one
    FusedBatchNormV3 kernel (faster meta-training, bench/RESULTS.md), whose gradient TensorFlow
    differentiates again exactly (tests/test_gradients.py checks it against the explicit version).
    """
    if groups != 1 or x.dtype == tf.float64:  # the fused kernel has no groups and no float64
        return explicit_batch_norm(x, offset, groups)
    y, _, _ = tf.compat.v1.nn.fused_batch_norm(
        x, tf.ones_like(offset), offset, epsilon=BN_EPS, is_training=True
    )
    return y


def explicit_batch_norm(x: tf.Tensor, offset: tf.Tensor, groups: int) -> tf.Tensor:
    """batch_norm spelled out: the mean, then the mean of squared deviations, per group."""
    shape = tf.shape(x)
    xg = tf.reshape(x, [groups, -1, shape[-1]])
    mean = tf.reduce_mean(xg, axis=1, keepdims=True)
    var = tf.reduce_mean(tf.square(xg - mean), axis=1, keepdims=True)
    xg = (xg - mean) * tf.math.rsqrt(var + BN_EPS)
    return tf.reshape(xg, shape) + offset


def masked_batch_norm(x: tf.Tensor, offset: tf.Tensor, groups: int, mask: tf.Tensor) -> tf.Tensor:
    """explicit_batch_norm with the moments of the rows where mask [N] is 1 (the real rows of an
    any-shot support set), the same mask in every group (x [groups*N, H, W, C]). Padding rows are
    normalised with them too and change nothing. No fused kernel takes a mask."""
    c = x.shape[-1]
    n = mask.shape[0]
    xg = tf.reshape(x, [groups, n, -1, c])
    m = tf.reshape(tf.cast(mask, x.dtype), [1, n, 1, 1])
    count = tf.reduce_sum(m) * tf.cast(tf.shape(xg)[2], x.dtype)
    mean = tf.reduce_sum(m * xg, axis=[1, 2], keepdims=True) / count
    var = tf.reduce_sum(m * tf.square(xg - mean), axis=[1, 2], keepdims=True) / count
    xg = (xg - mean) * tf.math.rsqrt(var + BN_EPS)
    return tf.reshape(xg, tf.shape(x)) + offset


def max_pool(x: tf.Tensor) -> tf.Tensor:
    """2x2 max-pool, stride 2, "VALID" padding."""
    return tf.nn.max_pool2d(x, ksize=2, strides=2, padding="VALID")


def dense(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    return tf.nn.bias_add(tf.matmul(x, w), b)


def cross_entropy(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Mean softmax cross-entropy against one-hot labels."""
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=logits))


def accuracy(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    correct = tf.equal(tf.argmax(logits, -1), tf.argmax(y, -1))
    return tf.reduce_mean(tf.cast(correct, logits.dtype))
