"""What the docs promise about what is trained, what is sampled how many times, what enters a loss
and what is attacked, each against an independent computation (a numpy loop, a count of the
graph's draws, the optimizer's own variable list)."""

import itertools

import numpy as np
import pytest
import tensorflow as tf
from tiny import QUERY, SHOT, build, episodes, randomize

import attack
import episodic
import main
import noise
from layers import cross_entropy

SEED = np.array([5, 6])
DRAWS = ("StatelessRandomNormalV2", "StatelessRandomUniformV2", "StatelessRandomUniformIntV2")


def draw_rows(graph: tf.Graph, ops_before: int) -> list[int]:
    """The leading dimension of every noise draw the graph gained after its first ops_before ops."""
    ops = graph.get_operations()[ops_before:]
    return [op.outputs[0].shape[0] for op in ops if op.type in DRAWS]


@pytest.mark.parametrize("n_samp", [1, 3])
def test_evaluator_draws_n_test_mc_samp_samples_per_inner_step(n_samp):
    # Algorithm 2: every inner step of meta-test (and validation) averages n_test_mc_samp samples,
    # so each of its draws covers n_samp copies of the support set, and the query pass draws none.
    args = main.parse_args(
        ["--dataset", "digits", "--way", "3", "--shot", "2", "--query", "2", "--n_steps", "2"]
        + ["--savedir", "unused", "--n_test_mc_samp", str(n_samp), "--mode", "meta_test"]
    )
    r = episodic.Runner(args, ("val",))
    with r.graph.as_default():
        before = len(r.graph.get_operations())
        r.evaluator(2)
        rows = draw_rows(r.graph, before)
    # metadrop draws once per conv block and once for the logits, per inner step and task
    per_step = r.model.arch.n_blocks + 1
    assert len(rows) == 2 * args.n_steps * per_step, len(rows)
    assert set(rows) == {n_samp * args.way * args.shot}, rows


@pytest.mark.parametrize("metasgd", [False, True])
def test_outer_step_trains_every_variable_of_the_model(metasgd):
    # Algorithm 1 lines 10-11 (and Meta-SGD's step sizes): the Adam step applies to exactly the
    # variables the model created, none left out and nothing else.
    with tf.Graph().as_default() as g:
        model = build("metadrop", metasgd=metasgd)
        created = set(v.name for v in tf.compat.v1.trainable_variables())
        ph = model.placeholders(2, SHOT, QUERY, "t")
        loss, _ = model.meta_batch(ph, 1)
        step = tf.compat.v1.train.get_or_create_global_step()
        train_op = model.train_op(loss, 1e-2, step)
        applied = {op.inputs[0].name.split("/read")[0] for op in g.get_operations() if "ApplyAdam" in op.type}
        applied = {n if n.endswith(":0") else n + ":0" for n in applied}
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            lrs = [v for v in tf.compat.v1.trainable_variables() if v.name.startswith("lr/")]
            before = sess.run(lrs)
            feed = {ph[k]: v for k, v in episodes(2).items()}
            feed[model.noise_seed] = SEED
            sess.run(train_op, feed)
            after = sess.run(lrs)
    assert applied == created, (created - applied, applied - created)
    assert bool(lrs) == metasgd
    # the step sizes of the conv kernels get a meta-gradient through the inner loop: they move
    moved = [v.name for v, a, b in zip(lrs, before, after) if "_w" in v.name and np.any(a != b)]
    assert moved == [v.name for v in lrs if "_w" in v.name]


REGULARIZED = [
    n
    for n, cls in sorted(noise.PERTURBATIONS.items())
    if "beta" in {f.name for f in cls.__dataclass_fields__.values()}
]


@pytest.mark.parametrize("noise_name", REGULARIZED)
def test_inner_step_descends_cross_entropy_plus_regularizers(noise_name):
    # VIB's and information dropout's beta * KL belong to the inner loss (Alemi et al.; Achille &
    # Soatto): one inner step equals theta - lr * d(CE + beta * KL)/d theta, computed here from the
    # same noise draws, and differs from the step on the cross-entropy alone.
    ep = episodes(1)
    with tf.Graph().as_default():
        model = build(noise_name, inner_lr=0.3)
        xtr, ytr = tf.constant(ep["xtr"][0]), tf.constant(ep["ytr"][0])
        theta = model.initial()
        model._draws = itertools.count(1)
        stepped = model.inner_step(theta, xtr, ytr, 2)
        model._draws = itertools.count(1)  # the same draws again
        _, logits, y, regs = model._forward(xtr, theta, 2, model.draw(2, True), ytr)
        assert regs, noise_name
        ce, reg = cross_entropy(logits, y), tf.add_n(regs)
        keys = list(theta)
        g_ce = tf.gradients(ce, [theta[k] for k in keys])
        g_reg = tf.gradients(reg, [theta[k] for k in keys], unconnected_gradients="zero")
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            randomize(sess, model.meta_params)
            sess_feed = {model.noise_seed: SEED}
            out, th, gc, gr = sess.run([stepped, theta, g_ce, g_reg], sess_feed)
    lr = 0.3
    reg_norm = 0.0
    for k, a, b in zip(keys, gc, gr):
        np.testing.assert_allclose(out[k], th[k] - lr * (a + b), rtol=1e-10, atol=1e-12, err_msg=k)
        reg_norm = max(reg_norm, float(np.abs(b).max()))
    assert reg_norm > 1e-8  # the regularizer moves theta: a step without it would differ


def test_meta_test_attack_uses_each_tasks_adapted_weights(monkeypatch):
    # Section 4.1: PGD attacks the query set under theta* (after the inner loop), not theta.
    ep = episodes(2)
    seen = []
    pgd = attack.pgd
    monkeypatch.setattr(attack, "pgd", lambda m, theta, *a: seen.append(theta) or pgd(m, theta, *a))
    with tf.Graph().as_default():
        model = build("none", n_steps=2)
        ph = model.placeholders(2, SHOT, QUERY, "t")
        eps = tf.constant(0.1, tf.float64)
        thetas, _, _ = attack.robust_meta_batch(model, ph, 1, eps, "linf", 3)
        # independently: each task's inner loop on its own support set
        adapted = [model.adapt(tf.constant(ep["xtr"][t]), tf.constant(ep["ytr"][t]), 1) for t in range(2)]
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            randomize(sess, model.meta_params)
            feed = {ph[k]: v for k, v in ep.items()}
            attacked, want, initial = sess.run([seen, adapted, model.theta], feed)
    assert len(attacked) == 2
    for t in range(2):
        for k in want[t]:
            np.testing.assert_allclose(attacked[t][k], want[t][k], rtol=1e-12, err_msg=k)
        assert np.abs(attacked[t]["dense_w"] - initial["dense_w"]).max() > 1e-6


def test_adversarial_maml_attacks_the_current_inner_iterate():
    # Section 4.1: inner step k trains on PGD examples made under theta_k. Reference: a numpy loop
    # that feeds each iterate back, attacks it, and takes the step on the attacked support set.
    ep = episodes(1)
    eps, n_steps, lr = 0.3, 3, 0.5
    with tf.Graph().as_default():
        model = build("none", n_steps=n_steps, inner_lr=lr)
        xtr, ytr = tf.constant(ep["xtr"][0]), tf.constant(ep["ytr"][0])
        model.adversary = attack.Adversary(model, "l2", eps)
        adapted = model.adapt(xtr, ytr, 1)
        model.adversary = None
        theta_ph = {k: tf.compat.v1.placeholder(tf.float64, w.shape) for k, w in model.theta.items()}
        x_ph = tf.compat.v1.placeholder(tf.float64, ep["xtr"][0].shape)
        x_adv = attack.pgd(model, theta_ph, xtr, ytr, eps, "l2", 10)
        step = model.inner_step(theta_ph, x_ph, ytr, 1)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            randomize(sess, model.meta_params)
            got, theta = sess.run([adapted, model.theta])
            initial = dict(theta)
            for _ in range(n_steps):
                feed = {theta_ph[k]: v for k, v in theta.items()}
                x = sess.run(x_adv, feed)
                theta = sess.run(step, {**feed, x_ph: x})
            # the same loop attacking the initial weights every time: what must NOT come out
            wrong = dict(initial)
            x0 = sess.run(x_adv, {theta_ph[k]: v for k, v in initial.items()})
            for _ in range(n_steps):
                wrong = sess.run(step, {**{theta_ph[k]: v for k, v in wrong.items()}, x_ph: x0})
    for k in theta:
        np.testing.assert_allclose(got[k], theta[k], rtol=1e-9, atol=1e-12, err_msg=k)
    assert max(np.abs(wrong[k] - theta[k]).max() for k in theta) > 1e-6


def test_meta_training_draws_one_sample_and_validation_n_test_mc_samp(monkeypatch, tmp_path):
    # Section 3.1: meta-training's inner steps use one noise sample; its validation passes use
    # --n_test_mc_samp, as meta-test does. Counted on the graphs main.py builds.
    import model as model_module

    rows: dict[str, list[int]] = {}

    def counting(build):  # a Model method building a meta-batch's graph, its draws counted
        def counted(self, ep, n_samp, *args, **kw):
            graph = tf.compat.v1.get_default_graph()
            before = len(graph.get_operations())
            out = build(self, ep, n_samp, *args, **kw)
            rows[ep["xtr"].name.split("_")[0]] = draw_rows(graph, before)
            return out

        return counted

    for name in ("meta_batch", "objective"):  # training's graph and the evaluator's
        monkeypatch.setattr(model_module.Model, name, counting(getattr(model_module.Model, name)))
    argv = ["--dataset", "digits", "--way", "3", "--shot", "2", "--query", "2", "--n_steps", "1"]
    argv += ["--savedir", str(tmp_path / "run"), "--n_train_iters", "1", "--n_test_mc_samp", "3"]
    argv += ["--metabatch", "1", "--n_val_iters", "1", "--xla", "off"]
    assert main.main(argv) == 0
    assert set(rows) == {"train", "eval"}, rows
    assert rows["train"] and set(rows["train"]) == {3 * 2}
    assert rows["eval"] and set(rows["eval"]) == {3 * 3 * 2}


def test_meta_batch_loss_is_the_mean_of_its_tasks_query_losses():
    # Algorithm 1 line 10: the outer loss averages the tasks' query losses; accuracies are per task.
    ep = episodes(3)
    with tf.Graph().as_default():
        model = build("none")
        ph = model.placeholders(3, SHOT, QUERY, "t")
        loss, accs = model.meta_batch(ph, 1)
        tasks = [
            model.task(*(tf.constant(ep[k][t]) for k in ("xtr", "ytr", "xte", "yte")), 1) for t in range(3)
        ]
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            randomize(sess, model.meta_params)
            got_loss, got_accs, each = sess.run([loss, accs, tasks], {ph[k]: v for k, v in ep.items()})
    losses, task_accs = zip(*each)
    assert got_loss == pytest.approx(np.mean(losses), rel=1e-12)
    np.testing.assert_array_equal(got_accs, task_accs)
    assert np.ptp(losses) > 1e-6  # the tasks differ, so a loss of one task alone would not pass
