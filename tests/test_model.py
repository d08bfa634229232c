"""Which passes are noisy, and the noise's distribution."""

import numpy as np
import pytest
import tensorflow as tf
from tiny import ARCH, QUERY, SHOT, build, episodes, randomize

import noise


def run_with_seeds(model, fetch, feed, seeds):
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        randomize(sess, model.meta_params)
        return [sess.run(fetch, {**feed, model.noise_seed: s}) for s in seeds]


SEEDS = [np.array([1, 2]), np.array([5, 6]), np.array([1, 2])]


def test_maml_is_deterministic():
    with tf.Graph().as_default():
        model = build("none")
        ph = model.placeholders(2, SHOT, QUERY, "t")
        loss, acc = model.meta_batch(ph, n_samp=4)
        feed = {ph[k]: v for k, v in episodes(2).items()}
        a, b, c = run_with_seeds(model, [loss, model.adapt(ph["xtr"][0], ph["ytr"][0], 4)], feed, SEEDS)
    assert a[0] == b[0] == c[0]
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k])


@pytest.mark.parametrize("noise_name", sorted(noise.PERTURBATIONS))
def test_query_loss_is_deterministic_and_inner_loop_noise_follows_the_seed(noise_name):
    # Through Model.meta_batch, the loss the outer loop sees. Without inner steps it is the query
    # pass alone, which must draw no noise (Eq. 4); with them, the inner loop's noise is a function
    # of the seed: the same seed gives the same loss, another seed another loss if the
    # perturbation is stochastic, the same loss if not.
    feed_data = episodes(2)
    losses = {}
    for n_steps in (0, 2):
        with tf.Graph().as_default():
            model = build(noise_name, n_steps=n_steps)
            ph = model.placeholders(2, SHOT, QUERY, "t")
            loss, _ = model.meta_batch(ph, n_samp=2)
            feed = {ph[k]: v for k, v in feed_data.items()}
            losses[n_steps] = run_with_seeds(model, loss, feed, SEEDS)
    a, b, c = losses[0]
    assert a == b == c
    a, b, c = losses[2]
    assert a == c
    if noise.get(noise_name).stochastic:
        assert abs(a - b) > 1e-9
    else:
        assert a == b


def test_metadrop_support_path_is_noisy_and_query_path_is_not():
    with tf.Graph().as_default():
        model = build("metadrop")
        ph = model.placeholders(1, SHOT, QUERY, "t")
        x = ph["xtr"][0]
        support = model.forward(x, model.theta, n_samp=1, stochastic=True)[1]
        query = model.forward(x, model.theta)[1]
        theta_star = model.adapt(x, ph["ytr"][0], n_samp=1)
        feed = {ph[k]: v for k, v in episodes(1).items()}
        a, b, c = run_with_seeds(model, [support, query, theta_star], feed, SEEDS)
    assert np.max(np.abs(a[0] - b[0])) > 1e-3  # other seed, other noise
    np.testing.assert_array_equal(a[0], c[0])  # same seed, same noise
    np.testing.assert_array_equal(a[1], b[1])  # deterministic: a = mu (Eq. 4)
    assert np.max(np.abs(a[2]["dense_w"] - b[2]["dense_w"])) > 1e-6  # the inner loop sees the noise


def test_softplus_noise_mean_matches_numerical_integration():
    # E[softplus(a)], a ~ N(mu, 1) (Eq. 5): the layer's Monte-Carlo mean against quadrature.
    mus = np.array([-2.0, -0.5, 0.0, 1.0, 3.0])
    n = 20000
    layer = noise.get("metadrop")
    with tf.Graph().as_default():
        model = build("metadrop")
        # With f = 1 the block's output is z = softplus(a) itself; mu = bias of phi's conv (zero kernel).
        phi = dict(model.phi)
        phi["conv0_w"] = tf.zeros_like(phi["conv0_w"])
        phi["conv0_b"] = tf.constant(np.resize(mus, ARCH.filters), tf.float64)
        h = tf.zeros([n, 1, 1, 1], tf.float64)
        f = tf.ones([n, 1, 1, ARCH.filters], tf.float64)
        z, _ = layer.conv(phi, 0, h, f, model.draw(1, True))
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            samples = sess.run(z, {model.noise_seed: [11, 12]}).reshape(n, ARCH.filters)
    grid = np.linspace(-12, 12, 200001)
    pdf = np.exp(-0.5 * grid**2) / np.sqrt(2 * np.pi)
    for j in range(ARCH.filters):
        mu = np.resize(mus, ARCH.filters)[j]
        exact = np.trapezoid(np.logaddexp(0, mu + grid) * pdf, grid)
        mc, se = samples[:, j].mean(), samples[:, j].std() / np.sqrt(n)
        assert abs(mc - exact) < 4 * se, (mu, mc, exact, se)
