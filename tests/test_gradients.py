"""Meta-gradients through the inner loop against central finite differences (float64)."""

import numpy as np
import pytest
import tensorflow as tf
from tiny import QUERY, SHOT, build, check_directional_fd, episodes, randomize

import model as model_module
import noise
from layers import cross_entropy, explicit_batch_norm
from model import Arch, Model

SEED = np.array([3, 4])  # fixes every noise draw


def fd_check(metasgd: bool, noise_name: str) -> None:
    with tf.Graph().as_default():
        model = build(noise_name, metasgd=metasgd, inner_lr=0.5 if not metasgd else 0.3)
        ph = model.placeholders(2, SHOT, QUERY, "t")
        loss, _ = model.meta_batch(ph, n_samp=2)
        params = model.meta_params
        grads = tf.gradients(loss, params)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            randomize(sess, [p for p in params if not p.name.startswith("lr/")])
            feed = {ph[k]: v for k, v in episodes(2).items()}
            feed[model.noise_seed] = SEED
            check_directional_fd(sess, params, sess.run(grads, feed), loss, feed)


@pytest.mark.parametrize("noise_name", sorted(noise.PERTURBATIONS))
def test_meta_gradient_matches_finite_differences(noise_name):
    # theta, batch-norm offsets and phi, through 2 inner steps with 2 MC samples each; every
    # registered perturbation (phi adapted in the inner loop or not, regularizers, mixed labels).
    fd_check(metasgd=False, noise_name=noise_name)


def test_metasgd_meta_gradient_matches_finite_differences():
    # Meta-SGD's per-entry step sizes get their gradient through the inner loop only.
    fd_check(metasgd=True, noise_name="metadrop")


def run_grads(sess, loss, params: dict, feed: dict) -> dict:
    """d loss / d params, zeros where the graph has no path."""
    grads = tf.gradients(loss, list(params.values()))
    out = {}
    for (k, p), g in zip(params.items(), grads):
        out[k] = np.zeros(p.shape) if g is None else sess.run(g, feed)
    return out


def phi_gradients(first_order: bool) -> tuple[dict, dict]:
    """phi's meta-gradient, and the part of it that does not pass through the inner loop."""
    with tf.Graph().as_default():
        model = build("metadrop", first_order=first_order)
        ph = model.placeholders(1, SHOT, QUERY, "t")
        xte, yte = ph["xte"][0], ph["yte"][0]
        theta_star = model.adapt(ph["xtr"][0], ph["ytr"][0], n_samp=2)
        loss = cross_entropy(model.forward(xte, theta_star)[1], yte)
        # The query loss at the same theta* values, theta* held constant: phi's direct path only.
        fixed = {k: tf.compat.v1.placeholder(tf.float64, v.shape) for k, v in theta_star.items()}
        loss_fixed = cross_entropy(model.forward(xte, fixed)[1], yte)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            randomize(sess, model.meta_params)
            feed = {ph[k]: v for k, v in episodes(1).items()}
            feed[model.noise_seed] = SEED
            full = run_grads(sess, loss, model.phi, feed)
            feed.update({fixed[k]: v for k, v in sess.run(theta_star, feed).items()})
            direct = run_grads(sess, loss_fixed, model.phi, feed)
    return full, direct


def test_phi_meta_gradient_through_inner_loop_needs_second_order_terms():
    first, direct_first = phi_gradients(first_order=True)
    full, direct_full = phi_gradients(first_order=False)
    for k in full:
        # Without second-order terms, phi's meta-gradient is only its direct query-path part
        # (a = mu in Eq. 4); through the inner loop it is exactly zero.
        np.testing.assert_allclose(first[k], direct_first[k], rtol=1e-10, atol=1e-14)
        # With them, the inner-loop part is there for every phi entry.
        inner = full[k] - direct_full[k]
        assert np.max(np.abs(inner)) > 1e-6, k
    # The logits' noise network is used only on noisy (inner-loop) passes: zero without second order.
    assert np.all(first["dense_w"] == 0) and np.all(first["dense_b"] == 0)
    assert np.max(np.abs(full["dense_w"])) > 1e-6


def test_fused_batch_norm_gives_the_explicit_meta_gradient(monkeypatch):
    # float32 (FusedBatchNormV3 has no float64 kernel, so the FD tests above use the explicit version):
    # loss and second-order meta-gradients through 2 inner steps agree up to float32 rounding.
    arch = Arch(hw=8, channels=1, filters=3, way=3, n_blocks=2, dtype=tf.float32)
    batch = {k: v.astype(np.float32) for k, v in episodes(2).items()}
    out = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(model_module, "batch_norm", explicit_batch_norm)
        with tf.Graph().as_default():
            tf.compat.v1.set_random_seed(1)
            model = Model(arch, noise.get("metadrop"), inner_lr=0.5, n_steps=2)
            ph = model.placeholders(2, SHOT, QUERY, "t")
            loss, _ = model.meta_batch(ph, 1)
            grads = tf.gradients(loss, model.meta_params)
            ops = tf.compat.v1.get_default_graph().get_operations()
            n_fused = sum(op.type.startswith("FusedBatchNorm") for op in ops)
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                randomize(sess, model.meta_params, scale=0.5)
                feed = {ph[k]: v for k, v in batch.items()}
                feed[model.noise_seed] = SEED
                out.append((n_fused, *sess.run([loss, grads], feed)))
    (n_f, l_f, g_f), (n_ref, l_ref, g_ref) = out
    assert n_ref == 0 and n_f > 0
    np.testing.assert_allclose(l_f, l_ref, rtol=1e-5)
    for g, gr, p in zip(g_f, g_ref, model.meta_params):
        np.testing.assert_allclose(g, gr, rtol=1e-3, atol=1e-4 * np.abs(gr).max(), err_msg=p.name)
