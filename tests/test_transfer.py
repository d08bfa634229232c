"""transfer.py: schedules (P9), source tasks (P12), the joint phi step (P7, P11), the frozen target
phi, resuming, and bad flags (exit 2)."""

import argparse
import os

import numpy as np
import pytest
import tensorflow as tf
from tiny import check_directional_fd

import cli
import nets
import noise
import transfer
from data.files import read_json
from run import write_json

F64 = tf.float64
SHAPE = (16, 16, 1)


def test_annealing_and_learning_rate_schedules():
    # P9: lambda at steps 1, 2000, 4000, 10000 of 10,000; LR factors after 4000, 7000, 9000 steps.
    lam = [transfer.anneal(s, 10_000, 1.0) for s in (1, 2000, 3999, 4000, 10_000)]
    np.testing.assert_allclose(lam, [1 / 4000, 0.5, 3999 / 4000, 1.0, 1.0])
    assert transfer.anneal(2000, 10_000, 0.5) == 0.25
    f = [transfer.lr_factor(s, 10_000) for s in (1, 4000, 4001, 7000, 7001, 9001, 10_000)]
    np.testing.assert_allclose(f, [1, 1, 0.3, 0.3, 0.09, 0.027, 0.027])


@pytest.mark.parametrize("scheme, groups", [("paper", 10), ("code", 5)])
def test_source_tasks(scheme, groups):
    # P12: 200 classes x 10 images, as Tiny ImageNet's 200 x 500.
    labels = np.repeat(np.arange(200), 10)
    tasks = transfer.source_tasks(labels, 10, scheme, seed=0)
    assert len(tasks) == 10
    classes = [frozenset(c) for _, _, c in tasks]
    assert len(set(classes)) == groups and all(len(c) == 200 // groups for c in classes)
    for train, val, cls in tasks:
        assert not set(train) & set(val)
        assert len(train) == len(val) == 10 * len(cls) // 2
        assert set(labels[train]) == set(labels[val]) == set(cls)
    if scheme == "code":  # tasks 2i and 2i+1: the same images, halves swapped
        for i in range(0, 10, 2):
            assert np.array_equal(tasks[i][0], tasks[i + 1][1]) and np.array_equal(
                tasks[i][1], tasks[i + 1][0]
            )
    else:
        assert frozenset().union(*classes) == frozenset(range(200))
    again = transfer.source_tasks(labels, 10, scheme, seed=0)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(tasks, again))  # seeded


def test_batches_cover_an_epoch_and_repeat():
    seen = np.concatenate([transfer.batch_indices(10, 3, [0], s) for s in range(3)])
    assert len(set(seen)) == 9  # the last partial batch is dropped
    assert np.array_equal(transfer.batch_indices(10, 3, [0], 4), transfer.batch_indices(10, 3, [0], 4))


def source_graph(n_tasks: int, second_order: bool = False, lr: float = 1e-2, model: str = "conv4_2"):
    args = argparse.Namespace(lr=lr, model=model, img_size=16, augment="crop_flip", second_order=second_order)
    tf.compat.v1.set_random_seed(0)
    return nets.Source(args, SHAPE, [3] * n_tasks, noise.get("metaperturb"), F64)


def source_feed(g, which, seed=0):
    rng = np.random.default_rng(seed)
    fd = {}
    for i in (g.train_in, g.val_in)[which]:
        fd[i.x] = rng.random((4, 256))
        fd[i.y] = np.array([0, 1, 2, 1])
        fd[i.seed] = np.array([seed, 5])
    return fd


def randomize_phi(sess, phi, scale=0.3):
    rng = np.random.default_rng(1)
    for v in phi.values():
        v.load(scale * rng.standard_normal(v.shape.as_list()), sess)


def test_phi_step_is_adam_on_the_mean_task_gradient():
    # P11: phi takes one Adam step (weight decay added) on the mean over tasks of each task's
    # validation gradient at its new theta; each task's theta step leaves the others' alone.
    with tf.Graph().as_default():
        g = source_graph(2)
        phi = list(g.phi.values())
        per_task = [tf.gradients(loss, phi) for loss, _ in g.val_losses]
        with transfer.session(tf.compat.v1.get_default_graph()) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            randomize_phi(sess, g.phi)
            theta0 = sess.run([n.theta for n in g.nets])
            sess.run(g.theta_ops[0], source_feed(g, 0))
            theta1 = sess.run([n.theta for n in g.nets])
            assert all(np.array_equal(theta0[1][k], theta1[1][k]) for k in theta0[1])
            assert any(not np.array_equal(theta0[0][k], theta1[0][k]) for k in theta0[0])
            fd = source_feed(g, 1)
            p0 = sess.run(phi)
            grads = [sess.run(gs, fd) for gs in per_task]
            sess.run(g.phi_op, fd)
            p1 = sess.run(phi)
    for j, (v0, v1) in enumerate(zip(p0, p1)):
        grad = (grads[0][j] + grads[1][j]) / 2 + nets.WEIGHT_DECAY * v0
        m, v = 0.1 * grad, 0.001 * grad**2
        # torch.optim.Adam's first step: eps added to sqrt(v / (1 - b2)), not to sqrt(v)
        np.testing.assert_allclose(v1, v0 - 1e-2 * (m / 0.1) / (np.sqrt(v / 0.001) + 1e-8), rtol=1e-12)
        assert np.abs(v1 - v0).max() > 5e-3  # an Adam step of ~lr


@pytest.mark.slow
def test_phi_gradient_matches_finite_differences():
    # P7: float64, noise fixed by the seeds; first order: the validation loss at the current theta.
    with tf.Graph().as_default():
        g = source_graph(2)
        loss = tf.add_n([l for l, _ in g.val_losses]) / 2
        phi = list(g.phi.values())
        grads = tf.gradients(loss, phi)
        with transfer.session(tf.compat.v1.get_default_graph()) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            randomize_phi(sess, g.phi)
            fd = source_feed(g, 1)
            check_directional_fd(sess, phi, sess.run(grads, fd), loss, fd, seed=2)


def second_order_setup(sess, g, scale=0.03) -> dict:
    """Random phi and Adam moments of every theta_t, 4 steps taken (v ~ scale^2: Adam's step is
    smooth in the gradient, and steep enough for theta_t's dependence on phi to show); the feed of
    one step."""
    rng = np.random.default_rng(4)
    values = {p: 0.3 * rng.standard_normal(p.shape.as_list()) for p in g.phi.values()}
    for opt in g.theta_adams:
        values[opt.t] = 4.0
        for p, m, v in zip(opt.params, opt.m, opt.v):
            shape = p.shape.as_list()
            values[m] = 0.1 * scale * rng.standard_normal(shape)
            values[v] = scale**2 * rng.uniform(0.5, 1.5, shape)
    sess.run([v.assign(x) for v, x in values.items()])
    return {**source_feed(g, 0), **source_feed(g, 1)}


def test_second_order_phi_gradient_matches_finite_differences(monkeypatch):
    # P7, second order: d/dphi of the validation loss at theta_t'(phi), theta_t' = the Adam step
    # (weight decay added) on the training batch; float64, the noise fixed by the seeds. Batch
    # norm's running statistics are state, not differentiated: momentum 0 keeps them fixed here.
    monkeypatch.setattr(nets, "BN_MOMENTUM", 0.0)
    with tf.Graph().as_default():
        g = source_graph(1, second_order=True, lr=0.05, model="conv4_4")
        loss = g.val_losses[0][0]
        phi = list(g.phi.values())
        new = {p: tf.compat.v1.placeholder(F64, p.shape) for p in phi}
        load = {p: p.assign(new[p]) for p in phi}
        with transfer.session(tf.compat.v1.get_default_graph()) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            fd = second_order_setup(sess, g)
            grads = sess.run(g.phi_grads, fd)
            stepped = list(g.theta_next[0].values())
            fixed = {**fd, **dict(zip(stepped, sess.run(stepped, fd)))}  # theta_t' fed as constants

            def derivative(p, d, feed, h=1e-7):
                v0 = sess.run(p)
                sess.run(load[p], {new[p]: v0 + h * d})
                up = sess.run(loss, feed)
                sess.run(load[p], {new[p]: v0 - h * d})
                down = sess.run(loss, feed)
                sess.run(load[p], {new[p]: v0})
                return (up - down) / (2 * h)

            rng = np.random.default_rng(2)
            gaps = []
            for p, grad in zip(phi, grads):
                d = rng.standard_normal(p.shape.as_list())
                second, first = derivative(p, d, fd), derivative(p, d, fixed)
                assert abs(second - np.sum(grad * d)) <= 1e-6 * max(1.0, abs(second)), p.name
                gaps.append(abs(second - first))
    assert max(gaps) > 1e-4  # 100x the tolerance: first order misses theta_t's dependence on phi


def one_source_step(second_order: bool, n_tasks: int) -> dict:
    """One step from the same state: the values before and after, the validation loss and theta_t'."""
    with tf.Graph().as_default():
        g = source_graph(n_tasks, second_order=second_order, lr=0.05, model="conv4_4")
        loss = tf.add_n([l for l, _ in g.val_losses]) / n_tasks
        state = {
            "theta": [n.theta for n in g.nets],
            "stats": [(n.bn_stats, n.site_stats) for n in g.nets],
            "phi": g.phi,
        }
        with transfer.session(tf.compat.v1.get_default_graph()) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            fd = second_order_setup(sess, g)
            out = {"before": sess.run(state)}
            if second_order:  # one run (as source_run): phi's gradient, then the real steps
                out["val"], out["stepped"], _ = sess.run([loss, g.theta_next, g.phi_op], fd)
            else:  # two runs (as source_run): theta's step, then phi's at the new theta
                sess.run(g.theta_op, fd)
                out["val"], _ = sess.run([loss, g.phi_op], fd)
            out["after"] = sess.run(state)
    return out


@pytest.mark.parametrize("n_tasks", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_second_order_takes_the_same_theta_step(n_tasks):
    # The theta step actually applied is the first-order path's (nets.adam on the same gradient),
    # the running statistics are updated alike, the validation pass reads them after the
    # training pass's updates, and theta_t' is the value Adam gives theta_t; only phi's step differs.
    first, second = one_source_step(False, n_tasks), one_source_step(True, n_tasks)
    flat = tf.nest.flatten
    assert all(np.array_equal(a, b) for a, b in zip(flat(first["before"]), flat(second["before"])))
    for key in ("theta", "stats"):
        assert all(
            np.array_equal(a, b) for a, b in zip(flat(first["after"][key]), flat(second["after"][key]))
        )
    assert not all(
        np.array_equal(a, b) for a, b in zip(flat(first["before"]["theta"]), flat(first["after"]["theta"]))
    )
    for stepped, applied in zip(second["stepped"], second["after"]["theta"]):
        for k in applied:
            np.testing.assert_allclose(stepped[k], applied[k], rtol=1e-14, atol=0)
    np.testing.assert_allclose(second["val"], first["val"], rtol=1e-14)
    moved = [
        np.abs(first["after"]["phi"][k] - second["after"]["phi"][k]).max() for k in first["after"]["phi"]
    ]
    assert max(moved) > 1e-4  # phi's Adam step (lr 0.05) followed another gradient


def test_first_order_phi_gradient_ignores_the_training_batch():
    # The default (paper and code): phi's gradient needs no training batch (theta_t is a constant).
    with tf.Graph().as_default():
        g = source_graph(1)
        with transfer.session(tf.compat.v1.get_default_graph()) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            assert all(np.isfinite(x).all() for x in sess.run(g.phi_grads, source_feed(g, 1)))
        assert not g.theta_next


def src_flags(tmp_path, *extra):
    return [
        "--phase", "src", "--data", "digits", "--model", "conv4_4", "--img_size", "16",
        "--batch_size", "8", "--num_split", "2", "--train_steps", "2", "--print_every", "1",
        "--save_every", "1", "--save_dir", str(tmp_path), *extra,
    ]  # fmt: skip


def test_a_training_phase_says_where_it_runs_and_warns_of_a_gpu_it_cannot_see(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # restored after the test: main() sets it from --gpus
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU: --gpus 7 may name one")
    assert transfer.main(src_flags(tmp_path, "--exp_name", "a", "--gpus", "7")) == 0
    out, err = capsys.readouterr()
    assert f"running on CPU ({len(os.sched_getaffinity(0))} threads), XLA off" in out.splitlines()
    assert "warning: --gpus 7: TensorFlow sees no such GPU; the run continues on the CPU" in err.splitlines()


def test_second_order_flag_is_checked_and_kept_with_the_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        transfer.parse_args(tgt_flags(tmp_path, "--second_order"))
    assert e.value.code == 2 and "--second_order is an option of the source phase" in capsys.readouterr().err
    first, second = (transfer.parse_args(src_flags(tmp_path, *x)) for x in ([], ["--second_order"]))
    assert (first.second_order, second.second_order) == (False, True)
    assert first.exp_name != second.exp_name  # default folders apart
    folder = os.path.join(tmp_path, "run_0")
    os.makedirs(os.path.join(folder, "ckpt"))
    open(os.path.join(folder, "ckpt", "model-1.index"), "w").close()  # a checkpoint: resuming
    transfer.check_config(folder, first)
    with pytest.raises(transfer.UsageError, match="second_order False there, True now"):
        transfer.check_config(folder, second)
    # A config.json from before the flag was first order.
    config = read_json(os.path.join(folder, "config.json"))
    del config["second_order"]
    transfer.write_json(os.path.join(folder, "config.json"), config)
    with pytest.raises(transfer.UsageError, match="second_order False there, True now"):
        transfer.check_config(folder, second)
    transfer.check_config(folder, first)


@pytest.mark.slow
def test_second_order_source_run(tmp_path, capsys):
    # The whole source phase both ways from the same start; a folder keeps its order.
    assert transfer.main(src_flags(tmp_path, "--exp_name", "a")) == 0
    assert transfer.main(src_flags(tmp_path, "--exp_name", "b", "--second_order")) == 0
    phi = {}
    for name in ("a", "b"):
        for step in ("init", "2"):
            with np.load(os.path.join(tmp_path, "src", name, "run_0", f"phi_{step}.npz")) as f:
                phi[name, step] = {k: f[k] for k in f.files}
    assert all(np.array_equal(phi["a", "init"][k], phi["b", "init"][k]) for k in phi["a", "init"])
    assert not all(np.array_equal(phi["a", "2"][k], phi["b", "2"][k]) for k in phi["a", "2"])
    assert read_json(os.path.join(tmp_path, "src", "b", "run_0", "config.json"))["second_order"] is True
    capsys.readouterr()
    assert transfer.main(src_flags(tmp_path, "--exp_name", "b")) == 2
    assert "second_order True there, False now" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Target training on digits (tiny)


def tgt_flags(tmp_path, *extra):
    return [
        "--phase", "tgt", "--data", "digits", "--tgt_split", "test", "--n_per_class", "10",
        "--model", "conv4_4", "--img_size", "16", "--batch_size", "8", "--train_steps", "6",
        "--print_every", "3", "--save_every", "3", "--eval_samples", "1", "--test_samples", "2",
        "--save_dir", str(tmp_path), "--exp_name", "t", *extra,
    ]  # fmt: skip


def phi_file(tmp_path) -> str:
    rng = np.random.default_rng(3)
    shapes = {"k1_id": [3, 3, 1, 1], "k1_all": [3, 3, 1, 1], "k2_id": [3, 3, 1, 1], "k2_all": [3, 3, 1, 1]}
    phi = {k: 0.3 * rng.standard_normal(s) for k, s in {**shapes, "K": [3, 3, 1, 4], "w": [10]}.items()}
    path = os.path.join(tmp_path, "phi.npz")
    transfer.write_phi(path, {k: v.astype(np.float32) for k, v in phi.items()})
    return path


def test_target_phi_is_frozen(tmp_path):
    args = transfer.parse_args(tgt_flags(tmp_path, "--phi_from", phi_file(tmp_path)))
    shape, train, _, k = transfer.target_data(args)
    with tf.Graph().as_default():
        g = nets.Target(args, shape, k, noise.get("metaperturb"))
        assert all(gr is None for gr in tf.gradients(g.loss, list(g.phi_vars.values())))
        assert not set(g.params) & set(g.phi_vars.values())
        with transfer.session(tf.compat.v1.get_default_graph()) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            phi0, theta0 = sess.run([g.phi_vars, g.net.theta])
            for step in range(1, 4):
                fd = {g.train_in.x: train[0][:8], g.train_in.y: train[1][:8], g.train_in.seed: [step, 0]}
                sess.run(g.train_op, {**fd, g.lam: 1.0, g.lr: 1e-2})
            phi1, theta1 = sess.run([g.phi_vars, g.net.theta])
            assert sess.run(g.adam.t) == sess.run(g.step) == 3  # Adam's step count t, the run's step
            assert list(map(id, g.adam.params)) == list(map(id, g.params))  # theta: no Adam holds phi
    assert all(np.array_equal(phi0[k], phi1[k]) for k in phi0)
    assert all(not np.array_equal(theta0[k], theta1[k]) for k in theta0)


@pytest.mark.slow
def test_interrupted_target_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    flags = tgt_flags(tmp_path, "--phi_from", phi_file(tmp_path))
    assert transfer.main(flags) == 0
    whole = read_json(os.path.join(tmp_path, "tgt", "t", "results.json"))
    real = transfer.batch_indices

    def interrupt(n, batch, seed, step):
        if step == 4:  # the 5th step
            raise KeyboardInterrupt
        return real(n, batch, seed, step)

    flags[flags.index("t")] = "u"
    monkeypatch.setattr(transfer, "batch_indices", interrupt)
    assert transfer.main(flags) == cli.STOPPED
    folder = os.path.join(tmp_path, "tgt", "u")
    assert not os.path.exists(os.path.join(folder, "results.json"))
    assert "stopped at step 4" in open(os.path.join(folder, "train.log")).read()
    monkeypatch.setattr(transfer, "batch_indices", real)
    assert transfer.main(flags) == 0
    resumed = read_json(os.path.join(folder, "results.json"))
    assert "resumed from step 4" in open(os.path.join(folder, "train.log")).read()
    assert resumed["mean"] == pytest.approx(whole["mean"], abs=1e-9)
    assert resumed["nll"] == pytest.approx(whole["nll"], rel=1e-5)
    # A finished run is not trained again; other settings in its folder are refused.
    assert transfer.main(flags) == 0
    assert transfer.main([*flags, "--lr", "0.01"]) == 2


def test_resume_with_other_train_steps_is_refused(tmp_path):
    # The annealing and learning-rate schedules are fractions of --train_steps: a run's steps stay.
    args = transfer.parse_args(tgt_flags(tmp_path, "--noise", "none"))
    folder = tmp_path / "run"
    (folder / "ckpt").mkdir(parents=True)
    transfer.check_config(str(folder), args)
    (folder / "ckpt" / "model-3.index").write_text("")
    transfer.check_config(str(folder), args)  # the same settings resume
    longer = transfer.parse_args(tgt_flags(tmp_path, "--noise", "none", "--train_steps", "9"))
    with pytest.raises(transfer.UsageError, match="train_steps 6 there, 9 now"):
        transfer.check_config(str(folder), longer)
    assert read_json(str(folder / "config.json"))["train_steps"] == 6  # not rewritten


def test_run_of_an_older_pipeline_is_refused(tmp_path, capsys):
    # A run written before config.json had pipeline_version (other conv padding, crops, resizing and
    # Adam variables) is refused in one line, exit 2, its checkpoints and config.json untouched.
    flags = tgt_flags(tmp_path, "--noise", "none")
    assert transfer.main(flags) == 0
    folder = tmp_path / "tgt" / "t"
    config = read_json(str(folder / "config.json"))
    assert config["pipeline_version"] == nets.PIPELINE_VERSION
    del config["pipeline_version"]
    transfer.write_json(str(folder / "config.json"), config)
    before = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert transfer.main(flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert f"pipeline_version 1 there, {nets.PIPELINE_VERSION} now" in err
    after = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--batch_size", "1"], "--batch_size must be at least 2"),
        (["--train_steps", "0"], "--train_steps must be at least 1"),
        (["--lr", "nan"], "--lr must be a positive number"),
        (["--clipval", "-1"], "--clipval must be a positive number"),
        (["--noise_coeff", "-0.5"], "--noise_coeff must be a number >= 0"),
        (["--model", "resnet19"], "unknown model"),
        (["--noise", "dropout"], "unknown perturbation"),
        (["--noise", "infodrop", "--noise_hp", "beta=x"], "is not a float"),
        (["--n_per_class", "-1"], "--n_per_class must be at least 0"),
        (["--eval_samples", "0"], "--eval_samples must be at least 1"),
        ([], "is transferred: give --phi_from"),
        (["--noise", "none", "--phi_from", "x.npz"], "learns no transferred phi"),
        (["--augment", "rotate"], "invalid choice"),
        (["--noise", "none", "--img_size", "8"], "raise --img_size to 16"),
    ],
)
def test_bad_flags_exit_2(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as e:
        transfer.parse_args(tgt_flags(tmp_path, *extra))
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--split_scheme", "code", "--num_split", "3"], "must be even"),
        (["--noise", "infodrop"], "meta-learns a transferred perturbation"),
        (["--num_run", "0"], "--num_run must be at least 1"),
    ],
)
def test_bad_source_flags_exit_2(capsys, extra, message):
    with pytest.raises(SystemExit) as e:
        transfer.parse_args(["--phase", "src", *extra])
    assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--phi_from", "missing.npz"], "no phi file"),
        (["--noise", "none", "--tgt_split", "nope"], "--tgt_split nope"),
        (["--noise", "none", "--batch_size", "500"], "fewer than --batch_size"),
        (["--noise", "none", "--data", "nodata"], "unknown dataset"),
    ],
)
def test_bad_input_exits_2_without_writing_results(tmp_path, capsys, extra, message):
    assert transfer.main(tgt_flags(tmp_path, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(os.path.join(tmp_path, "tgt", "t", "results.json"))


def test_phi_of_the_wrong_shape_exits_2(tmp_path, capsys):
    path = os.path.join(tmp_path, "bad.npz")
    transfer.write_phi(path, {"w": np.zeros(3, np.float32)})
    assert transfer.main(tgt_flags(tmp_path, "--phi_from", path)) == 2
    assert "not this perturbation's phi" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Selection of the best source run (spec 2.3, Q9)


def fake_source_runs(tmp_path, n: int) -> list[str]:
    """n source runs of --exp_name E, each with its own random phi_5.npz; their paths."""
    paths = []
    for r in range(n):
        path = os.path.join(tmp_path, "src", "E", f"run_{r}", "phi_5.npz")
        os.makedirs(os.path.dirname(path))
        with np.load(phi_file(tmp_path)) as f:
            phi = {k: f[k] * (1 + 3 * r) for k in f.files}  # run r's noise r times stronger
        transfer.write_phi(path, phi)
        paths.append(path)
    return paths


def select_flags(tmp_path, *extra):
    flags = tgt_flags(tmp_path, "--src_name", "E", "--src_steps", "5", *extra)
    flags[flags.index("tgt")] = "select"
    return flags


def test_selection_chooses_the_most_accurate_run_and_tgt_loads_it(tmp_path):
    paths = fake_source_runs(tmp_path, 2)
    assert transfer.main(select_flags(tmp_path)) == 0
    sel = read_json(os.path.join(tmp_path, "src", "E", "selection_5.json"))
    # Each run's accuracy is its own target run's final accuracy, trained with that run's phi.
    for r, path in enumerate(paths):
        res = read_json(os.path.join(tmp_path, "select", "t", f"run_{r}", "results.json"))
        assert res["settings"]["phi"] == path
        assert sel["acc"][str(r)] == res["mean"]
    acc = [sel["acc"][str(r)] for r in range(2)]
    assert sel["best"] == int(np.argmax(acc))
    args = transfer.parse_args(
        tgt_flags(tmp_path, "--src_name", "E", "--src_steps", "5", "--src_run", "best")
    )
    assert args.phi == paths[sel["best"]]
    # A forged selection is followed: --src_run best reads the file, it does not guess.
    transfer.write_json(
        os.path.join(tmp_path, "src", "E", "selection_5.json"), {**sel, "best": 1 - sel["best"]}
    )
    args = transfer.parse_args(
        tgt_flags(tmp_path, "--src_name", "E", "--src_steps", "5", "--src_run", "best")
    )
    assert args.phi == paths[1 - sel["best"]]


def test_selection_errors_exit_2(tmp_path, capsys):
    assert transfer.main(select_flags(tmp_path)) == 2
    assert "no source run" in capsys.readouterr().err
    flags = tgt_flags(tmp_path, "--src_name", "E", "--src_steps", "5", "--src_run", "best")
    with pytest.raises(SystemExit) as e:
        transfer.parse_args(flags)
    assert e.value.code == 2 and "no selection" in capsys.readouterr().err
    for bad, message in (
        [["--src_run", "first"], "neither a run number"],
        [["--phi_from", "x"], "not --phi_from"],
    ):
        with pytest.raises(SystemExit) as e:
            transfer.parse_args(select_flags(tmp_path, *bad))
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert not os.path.exists(os.path.join(tmp_path, "src", "E", "selection_5.json"))


# ---------------------------------------------------------------------------------------------
# Fine-tuning baseline (spec 2.4, --fine_tune)


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    """A 3-step --noise none target run of conv4_4 on digits: the pre-trained network's folder."""
    root = tmp_path_factory.mktemp("pre")
    flags = tgt_flags(root, "--noise", "none", "--train_steps", "3", "--seed", "7")
    flags[flags.index("t")] = "pre"
    assert transfer.main(flags) == 0
    return os.path.join(root, "tgt", "pre")


def weights_at_step_0(tmp_path, monkeypatch, *extra) -> dict[str, np.ndarray]:
    """Every variable of a MetaPerturb target run's network and phi as its training would start."""
    got = {}

    def start(folder, args, graph, saver_vars, step_var, init_fn, *_):
        with transfer.session(graph) as sess:
            with graph.as_default():
                sess.run(tf.compat.v1.global_variables_initializer())
            init_fn(sess)
            got.update({v.op.name: sess.run(v) for v in saver_vars if v.op.name.startswith(("net/", "phi/"))})

    monkeypatch.setattr(transfer, "train_loop", start)
    assert transfer.main(tgt_flags(tmp_path, "--phi_from", phi_file(tmp_path), *extra)) == 0
    return got


def test_fine_tune_copies_the_convs_and_starts_batch_norm_and_head_fresh(
    tmp_path, monkeypatch, pretrained_run
):
    reader = tf.train.load_checkpoint(os.path.join(pretrained_run, "ckpt", "model-3"))
    tuned = weights_at_step_0(tmp_path, monkeypatch, "--fine_tune", pretrained_run)
    scratch = weights_at_step_0(tmp_path, monkeypatch, "--exp_name", "scratch")
    convs = {f"net/b{j}_{p}" for j in range(4) for p in "wb"}  # conv4: 4 kernels and 4 biases
    assert convs < set(tuned) and set(tuned) == set(scratch)
    with np.load(phi_file(tmp_path)) as f:  # MetaPerturb's phi is loaded on top, as without fine-tuning
        for k in f.files:
            np.testing.assert_array_equal(tuned.pop(f"phi/{k}"), f[k])
    for name in tuned:
        if name in convs:
            np.testing.assert_array_equal(tuned[name], reader.get_tensor(name))
            assert not np.array_equal(tuned[name], scratch[name])
        else:  # batch norm's gamma, beta, running statistics; the dense head; MetaPerturb's statistics
            np.testing.assert_array_equal(tuned[name], scratch[name])
            if "/perturb" not in name:  # (the pre-trained network has no MetaPerturb)
                assert not np.array_equal(reader.get_tensor(name), scratch[name]), name  # trained


def test_fine_tuned_run_resumes_from_its_own_checkpoint(tmp_path, pretrained_run):
    import shutil

    pre = os.path.join(tmp_path, "pre")
    shutil.copytree(pretrained_run, pre)
    flags = tgt_flags(tmp_path, "--noise", "none", "--fine_tune", pre, "--train_steps", "3")
    assert transfer.main(flags) == 0
    folder = os.path.join(tmp_path, "tgt", "t")
    first = read_json(os.path.join(folder, "results.json"))
    assert first["settings"]["fine_tune"] == pre
    log_text = open(os.path.join(folder, "train.log")).read()
    assert f"fine-tuning: 8 conv tensors from {pre}/ckpt/model-3" in log_text
    # Re-running the finished run restores its checkpoint: the pre-trained run is no longer read.
    shutil.rmtree(pre)
    assert transfer.main(flags) == 0
    again = read_json(os.path.join(folder, "results.json"))
    assert again["mean"] == first["mean"] and again["nll"] == pytest.approx(first["nll"], rel=1e-6)
    assert open(os.path.join(folder, "train.log")).read().count("fine-tuning:") == 1
    # Its folder refuses another initialisation.
    assert transfer.main(tgt_flags(tmp_path, "--noise", "none", "--train_steps", "3")) == 2


def test_fine_tuning_from_an_unfinished_pre_training_run_is_a_warning(tmp_path, capsys, pretrained_run):
    import shutil

    shutil.copytree(pretrained_run, tmp_path / "short")  # trained 3 steps of (now) 5
    config = str(tmp_path / "short" / "config.json")
    write_json(config, {**read_json(config), "train_steps": 5})
    assert (
        transfer.main(
            tgt_flags(tmp_path, "--noise", "none", "--train_steps", "1", "--fine_tune", config[:-12])
        )
        == 0
    )
    assert (
        f"warning: --fine_tune {config[:-12]} stopped at step 3 of its --train_steps 5"
        in capsys.readouterr().err
    )
    capsys.readouterr()
    assert (
        transfer.main(
            tgt_flags(
                tmp_path,
                "--noise",
                "none",
                "--train_steps",
                "1",
                "--exp_name",
                "u",
                "--fine_tune",
                pretrained_run,
            )
        )
        == 0
    )
    assert "warning" not in capsys.readouterr().err  # a finished run: nothing to say


def test_bad_fine_tune_exits_2_and_writes_nothing(tmp_path, capsys, pretrained_run):
    import shutil

    (tmp_path / "empty").mkdir()
    (tmp_path / "loose").mkdir()  # a checkpoint without its run's config.json: the shapes decide
    for f in os.listdir(os.path.join(pretrained_run, "ckpt")):
        shutil.copy(os.path.join(pretrained_run, "ckpt", f), tmp_path / "loose")
    cases = [
        (["--fine_tune", str(tmp_path / "nope")], "no such run folder or checkpoint; pre-train one"),
        (["--fine_tune", str(tmp_path / "empty")], "no readable checkpoint"),
        (["--fine_tune", pretrained_run, "--model", "conv6_4"], "is a conv4_4 network, not --model conv6_4"),
        (
            ["--fine_tune", str(tmp_path / "loose" / "model-3"), "--model", "conv4_8"],
            "net/b0_w is [3, 3, 1, 4] in",
        ),
        (["--fine_tune", str(tmp_path / "loose" / "model-3"), "--model", "resnet20"], "has no net/stem_w"),
        (["--fine_tune", str(tmp_path / "source")], "is a --phase src run (MetaPerturb's source training)"),
    ]
    shutil.copytree(pretrained_run, tmp_path / "source")  # as a source run's folder says of itself
    write_json(
        str(tmp_path / "source" / "config.json"),
        {**read_json(str(tmp_path / "source" / "config.json")), "phase": "src"},
    )
    for extra, message in cases:
        assert transfer.main(tgt_flags(tmp_path, "--noise", "none", *extra)) == 2, extra
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not os.path.exists(tmp_path / "tgt")
    for flags in (
        tgt_flags(tmp_path, "--noise", "none", "--fine_tune", ""),
        ["--phase", "src", "--fine_tune", pretrained_run],
    ):
        with pytest.raises(SystemExit) as e:
            transfer.parse_args(flags)
        assert e.value.code == 2 and "--fine_tune takes the folder" in capsys.readouterr().err
