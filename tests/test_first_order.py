"""First-order MAML (--first_order): the meta-gradient with the inner gradients held constant."""

import json

import numpy as np
import pytest
import tensorflow as tf
from tiny import QUERY, SHOT, build, episodes, randomize

import episodic
import main
import noise
from layers import cross_entropy

SEED = np.array([5, 6])


def meta_gradients(first_order: bool, noise_name: str) -> tuple[dict, dict]:
    """d(query loss)/d(meta-parameters) through 2 inner steps, and the stop-gradient computation:
    the query loss's gradient at theta* fed back as a constant, whose gradient with respect to
    theta* is first-order MAML's gradient for theta (d theta* / d theta = I), and whose gradient
    with respect to the other meta-parameters (batch-norm offsets, phi) is their direct part."""
    with tf.Graph().as_default():
        model = build(noise_name, n_steps=2, first_order=first_order)
        ph = model.placeholders(1, SHOT, QUERY, "t")
        xte, yte = ph["xte"][0], ph["yte"][0]
        theta_star = model.adapt(ph["xtr"][0], ph["ytr"][0], n_samp=2)
        loss = cross_entropy(model.forward(xte, theta_star)[1], yte)
        fixed = {k: tf.compat.v1.placeholder(tf.float64, v.shape) for k, v in theta_star.items()}
        loss_fixed = cross_entropy(model.forward(xte, fixed)[1], yte)
        params = {p.op.name: p for p in model.meta_params}
        names = list(params)
        # theta's own gradient via theta*, the rest (bn offsets, phi) directly
        stop = {n: fixed[n[len("theta/") :]] if n.startswith("theta/") else p for n, p in params.items()}
        grads = tf.gradients(loss, list(params.values()))
        grads_fixed = tf.gradients(loss_fixed, list(stop.values()))
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            randomize(sess, model.meta_params)
            feed = {ph[k]: v for k, v in episodes(1).items()}
            feed[model.noise_seed] = SEED
            got = dict(zip(names, sess.run([g if g is not None else tf.zeros(()) for g in grads], feed)))
            feed.update({fixed[k]: v for k, v in sess.run(theta_star, feed).items()})
            ref = sess.run([g if g is not None else tf.zeros(()) for g in grads_fixed], feed)
    return got, {n: r + np.zeros_like(got[n]) for n, r in zip(names, ref)}


def test_first_order_meta_gradient_is_the_stop_gradient_one():
    # Meta-dropout: theta, batch-norm offsets and phi (phi's first-order part is tests/test_gradients.py's).
    first, stop = meta_gradients(True, "metadrop")
    second, _ = meta_gradients(False, "metadrop")
    for n in first:
        np.testing.assert_allclose(first[n], stop[n], rtol=1e-10, atol=1e-14, err_msg=n)
    # The second-order terms are there: theta's meta-gradient differs from the first-order one.
    for n in (n for n in first if n.startswith("theta/conv")):
        assert np.max(np.abs(second[n] - first[n])) > 1e-4 * np.max(np.abs(second[n])), n


def test_first_order_flag_reaches_the_model_and_config(tmp_path):
    args = main.parse_args(["--savedir", str(tmp_path), "--maml", "--first_order", "--way", "3"])
    assert args.first_order and not main.parse_args(["--savedir", str(tmp_path)]).first_order
    runner = episodic.Runner(args, (), {"image_shape": [16, 16, 1], "filters": 3})
    assert runner.model.first_order


def test_resume_with_another_first_order_is_refused(tmp_path):
    from run import UsageError, check_settings

    config = {**vars(main.parse_args(["--savedir", str(tmp_path), "--maml"])), "image_shape": [8, 8, 1]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    args = main.parse_args(["--savedir", str(tmp_path), "--maml", "--first_order"])
    with pytest.raises(UsageError, match="first_order"):
        check_settings(config, args)
    # A config written before the flag existed resumes as second order.
    old = {k: v for k, v in config.items() if k != "first_order"}
    check_settings(old, main.parse_args(["--savedir", str(tmp_path), "--maml"]))
    with pytest.raises(UsageError, match="first_order"):
        check_settings(old, args)


@pytest.mark.parametrize("noise_name", sorted(noise.PERTURBATIONS))
def test_first_order_trains_with_every_perturbation(noise_name):
    # With first order, parts of phi that act only inside the inner loop get no gradient at all
    # (None from tf.gradients): the Adam step keeps them and trains everything else.
    with tf.Graph().as_default():
        model = build(noise_name, n_steps=1, first_order=True)
        ph = model.placeholders(1, SHOT, QUERY, "t")
        loss, _ = model.meta_batch(ph, 1)
        reached = {
            p.name for p, g in zip(model.meta_params, tf.gradients(loss, model.meta_params)) if g is not None
        }
        train_op = model.train_op(loss, 1e-2, tf.compat.v1.train.get_or_create_global_step())
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            randomize(sess, model.meta_params)
            before = sess.run(model.meta_params)
            feed = {ph[k]: v for k, v in episodes(1).items()}
            feed[model.noise_seed] = SEED
            sess.run(train_op, feed)
            after = sess.run(model.meta_params)
    for p, a, b in zip(model.meta_params, before, after):
        assert np.any(a != b) == (p.name in reached) or "_b" in p.name, p.name
    assert any(np.any(a != b) for a, b in zip(before, after))
