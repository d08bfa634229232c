"""plot.py: the geometry of Appendix C (Eq. 11-14) and the figures, on synthetic exports (no TensorFlow)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

import plot


def logit_gap(h, w, b):
    """Logit of c1 minus logit of c2 for features h [..., F]."""
    z = h @ w + b
    return z[..., 0] - z[..., 1]


def test_boundary_x_is_where_the_two_logits_are_equal():
    rng = np.random.default_rng(0)
    for _ in range(20):
        f = int(rng.integers(2, 40))
        w, b = rng.normal(size=(f, 2)), rng.normal(size=2)
        u = plot.unit_normal(w)
        # Along any line h(s) = r + s u the gap is affine in s: find its zero from two evaluations.
        r = rng.normal(size=f) * 3
        g0, g1 = logit_gap(r, w, b), logit_gap(r + u, w, b)
        h_star = r - g0 / (g1 - g0) * u
        assert abs(logit_gap(h_star, w, b)) < 1e-9
        assert h_star @ u == pytest.approx(plot.boundary_x(w, b), abs=1e-9)
        # c1 wins to the right of the line, c2 to the left.
        assert logit_gap(h_star + 0.1 * u, w, b) > 0 > logit_gap(h_star - 0.1 * u, w, b)


def test_projection_plus_remainder_reconstructs_the_features():
    rng = np.random.default_rng(1)
    h, w = rng.normal(size=(30, 12)), rng.normal(size=(12, 2))
    u = plot.unit_normal(w)
    assert np.linalg.norm(u) == pytest.approx(1.0)
    x, rest = plot.project(h, u)
    np.testing.assert_allclose(x[:, None] * u + rest, h, atol=1e-12)
    np.testing.assert_allclose(rest @ (w[:, 0] - w[:, 1]), 0, atol=1e-10)  # nothing left along the normal
    np.testing.assert_allclose(x**2 + (rest**2).sum(1), (h**2).sum(1))  # Pythagoras
    np.testing.assert_allclose(
        x, [np.dot(hi, w[:, 0] - w[:, 1]) / np.linalg.norm(w[:, 0] - w[:, 1]) for hi in h]
    )


def test_unit_normal_needs_two_different_columns():
    with pytest.raises(ValueError, match="no decision hyperplane"):
        plot.unit_normal(np.ones((4, 2)))


def test_embed_keeps_the_projection_and_separates_the_remainder():
    # Two clusters apart only orthogonally to u; along u, large noise. The t-SNE axis must separate them.
    rng = np.random.default_rng(2)
    f, n = 10, 20
    w = rng.normal(size=(f, 2))
    u = plot.unit_normal(w)
    v = rng.normal(size=f)
    v -= (v @ u) * u
    v /= np.linalg.norm(v)
    side = np.repeat([-1.0, 1.0], n // 2)
    h = 5 * side[:, None] * v + 0.05 * rng.normal(size=(n, f))
    h += (20 * rng.normal(size=n) - h @ u)[:, None] * u
    xy = plot.embed(h, w, perplexity=30, max_iter=250, seed=0)  # perplexity capped to the 20 points
    np.testing.assert_allclose(xy[:, 0], h @ u)
    y = xy[:, 1]
    assert np.isfinite(y).all()
    assert y[side < 0].max() < y[side > 0].min() or y[side > 0].max() < y[side < 0].min()
    assert plot.embed(h[:3], w, 30, 250, 0).shape == (3, 2)  # even 3 points work


def synthetic_export(savedir, n_samp=3, noise="metadrop"):
    """An export.npz of the layout main.py writes: 2 tasks, 1 step, 2 + 2 training and 4 + 4 test points."""
    rng = np.random.default_rng(3)
    t, k, f = 2, 2, 6
    w = rng.normal(size=(t, k, f, 2))
    u = (w[..., 0] - w[..., 1]) / np.linalg.norm(w[..., 0] - w[..., 1], axis=-1, keepdims=True)
    ytr, yte = np.repeat([0, 1], 2), np.repeat([0, 1], 4)

    def points(y, *lead):  # class c1 on the positive side of u, c2 on the negative
        h = rng.normal(size=(*lead, t, k, len(y), f))
        return h + 3 * (1 - 2 * y)[:, None] * u[:, :, None, :]

    arrays = {
        "htr": points(ytr),
        "hte": points(yte),
        "htr_samp": np.moveaxis(points(ytr, n_samp), 0, 2),
        "w": w,
        "b": np.zeros((t, k, 2)),
        "ytr": np.tile(ytr, (t, 1)),
        "yte": np.tile(yte, (t, 1)),
        "cols": np.array([[3, 1], [0, 4]]),
        "fmap_idx": np.arange(3),
        "fmap_x": rng.random((3, 8, 8, 1)),
        "fmap1": rng.random((1 + min(n_samp, 2), 3, 4, 4, 5)),
        "meta": np.array(json.dumps({"noise": noise, "dataset": "synthetic"})),
    }
    os.makedirs(savedir, exist_ok=True)
    np.savez(os.path.join(savedir, "export.npz"), **arrays)


def colour_pixels(path, rgb, tol=12):
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int((np.abs(img - rgb).max(axis=2) <= tol).sum())


@pytest.mark.parametrize("n_samp", [3, 0])
def test_plots_every_task_and_step(tmp_path, n_samp, capsys):
    synthetic_export(tmp_path, n_samp, "metadrop" if n_samp else "none")
    assert plot.main(["--savedir", str(tmp_path), "--tsne_iter", "250"]) == 0
    assert "wrote 4 figures" in capsys.readouterr().out
    for k in range(2):
        assert sorted(os.listdir(tmp_path / "plot" / f"step{k}")) == ["0.png", "1.png"]
        path = tmp_path / "plot" / f"step{k}" / "1.png"
        img = np.asarray(Image.open(path).convert("RGB")).astype(int)
        assert img.shape[0] > 200 and img.std() > 10
        assert colour_pixels(path, (178, 34, 34)) > 50 and colour_pixels(path, (65, 105, 225)) > 50
        assert (colour_pixels(path, (232, 189, 189)) > 20) == bool(n_samp)  # faded perturbed points
    assert not [p for p in tmp_path.rglob("*.tmp*")]


def test_feature_maps(tmp_path):
    synthetic_export(tmp_path)
    assert plot.main(["--savedir", str(tmp_path), "--features", "--channels", "4", "0"]) == 0
    img = np.asarray(Image.open(tmp_path / "plot" / "features" / "layer1_channel4-0.png").convert("RGB"))
    assert img.std() > 10 and len(np.unique(img.reshape(-1, 3), axis=0)) > 50


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--features", "--layer", "3"], "--layer 3: export.npz holds layers [1]"),
        (["--features", "--channels", "5"], "--channels [5]: layer 1 has channels 0..4"),
    ],
)
def test_bad_feature_flags(tmp_path, capsys, argv, message):
    synthetic_export(tmp_path)
    assert plot.main(["--savedir", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_bad_or_missing_export(tmp_path, capsys):
    assert plot.main(["--savedir", str(tmp_path)]) == 2
    assert "run main.py --mode export" in capsys.readouterr().err
    (tmp_path / "export.npz").write_bytes(b"not a zip")
    assert plot.main(["--savedir", str(tmp_path)]) == 2
    assert "is not a .npz file: it is neither .npy nor .npz" in capsys.readouterr().err
    np.savez(tmp_path / "export.npz", htr=np.zeros(3))
    assert plot.main(["--savedir", str(tmp_path)]) == 2
    assert "lacks hte" in capsys.readouterr().err
    synthetic_export(tmp_path, n_samp=0, noise="none")
    assert plot.main(["--savedir", str(tmp_path), "--features"]) == 2
    assert "needs a Meta-dropout export" in capsys.readouterr().err
    assert not (tmp_path / "plot").exists()
    with pytest.raises(SystemExit):
        plot.parse_args(["--savedir", str(tmp_path), "--tsne_iter", "10"])


def write_robust(path, norm, config, eps=(0.0, 0.1, 0.3), clean=60.0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rows = [{"eps": e, "step_size": 0.0, "mean": clean - 100 * e, "ci95": 1.0} for e in eps]
    result = {"norm": norm, "steps": 20, "n": 10, "clean": {"mean": clean, "ci95": 1.0}, "adversarial": rows}
    result.update(
        train_iters=100, source="test split", step_size_rule="2.5 * eps / steps"
    )  # as main.py wrote
    with open(path, "w") as f:
        json.dump({**result, "config": {"dataset": "digits", "way": 5, "shot": 1, **config}}, f)


def test_robustness_curves(tmp_path, capsys):
    maml = {"noise": "none", "maml": True}
    write_robust(str(tmp_path / "maml" / "robust_linf.json"), "linf", maml)
    write_robust(str(tmp_path / "maml" / "robust_l2.json"), "l2", maml, eps=(0.5, 1.0), clean=55.0)
    adv = {**maml, "adv_inner": "l1", "adv_eps": 2.0}
    write_robust(str(tmp_path / "adv" / "robust_linf.json"), "linf", adv)
    found = {(r["norm"], r["label"]): r["points"] for r in plot.load_robust(str(tmp_path))}
    assert set(found) == {
        ("linf", "maml (20 steps, 10 episodes)"),
        ("l2", "maml (20 steps, 10 episodes)"),
        ("linf", "maml+adv(l1,eps=2) (20 steps, 10 episodes)"),
    }
    # eps = 0 comes from the clean accuracy when the sweep left it out
    assert found["l2", "maml (20 steps, 10 episodes)"] == [
        (0.0, 55.0, 1.0),
        (0.5, 5.0, 1.0),
        (1.0, -45.0, 1.0),
    ]
    assert plot.main(["--robustness", str(tmp_path)]) == 0
    assert Image.open(tmp_path / "robustness.png").size[0] > 500
    (tmp_path / "adv" / "robust_linf.json").write_text('{"norm": "linf"}')
    assert plot.main(["--robustness", str(tmp_path)]) == 2
    assert "is not a robustness result" in capsys.readouterr().err
    assert plot.main(["--robustness", str(tmp_path / "adv" / "none")]) == 2
    assert "no robust_<norm>.json" in capsys.readouterr().err
