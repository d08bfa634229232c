"""PGD (attack.py): the constraint sets, the exact L1 projection, the attack's effect, adversarial
MAML's inner-step examples, and main.py's --attack/--adv_inner flags."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import minimize
from tiny import ARCH, QUERY, SHOT, build, episodes, randomize

import attack
import main

NORMS = sorted(attack.NORMS)
TOL = 1e-9  # float64 rounding allowance on |d|_p <= eps


def images(n: int, seed: int) -> np.ndarray:
    """[n, D] images in [0, 1] with many pixels exactly 0 or 1, like strokes on a background."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, ARCH.x_dim))
    x[x < 0.3] = 0.0
    x[x > 0.8] = 1.0
    return x


def run(fetch, feed=None, model=None):
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        if model is not None:
            randomize(sess, model.meta_params)
        return sess.run(fetch, feed)


@pytest.mark.parametrize("norm", NORMS)
def test_projection_lands_in_ball_and_box(norm):
    rng = np.random.default_rng(1)
    x0 = images(50, 2)
    d = rng.normal(0, 3, x0.shape) * (rng.random(x0.shape) < 0.5)  # far outside, half sparse
    p = attack.NORMS[norm]
    for eps in (0.0, 0.05, 0.7, 4.0):
        with tf.Graph().as_default():
            out = run(p.project(tf.constant(d), tf.constant(x0), tf.constant(eps, tf.float64)))
            size = run(p.norm(tf.constant(out)))
        assert np.all(size <= eps * (1 + TOL) + TOL), (eps, size.max())
        assert np.all(x0 + out >= 0) and np.all(x0 + out <= 1)
        if eps == 0:
            assert np.all(out == 0)


def test_l1_projection_matches_a_quadratic_program():
    """Against SLSQP on p = u - w, u, w >= 0 (an independent solver of the same QP)."""
    rng = np.random.default_rng(3)
    n, dim = 30, 6
    x0 = rng.random((n, dim))
    x0[::4, :2] = 1.0  # the box binds on some coordinates
    d = rng.normal(0, 0.6, (n, dim))
    d[::5] *= 0.05  # some rows are inside the ball already
    for eps in (0.0, 0.3, 1.2):
        with tf.Graph().as_default():
            ours = run(
                attack.NORMS["l1"].project(tf.constant(d), tf.constant(x0), tf.constant(eps, tf.float64))
            )
        for i in range(n):
            res = d[i]

            def f(z, v=res):
                r = z[:dim] - z[dim:] - v
                return 0.5 * r @ r, np.concatenate([r, -r])

            bounds = [(0, 1 - v) for v in x0[i]] + [(0, v) for v in x0[i]]
            ball = {"type": "ineq", "fun": lambda z, e=eps: e - z.sum(), "jac": lambda z: -np.ones(2 * dim)}
            sol = minimize(
                f, np.zeros(2 * dim), jac=True, bounds=bounds, constraints=[ball], method="SLSQP", tol=1e-14
            )
            np.testing.assert_allclose(ours[i], sol.x[:dim] - sol.x[dim:], atol=1e-6)


def attack_graph(model, eps, norm, steps, ep):
    """theta* of task 0 and PGD on its query set; returns (clean loss, acc), (adv loss, acc), x."""
    ph = model.placeholders(1, SHOT, QUERY, "t")
    theta = model.adapt(ph["xtr"][0], ph["ytr"][0], 1)
    x = attack.pgd(model, theta, ph["xte"][0], ph["yte"][0], eps, norm, steps)
    feed = {ph[k]: v for k, v in ep.items()}
    return model.query(theta, ph["xte"][0], ph["yte"][0]), model.query(theta, x, ph["yte"][0]), x, feed


@pytest.mark.parametrize("norm", NORMS)
def test_pgd_iterates_stay_in_ball_and_box_and_eps_0_is_clean(norm):
    ep = episodes(1)
    ep["xte"] = images(ARCH.way * QUERY, 5)[None]
    x0 = ep["xte"][0]
    for steps in (1, 4):  # iterate k is the last one of a k-step run
        with tf.Graph().as_default():
            model = build("metadrop")
            eps = tf.compat.v1.placeholder(tf.float64, [])
            clean, adv, x, feed = attack_graph(model, eps, norm, steps, ep)
            with tf.compat.v1.Session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                randomize(sess, model.meta_params)
                for e in (0.0, 0.1, 1.5):
                    c, a, xa = sess.run([clean, adv, x], {**feed, eps: e, model.noise_seed: [1, 2]})
                    size = (
                        np.abs(xa - x0).max(1) if norm == "linf" else np.linalg.norm(xa - x0, int(norm[1]), 1)
                    )
                    assert np.all(size <= e * (1 + TOL) + TOL) and xa.min() >= 0 and xa.max() <= 1
                    if e == 0:
                        np.testing.assert_array_equal(xa, x0)
                        assert a == c  # the same loss and accuracy, exactly
                    else:
                        assert size.max() > 0.5 * e  # the attack moved


def separable_task() -> dict[str, np.ndarray]:
    """One task of three distinct shapes (left half, top half, centre square) plus noise."""
    rng = np.random.default_rng(0)
    proto = np.zeros((ARCH.way, ARCH.hw, ARCH.hw))
    proto[0, :, :4], proto[1, :4, :], proto[2, 2:6, 2:6] = 1, 1, 1
    ep = episodes(1)
    for x, k in (("xtr", SHOT), ("xte", QUERY)):
        ep[x] = np.clip(
            np.repeat(proto.reshape(ARCH.way, -1), k, 0) + 0.1 * rng.normal(size=ep[x].shape[1:]), 0, 1
        )[None]
    return ep


@pytest.mark.parametrize("norm", NORMS)
def test_attack_raises_loss_and_lowers_accuracy_as_eps_grows(norm):
    radii = {"linf": (0.0, 0.05, 0.2, 0.5), "l2": (0.0, 0.3, 1.5, 4.0), "l1": (0.0, 1.0, 5.0, 20.0)}[norm]
    with tf.Graph().as_default():
        model = build("none", n_steps=3)
        eps = tf.compat.v1.placeholder(tf.float64, [])
        clean, adv, _, feed = attack_graph(model, eps, norm, 20, separable_task())
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            randomize(sess, model.meta_params)
            c = sess.run(clean, feed)
            out = [sess.run(adv, {**feed, eps: e}) for e in radii]
    losses, accs = zip(*out)
    assert c[1] == 1.0, c  # the adapted model solves the clean task
    assert losses[0] == c[0]
    assert all(b > a for a, b in zip(losses, losses[1:])), losses
    assert all(b <= a for a, b in zip(accs, accs[1:])) and accs[-1] <= 1 / 3, accs


def test_adversarial_maml_trains_on_examples_within_adv_eps():
    ep = episodes(1)
    ep["xtr"] = images(ARCH.way * SHOT, 9)[None]
    eps = 0.3
    with tf.Graph().as_default():
        model = build("none", n_steps=2)
        clean_theta = model.adapt(tf.constant(ep["xtr"][0]), tf.constant(ep["ytr"][0]), 1)
        seen = []
        adversary = attack.Adversary(model, "l2", eps)
        model.adversary = lambda theta, x, y: seen.append(adversary(theta, x, y)) or seen[-1]
        ph = model.placeholders(1, SHOT, QUERY, "t")
        loss, _ = model.meta_batch(ph, 1)
        grads = tf.gradients(loss, model.meta_params)
        adv_theta = model.adapt(ph["xtr"][0], ph["ytr"][0], 1)
        feed = {ph[k]: v for k, v in ep.items()}
        xs, g, th, th0 = run([seen, grads, adv_theta, clean_theta], feed, model)
    assert len(xs) == 2 + 2  # one per inner step of the meta-batch's task, then adv_theta's two
    for x in xs:
        size = np.linalg.norm(x - ep["xtr"][0], axis=1)
        assert np.all(size <= eps * (1 + TOL)) and x.min() >= 0 and x.max() <= 1
        assert size.max() > 0.5 * eps
    assert np.abs(th["dense_w"] - th0["dense_w"]).max() > 1e-6  # the inner loop trained on them
    assert all(np.all(np.isfinite(v)) for v in g)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--mode", "meta_test", "--attack", "l3", "--attack_eps", "0.1"], "--attack l3: choose one of"),
        (["--adv_inner", "lp", "--adv_eps", "0.1"], "--adv_inner lp: choose one of"),
    ],
)
def test_unknown_norm_exits_2(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:  # a flag error, answered with the other flags' (main.check_flags)
        main.main(["--dataset", "digits", "--savedir", str(tmp_path / "s"), *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["--mode", "meta_test", "--attack", "linf", "--attack_eps", "0,-0.1"],
        ["--mode", "meta_test", "--attack", "linf", "--attack_eps", "0,x"],
        ["--mode", "meta_test", "--attack", "linf"],
        ["--mode", "meta_train", "--attack", "linf", "--attack_eps", "0.1"],
        ["--mode", "export", "--attack", "l2", "--attack_eps", "0.1"],
        ["--mode", "meta_test", "--attack", "l1", "--attack_eps", "1", "--attack_steps", "0"],
        ["--adv_inner", "linf"],
        ["--adv_inner", "linf", "--adv_eps", "-1"],
    ],
)
def test_bad_attack_flags_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main.parse_args(["--savedir", "x", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--attack" in err or "--adv" in err, err


def test_meta_test_attack_writes_its_own_file(tmp_path):
    savedir = str(tmp_path / "adv")
    base = ["--dataset", "digits", "--way", "5", "--shot", "1", "--query", "5", "--n_steps", "1"]
    base += ["--maml", "--adv_inner", "linf", "--adv_eps", "0.05", "--savedir", savedir]
    train = ["--mode", "meta_train", "--metabatch", "2", "--n_train_iters", "3", "--val_freq", "3"]
    assert main.main([*base, *train, "--n_val_iters", "1"]) == 0
    assert json.load(open(os.path.join(savedir, "config.json")))["adv_eps"] == 0.05
    # resuming with another radius is refused
    assert main.main([*base[:-3], "0.1", "--savedir", savedir, *train, "--n_train_iters", "4"]) == 2
    test = [*base, "--mode", "meta_test", "--metabatch", "2", "--n_test_iters", "3"]
    assert main.main(test) == 0
    clean = open(os.path.join(savedir, "results.json")).read()
    assert main.main([*test, "--attack", "l1", "--attack_eps", "0,2", "--attack_steps", "3"]) == 0
    assert open(os.path.join(savedir, "results.json")).read() == clean
    r = json.load(open(os.path.join(savedir, "robust_l1.json")))
    assert (r["attack"]["norm"], r["attack"]["steps"], r["n"]) == ("l1", 3, 3)
    radii = r["attack"]["radii"]
    assert [a["eps"] for a in radii] == [0.0, 2.0] and [len(a["accuracies"]) for a in radii] == [3, 3]
    assert radii[0]["mean"] == r["mean"] == json.loads(clean)["mean"]
    assert radii[0]["accuracies"] == r["accuracies"] == json.loads(clean)["accuracies"]
    assert radii[1]["step_size"] == pytest.approx(2.5 * 2 / 3)
    assert radii[1]["mean"] <= r["mean"]
