"""The transfer protocol's networks (nets.py): sizes, batch norm's running statistics, P10, P13."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

import nets
import noise

F64 = tf.float64


def build(model: str, noise_name: str = "metaperturb", shape=(32, 32, 3), classes: int = 10):
    """A network and phi in a fresh graph's scopes (call inside a Graph)."""
    perturbation = noise.get(noise_name)
    with tf.compat.v1.variable_scope("net"):
        net = nets.Network(nets.architecture(model), shape, classes, perturbation, F64)
    with tf.compat.v1.variable_scope("phi"):
        phi = perturbation.init_phi(net.convs, net.feat_dim, F64)
    return net, phi


def draw(seed=(1, 2)) -> noise.Draw:
    return noise.Draw(tf.constant(seed, tf.int64), itertools.count(1), 1, F64)


def n_params(variables) -> int:
    return sum(int(np.prod(v.shape)) for v in variables)


def test_parameter_counts():
    # ResNet-20 on 10 classes, counted by hand: stem 432 + BN 32; stage 1: 3 x (2 x 2304 + 64);
    # stage 2: 4608 + 9216 + 128, then 2 x (2 x 9216 + 128); stage 3: 18432 + 36864 + 256, then
    # 2 x (2 x 36864 + 256); linear 650. Total 269,722.
    with tf.Graph().as_default():
        net, _ = build("resnet20")
        assert n_params(net.theta.values()) == 269_722
    # Conv4 of width 64 on 32x32x3, 5 classes: 4 convs with bias, BN scale and offset, linear on 2x2x64.
    with tf.Graph().as_default():
        net, _ = build("conv4_64", classes=5)
        convs = (27 * 64 + 64) + 3 * (576 * 64 + 64)
        assert n_params(net.theta.values()) == convs + 4 * 128 + 256 * 5 + 5
    for model, blocks in (("resnet32", 15), ("resnet44", 21), ("resnet56", 27)):  # 6n+2 layers, 3n blocks
        with tf.Graph().as_default():
            assert build(model)[0].n_sites == blocks


@pytest.mark.parametrize("model, sites", [("conv4_32", 4), ("conv6_16", 6), ("vgg9", 8), ("resnet20", 9)])
def test_same_phi_runs_in_every_architecture(model, sites):
    # P13: one phi (82 values), one pair of running statistics per insertion point.
    with tf.Graph().as_default():
        net, phi = build(model)
        assert n_params(phi.values()) == 82
        assert net.n_sites == sites
        names = [v.op.name for v in tf.compat.v1.global_variables() if "running_" in v.op.name]
        assert len(names) == 2 * sites
        x = tf.constant(np.random.default_rng(0).random([3, 32, 32, 3]))
        train = net.forward(x, phi, True, draw())
        test = net.forward(x, phi, False, draw())
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            a, b = sess.run([train.logits, test.logits])
    assert a.shape == b.shape == (3, 10) and np.isfinite(a).all() and np.isfinite(b).all()
    # Every batch norm and every perturbation point queues its updates, in training mode only.
    assert len(train.updates) == 2 * len(net.bn_stats) + 2 * sites and not test.updates


def test_shared_phi_across_two_architectures_is_one_set_of_variables():
    with tf.Graph().as_default():
        perturbation = noise.get("metaperturb")
        with tf.compat.v1.variable_scope("phi"):
            phi = perturbation.init_phi([], 0, F64)
        outs = []
        for name in ("conv4_8", "resnet20"):
            with tf.compat.v1.variable_scope(name):
                net = nets.Network(nets.architecture(name), (16, 16, 3), 4, perturbation, F64)
            x = tf.constant(np.random.default_rng(1).random([2, 16, 16, 3]))
            outs.append(net.forward(x, phi, True, draw()).logits)
        loss = sum(tf.reduce_sum(o) for o in outs)
        grads = tf.gradients(loss, list(phi.values()))
        assert all(g is not None for g in grads)
        assert len([v for v in tf.compat.v1.global_variables() if v.op.name.startswith("phi/")]) == 6


def test_batch_norm_running_statistics_and_evaluation_mode():
    rng = np.random.default_rng(2)
    x = rng.standard_normal([4, 16, 16, 3])
    with tf.Graph().as_default():
        net, phi = build("conv4_4", "none", shape=(16, 16, 3))
        train = net.forward(tf.constant(x), phi, True, None)
        with tf.control_dependencies([train.logits]):
            step = tf.group(train.updates)
        test = net.forward(tf.constant(x), phi, False, None)
        f = tf.nn.bias_add(tf.nn.conv2d(x, net.theta["b0_w"], 1, "SAME"), net.theta["b0_b"])
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            before = sess.run(test.logits)
            f0 = sess.run(f)
            sess.run(step)
            st = sess.run(net.bn_stats["b0"])
            sess.run(test.logits)
            assert np.array_equal(sess.run(net.bn_stats["b0"])["mean"], st["mean"])  # eval leaves them
    flat = f0.reshape(-1, 4)
    np.testing.assert_allclose(st["mean"], 0.1 * flat.mean(0), rtol=1e-10)
    np.testing.assert_allclose(st["var"], 0.9 + 0.1 * flat.var(0, ddof=1), rtol=1e-10)
    assert before.shape == (4, 10)


def test_forward_with_other_weights():
    # theta given to forward (e.g. after a differentiable step) stands for every weight, batch norm's
    # scale and offset included: the variables' values do not matter, and loading theta's values
    # into them gives the same logits.
    rng = np.random.default_rng(4)
    with tf.Graph().as_default():
        net, phi = build("conv4_4", shape=(16, 16, 3))
        x = tf.constant(rng.standard_normal([3, 16, 16, 3]))
        other = {k: tf.constant(rng.standard_normal(v.shape.as_list())) for k, v in net.theta.items()}
        given = net.forward(x, phi, True, draw(), theta=other).logits
        own = net.forward(x, phi, True, draw()).logits
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            before = sess.run(given)
            sess.run([v.assign(other[k]) for k, v in net.theta.items()])
            after, loaded = sess.run([given, own])
    np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(after, loaded)


def test_option_a_shortcut():
    h = np.random.default_rng(3).random([2, 4, 4, 16])
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        out = sess.run(nets.shortcut(tf.constant(h), 32, 2))
        same = sess.run(nets.shortcut(tf.constant(h), 16, 1))
    assert out.shape == (2, 2, 2, 32)
    np.testing.assert_array_equal(out[..., 8:24], h[:, ::2, ::2])
    assert not out[..., :8].any() and not out[..., 24:].any()
    np.testing.assert_array_equal(same, h)


def test_unknown_model_and_vanishing_inputs():
    for bad in ("resnet21", "conv4", "conv4_x", "conv4_0", "vgg11"):
        with pytest.raises(ValueError, match="unknown model"):
            nets.architecture(bad)
    assert nets.architecture("conv6_7").widths == (7,) * 6
    with tf.Graph().as_default(), pytest.raises(ValueError, match="vanish"):
        nets.Network(nets.architecture("vgg9"), (16, 16, 3), 3, noise.get("none"), F64)


def test_mc_prediction_averages_probabilities():
    # P10: the mean of the softmax vectors, not the softmax of the mean logits; S copies of one
    # draw give that draw's probabilities.
    logits = np.array([[[20.0, 0.0, 0.0]], [[0.0, 3.0, 0.0]], [[0.0, 3.0, 0.0]]])  # [S=3, N=1, K=3]
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        p = sess.run(nets.mc_probs(tf.constant(logits.reshape(3, 3)), 3))
        one = sess.run(nets.mc_probs(tf.constant(np.tile(logits[1], [5, 1])), 5))
    soft = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(p, soft.mean(0), rtol=1e-12)
    assert p.argmax() == 1  # two of three samples are confident in class 1
    assert logits.mean(0).argmax() == 0  # averaging logits would pick the one large logit
    np.testing.assert_allclose(one, soft[1], rtol=1e-12)
