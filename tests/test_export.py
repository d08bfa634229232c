"""Model.trace / Model.blocks on the tiny float64 model, and main.py --mode export end to end (digits)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tiny import ARCH, build, episodes, randomize

import main
import noise

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def two_way(shot=2, query=3):
    """A two-way task for the tiny model: its first two classes, labels one-hot over two columns."""
    ep = episodes(1, shot, query)
    keep_tr, keep_te = ep["ytr"][0][:, :2].any(1), ep["yte"][0][:, :2].any(1)
    return ep["xtr"][0][keep_tr], ep["ytr"][0][keep_tr][:, :2], ep["xte"][0][keep_te]


def run_trace(noise_name, seeds, metasgd=False, n_steps=2, cols=(2, 0)):
    """Trace outputs per seed, and the meta-parameters (theta, Meta-SGD step sizes) as numpy."""
    with tf.Graph().as_default():
        model = build(noise_name, n_steps=n_steps, inner_lr=0.5, metasgd=metasgd)
        xtr, ytr, xte = two_way()
        out = model.trace(tf.constant(xtr), tf.constant(ytr), tf.constant(xte), tf.constant(cols), 3, 4)
        feats = model.forward(tf.constant(xte), model.theta)[0]
        blocks = model.blocks(tf.constant(xte), model.theta)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            randomize(sess, model.meta_params)
            params = sess.run({"theta": model.theta, "lr": model.lr if metasgd else {}})
            runs = [sess.run(out, {model.noise_seed: s}) for s in seeds]
            feats, blocks = sess.run([feats, blocks])
    return runs, params, (xtr, ytr), (feats, blocks)


@pytest.mark.parametrize("metasgd", [False, True])
def test_maml_trace_steps_are_sgd_on_the_two_columns(metasgd):
    # Without noise the last layer's step needs only the features H:
    # w' = w - lr * H^T (softmax(H w + b) - Y) / N, b' = b - lr * mean(softmax(H w + b) - Y).
    (out,), params, (_, ytr), _ = run_trace("none", [np.array([1, 2])], metasgd=metasgd)
    cols = [2, 0]
    assert out["htr"].shape == (3, 4, ARCH.feat_dim) and out["hte"].shape == (3, 6, ARCH.feat_dim)
    assert out["htr_samp"].shape == (3, 0, 4, ARCH.feat_dim)  # MAML: no perturbed samples
    assert out["w"].shape == (3, ARCH.feat_dim, 2) and out["b"].shape == (3, 2)
    theta = params["theta"]
    np.testing.assert_allclose(out["w"][0], theta["dense_w"][:, cols])
    np.testing.assert_allclose(out["b"][0], theta["dense_b"][cols])
    lr_w = params["lr"]["dense_w"][:, cols] if metasgd else 0.5
    lr_b = params["lr"]["dense_b"][cols] if metasgd else 0.5
    for step in range(2):
        h, w, b = out["htr"][step], out["w"][step], out["b"][step]
        g = softmax(h @ w + b) - ytr
        np.testing.assert_allclose(out["w"][step + 1], w - lr_w * (h.T @ g) / len(h), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(out["b"][step + 1], b - lr_b * g.mean(0), rtol=1e-9, atol=1e-12)
    # The conv layers adapt too: the features move between steps.
    assert np.max(np.abs(out["htr"][1] - out["htr"][0])) > 1e-6


def test_metadrop_trace_perturbs_only_the_samples():
    seeds = [np.array([1, 2]), np.array([5, 6]), np.array([1, 2])]
    (a, b, c), _, _, (feats, blocks) = run_trace("metadrop", seeds)
    assert a["htr_samp"].shape == (3, 4, 4, ARCH.feat_dim)
    np.testing.assert_array_equal(a["htr"][0], b["htr"][0])  # step 0 features are deterministic
    np.testing.assert_array_equal(a["w"][0], b["w"][0])
    for k in a:
        np.testing.assert_array_equal(a[k], c[k])  # same seed, same trace
    assert np.max(np.abs(a["htr_samp"][0] - b["htr_samp"][0])) > 1e-3  # other seed, other noise
    assert np.min(np.std(a["htr_samp"][0], axis=0).max(axis=1)) > 1e-4  # the samples differ
    assert np.max(np.abs(a["w"][1] - b["w"][1])) > 1e-6  # the inner steps see the noise
    # Model.blocks: one output per conv block, the last one being forward's features.
    assert [bl.shape[1:3] for bl in blocks] == [(4, 4), (2, 2)]
    np.testing.assert_allclose(blocks[-1].reshape(len(feats), -1), feats, rtol=1e-12)


# End to end on the offline digits data with a 2-iteration meta-training.
TINY = [
    "--dataset",
    "digits",
    "--way",
    "5",
    "--shot",
    "2",
    "--query",
    "3",
    "--metabatch",
    "1",
    "--inner_lr",
    "0.5",
]


def train_and_export(tmp_path_factory, name, extra):
    savedir = str(tmp_path_factory.mktemp(name))
    flags = [*TINY, *extra, "--savedir", savedir]
    train = ["--mode", "meta_train", "--n_train_iters", "2", "--val_freq", "2", "--n_val_iters", "1"]
    assert main.main([*flags, *train]) == 0
    assert main.main([*flags, "--mode", "export", "--n_test_mc_samp", "2"]) == 0
    with np.load(os.path.join(savedir, "export.npz"), allow_pickle=False) as z:
        return savedir, flags, {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def maml(tmp_path_factory):
    return train_and_export(tmp_path_factory, "maml", ["--maml", "--n_steps", "1"])


@pytest.fixture(scope="module")
def metadrop(tmp_path_factory):
    return train_and_export(tmp_path_factory, "metadrop", ["--n_steps", "2"])


def check_trace(savedir, ex, n_steps, n_samp):
    f = 32  # digits: 32 filters, 16x16 inputs pooled four times to 1x1
    shapes = {
        "htr": (10, n_steps + 1, 4, f),
        "hte": (10, n_steps + 1, 6, f),
        "htr_samp": (10, n_steps + 1, n_samp, 4, f),
        "w": (10, n_steps + 1, f, 2),
        "b": (10, n_steps + 1, 2),
        "ytr": (10, 4),
        "yte": (10, 6),
        "cols": (10, 2),
    }
    assert {k: ex[k].shape for k in shapes} == shapes
    assert (ex["ytr"] == [0, 0, 1, 1]).all() and (ex["yte"] == [0, 0, 0, 1, 1, 1]).all()
    assert ((ex["cols"] >= 0) & (ex["cols"] < 5)).all() and (ex["cols"][:, 0] != ex["cols"][:, 1]).all()
    # Step 0 is the checkpoint's last layer, restricted to the task's two columns (Appendix C).
    reader = tf.train.load_checkpoint(os.path.join(savedir, "ckpt"))
    dense_w, dense_b = reader.get_tensor("theta/dense_w"), reader.get_tensor("theta/dense_b")
    for t, cols in enumerate(ex["cols"]):
        np.testing.assert_array_equal(ex["w"][t, 0], dense_w[:, cols])
        np.testing.assert_array_equal(ex["b"][t, 0], dense_b[cols])
    assert np.min(np.abs(ex["w"][:, -1] - ex["w"][:, 0]).max(axis=(1, 2))) > 1e-6  # every task adapts
    # Figure 8's last block of the first task's query images is that task's step-0 features.
    np.testing.assert_allclose(ex["fmap4"][0].reshape(6, f), ex["hte"][0, 0][ex["fmap_idx"]], rtol=1e-5)
    assert ex["fmap_x"].shape == (6, 16, 16, 1)
    assert [ex[f"fmap{l}"].shape for l in range(1, 5)] == [
        (1 + min(n_samp, 2), 6, s, s, f) for s in (8, 4, 2, 1)
    ]
    meta = json.loads(str(ex["meta"]))
    assert meta["train_iters"] == 2 and meta["n_steps"] == n_steps and meta["dataset"] == "digits"
    assert meta["noise_title"] == noise.get(meta["noise"]).title  # plot.py's titles


def plot(*args):
    proc = subprocess.run(
        [sys.executable, "plot.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def check_png(path, faded=False):
    """A decodable figure with both classes' colours; `faded`: also the pale perturbed points."""
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert img.shape[0] > 200 and img.shape[1] > 200 and img.std() > 10
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50

    def near(rgb, tol=12):
        return int((np.abs(img - rgb).max(axis=2) <= tol).sum())

    assert near((178, 34, 34)) > 50 and near((65, 105, 225)) > 50  # firebrick c1, royalblue c2 points
    # Perturbed points: firebrick at alpha 0.3 over white.
    assert (near((232, 189, 189)) > 20) == faded


def test_maml_export_and_plots(maml):
    savedir, _, ex = maml
    check_trace(savedir, ex, n_steps=1, n_samp=0)
    plot("--savedir", savedir)  # the README's command
    for k in range(2):
        files = sorted(os.listdir(os.path.join(savedir, "plot", f"step{k}")))
        assert files == sorted(f"{t}.png" for t in range(10))
    check_png(os.path.join(savedir, "plot", "step1", "0.png"))


def test_metadrop_export_plots_and_features(metadrop):
    savedir, _, ex = metadrop
    check_trace(savedir, ex, n_steps=2, n_samp=10)
    assert np.max(np.abs(ex["htr_samp"] - ex["htr"][:, :, None])) > 1e-3  # the samples are perturbed
    assert np.max(np.abs(ex["fmap1"][1] - ex["fmap1"][0])) > 1e-3
    plot("--savedir", savedir, "--tasks", "1", "--tsne_iter", "250")
    assert sorted(os.listdir(os.path.join(savedir, "plot"))) == ["step0", "step1", "step2"]
    for k in range(3):
        check_png(os.path.join(savedir, "plot", f"step{k}", "0.png"), faded=True)
    out = plot("--savedir", savedir, "--features", "--layer", "2", "--channels", "3")
    path = os.path.join(savedir, "plot", "features", "layer2_channel3.png")
    assert path in out.stdout
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert img.std() > 10 and len(np.unique(img.reshape(-1, 3), axis=0)) > 20


def test_export_refuses_other_flags_and_missing_checkpoints(maml, tmp_path, capsys):
    savedir, flags, _ = maml
    assert main.main([*flags, "--mode", "export", "--way", "4"]) == 2
    assert "trained with other settings (way" in capsys.readouterr().err
    no_maml = [f for f in flags if f != "--maml"]
    assert main.main([*no_maml, "--mode", "export"]) == 2
    assert "(noise" in capsys.readouterr().err
    assert main.main([*TINY, "--savedir", str(tmp_path), "--mode", "export"]) == 2
    assert "run --mode meta_train" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "export.npz")
