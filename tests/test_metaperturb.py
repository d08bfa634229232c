"""MetaPerturb's perturbation (spec M1-M7) against independent computations: P1-P6, P8."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

import noise

F64 = tf.float64
MP = noise.get("metaperturb")
SHAPES = {
    "k1_id": (3, 3, 1, 1),
    "k1_all": (3, 3, 1, 1),
    "k2_id": (3, 3, 1, 1),
    "k2_all": (3, 3, 1, 1),
    "K": (3, 3, 1, 4),
    "w": (10,),
}


def softplus(x):
    return np.logaddexp(0, x)


def random_phi(rng, scale: float = 0.5) -> dict:
    """phi values far from their N(0, 0.01^2) start, so every term matters."""
    return {k: scale * rng.standard_normal(s) for k, s in SHAPES.items()}


def tf_phi(values: dict) -> dict:
    return {k: tf.constant(v, F64) for k, v in values.items()}


def run(fetch, feed=None):
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        return sess.run(fetch, feed)


def test_phi_has_82_parameters_with_the_spec_shapes():
    with tf.Graph().as_default():
        phi = MP.init_phi([(1, 64)] * 4, 64, F64)
        assert {k: tuple(v.shape.as_list()) for k, v in phi.items()} == SHAPES
        assert sum(int(np.prod(v.shape)) for v in phi.values()) == 82
        values = run(phi)
    flat = np.concatenate([v.ravel() for v in values.values()])
    assert 0.005 < flat.std() < 0.02 and abs(flat.mean()) < 0.01  # N(0, 0.01^2)


# ---------------------------------------------------------------------------------------------
# P5: a numpy re-computation of M1-M6 with explicit loops


def conv3x3(u: np.ndarray, k: np.ndarray) -> np.ndarray:
    """u [H, W], k [3, 3]: cross-correlation with zero padding 1."""
    h, w = u.shape
    p = np.zeros((h + 2, w + 2))
    p[1:-1, 1:-1] = u
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            for i in range(3):
                for j in range(3):
                    out[y, x] += k[i, j] * p[y + i, x + j]
    return out


def equivariant_np(u: np.ndarray, k_id: np.ndarray, k_all: np.ndarray) -> np.ndarray:
    """u [B, H, W, C]."""
    out = np.zeros_like(u)
    for b in range(u.shape[0]):
        mean = np.zeros(u.shape[1:3])
        for c in range(u.shape[3]):
            mean += u[b, :, :, c] / u.shape[3]
        for c in range(u.shape[3]):
            out[b, :, :, c] = conv3x3(u[b, :, :, c], k_id) + conv3x3(mean, k_all)
    return out


def metaperturb_np(phi, h, eps, lam, c_norm, h_norm, clipval=100.0):
    B, H, W, C = h.shape
    e1 = equivariant_np(h, phi["k1_id"][:, :, 0, 0], phi["k1_all"][:, :, 0, 0])
    a = equivariant_np(np.maximum(e1, 0), phi["k2_id"][:, :, 0, 0], phi["k2_all"][:, :, 0, 0])
    z = softplus(a + eps)
    g = np.zeros((B, C, 4))
    for b in range(B):
        for c in range(C):
            for k in range(4):
                g[b, c, k] = np.maximum(conv3x3(h[b, :, :, c], phi["K"][:, :, 0, k]), 0).mean()
    s = np.zeros(C)
    for c in range(C):
        m = sum(g[b, c] for b in range(B)) / B
        v = sum((g[b, c] - m) ** 2 for b in range(B)) / (B - 1)
        feat = np.concatenate([m, v, [C / c_norm, H / h_norm]])
        s[c] = 1 / (1 + np.exp(-feat @ phi["w"]))
    return np.minimum(h * (1 + lam * (s * z - 1)), clipval), s, z


@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_matches_a_numpy_loop_implementation(lam):
    rng = np.random.default_rng(0)
    phi = random_phi(rng)
    h = rng.standard_normal((2, 3, 3, 2))
    eps = rng.standard_normal(h.shape)
    with tf.Graph().as_default():
        site = noise.Site(c_norm=4.0, h_norm=7.0, lam=lam)
        out = run(MP.perturb(tf_phi(phi), tf.constant(h), tf.constant(eps), 1, site))
    ref, _, _ = metaperturb_np(phi, h, eps, lam, 4.0, 7.0)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-14)
    # eps = 0: the deterministic pass
    with tf.Graph().as_default():
        out0 = run(MP.perturb(tf_phi(phi), tf.constant(h), None, 1, noise.Site(4.0, 7.0, lam=lam)))
    np.testing.assert_allclose(out0, metaperturb_np(phi, h, 0 * eps, lam, 4.0, 7.0)[0], rtol=1e-12)


def test_upper_clip_only():
    rng = np.random.default_rng(1)
    phi = random_phi(rng)
    h = 30 * rng.standard_normal((3, 4, 4, 2))
    eps = rng.standard_normal(h.shape)
    with tf.Graph().as_default():
        mp = noise.get("metaperturb", clipval=5.0)
        out = run(mp.perturb(tf_phi(phi), tf.constant(h), tf.constant(eps), 1, noise.Site(2.0, 4.0)))
    ref, _, _ = metaperturb_np(phi, h, eps, 1.0, 2.0, 4.0, clipval=5.0)
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    assert out.max() == 5.0 and out.min() < -5.0


# ---------------------------------------------------------------------------------------------
# P2-P4


def test_channel_permutation_equivariance():
    rng = np.random.default_rng(2)
    phi = random_phi(rng)
    h = rng.standard_normal((3, 5, 5, 6))
    eps = rng.standard_normal(h.shape)
    perm = rng.permutation(6)
    with tf.Graph().as_default():
        p = tf_phi(phi)
        site = noise.Site(6.0, 5.0)
        outs = [
            MP.perturb(p, tf.constant(h), tf.constant(eps), 1, site),
            MP.perturb(p, tf.constant(h[..., perm]), tf.constant(eps[..., perm]), 1, site),
            MP.scale(p, tf.constant(h), 1, site),
            MP.scale(p, tf.constant(h[..., perm]), 1, site),
        ]
        out, out_p, s, s_p = run(outs)
    np.testing.assert_allclose(out_p, out[..., perm], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(s_p, s[:, perm], rtol=1e-12)
    assert np.ptp(s) > 1e-3  # the channels' scales differ: the check is not vacuous


@pytest.mark.parametrize("c, side", [(1, 1), (3, 4), (16, 32), (64, 4), (512, 1), (512, 32)])
def test_any_channel_count_and_size(c, side):
    rng = np.random.default_rng(3)
    h = rng.standard_normal((2, side, side, c))
    with tf.Graph().as_default():
        d = noise.Draw(tf.constant([1, 2], tf.int64), itertools.count(1), 1, F64)
        out = run(MP.act(tf_phi(random_phi(rng)), 0, tf.constant(h), d, noise.Site(64.0, 32.0)))
    assert out.shape == h.shape and np.all(np.isfinite(out))


def test_batch_of_one_in_training_mode_is_a_clear_error():
    rng = np.random.default_rng(4)
    phi = random_phi(rng)
    with tf.Graph().as_default(), pytest.raises(ValueError, match="at least 2 examples"):
        MP.perturb(tf_phi(phi), tf.zeros([1, 4, 4, 3], F64), None, 1, noise.Site(3.0, 4.0))
    with tf.Graph().as_default(), pytest.raises(ValueError, match="at least 2 examples"):  # 2 groups of 1
        MP.perturb(tf_phi(phi), tf.zeros([2, 4, 4, 3], F64), None, 2, noise.Site(3.0, 4.0))
    with tf.Graph().as_default():  # batch size known only when it runs
        x = tf.compat.v1.placeholder(F64, [None, 4, 4, 3])
        out = MP.perturb(tf_phi(phi), x, None, 1, noise.Site(3.0, 4.0))
        with pytest.raises(tf.errors.InvalidArgumentError, match="at least 2 examples"):
            run(out, {x: np.ones([1, 4, 4, 3])})
        assert run(out, {x: np.ones([2, 4, 4, 3])}).shape == (2, 4, 4, 3)
    # Evaluation mode reads the running statistics: one example is fine.
    with tf.Graph().as_default():
        stats = MP.init_stats(3, F64)
        site = noise.Site(3.0, 4.0, stats=stats, training=False)
        assert run(MP.perturb(tf_phi(phi), tf.ones([1, 4, 4, 3], F64), None, 1, site)).shape == (1, 4, 4, 3)


def test_lambda_zero_is_the_identity_and_one_is_s_z_h():
    rng = np.random.default_rng(5)
    phi = random_phi(rng)
    h = rng.standard_normal((4, 5, 5, 3))
    eps = rng.standard_normal(h.shape)
    with tf.Graph().as_default():
        p, x, e = tf_phi(phi), tf.constant(h), tf.constant(eps)
        out0 = MP.perturb(p, x, e, 1, noise.Site(3.0, 5.0, lam=0.0))
        out1 = MP.perturb(p, x, e, 1, noise.Site(3.0, 5.0, lam=1.0))
        s = MP.scale(p, x, 1, noise.Site(3.0, 5.0))
        a = MP.noise_mean(p, x)
        out0, out1, s, a = run([out0, out1, s, a])
    np.testing.assert_array_equal(out0, h)
    np.testing.assert_allclose(out1, s[0] * softplus(a + eps) * h, rtol=1e-12)


def test_groups_have_their_own_batch_statistics():
    # Two Monte-Carlo samples stacked: each gets the scale it would get alone.
    rng = np.random.default_rng(6)
    phi = random_phi(rng)
    h1, h2 = rng.standard_normal((2, 3, 3, 4, 2))
    with tf.Graph().as_default():
        p = tf_phi(phi)
        both = MP.scale(p, tf.constant(np.concatenate([h1, h2])), 2, noise.Site(2.0, 3.0))
        alone = [MP.scale(p, tf.constant(h), 1, noise.Site(2.0, 3.0)) for h in (h1, h2)]
        both, a1, a2 = run([both, *alone])
    np.testing.assert_allclose(both, np.concatenate([a1, a2]), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# P6, P8


@pytest.mark.parametrize("a", [-3.0, 0.0, 0.7, 4.0])
def test_softplus_noise_moments_match_numerical_integration(a):
    n = 100_000
    with tf.Graph().as_default():
        d = noise.Draw(tf.constant([5, 6], tf.int64), itertools.count(1), 1, F64)
        z = run(tf.nn.softplus(a + d.normal([n])))
    grid = np.linspace(-12, 12, 200_001)
    pdf = np.exp(-0.5 * grid**2) / np.sqrt(2 * np.pi)
    mean = np.trapezoid(softplus(a + grid) * pdf, grid)
    var = np.trapezoid(softplus(a + grid) ** 2 * pdf, grid) - mean**2
    assert abs(z.mean() - mean) < 4 * np.sqrt(var / n)
    assert abs(z.var() - var) < 0.03 * var


@pytest.mark.parametrize("double_bessel", [0, 1])
def test_running_statistics(double_bessel):
    # Momentum 0.1 from (0, 1); evaluation mode reads them and leaves them alone.
    rng = np.random.default_rng(7)
    phi = random_phi(rng)
    mp = noise.get("metaperturb", double_bessel=double_bessel)
    batches = [rng.standard_normal((3, 4, 4, 2)) for _ in range(3)]
    with tf.Graph().as_default():
        p = tf_phi(phi)
        stats = mp.init_stats(2, F64)
        x = tf.compat.v1.placeholder(F64, [3, 4, 4, 2])
        train = noise.Site(2.0, 4.0, stats=stats)
        out_train = mp.perturb(p, x, None, 1, train)
        with tf.control_dependencies([out_train]):
            step = tf.group(train.updates)
        out_eval = mp.perturb(p, x, None, 1, noise.Site(2.0, 4.0, stats=stats, training=False))
        s_eval = mp.scale(p, x, 1, noise.Site(2.0, 4.0, stats=stats, training=False))
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            r0 = sess.run(stats)
            rm, rv = np.zeros((2, 4)), np.ones((2, 4))
            np.testing.assert_array_equal(r0["running_mean"], rm)
            np.testing.assert_array_equal(r0["running_var"], rv)
            for b in batches:
                sess.run(step, {x: b})
                g = np.stack(
                    [
                        [
                            [
                                np.maximum(conv3x3(b[i, :, :, c], phi["K"][:, :, 0, k]), 0).mean()
                                for k in range(4)
                            ]
                            for c in range(2)
                        ]
                        for i in range(3)
                    ]
                )
                v = g.var(0, ddof=1) * (1.5 if double_bessel else 1.0)
                rm, rv = 0.9 * rm + 0.1 * g.mean(0), 0.9 * rv + 0.1 * v
            got = sess.run(stats)
            np.testing.assert_allclose(got["running_mean"], rm, rtol=1e-12)
            np.testing.assert_allclose(got["running_var"], rv, rtol=1e-12)
            s = sess.run(s_eval, {x: batches[0]})
            sess.run(out_eval, {x: batches[1]})
            after = sess.run(stats)
            for k in got:  # unchanged by evaluation passes
                np.testing.assert_array_equal(after[k], got[k])
    feat = np.concatenate([rm, rv, np.ones((2, 1)), np.ones((2, 1))], 1)
    np.testing.assert_allclose(s[0], 1 / (1 + np.exp(-feat @ phi["w"])), rtol=1e-12)


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="clipval must be > 0"):
        noise.get("metaperturb", clipval=0)
    with pytest.raises(ValueError, match="double_bessel must be 0 or 1"):
        noise.get("metaperturb", double_bessel=2)
