"""Each perturbation's defining property (Tables 2-3), hyperparameter checks and the episode samplers."""

import itertools

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats
from tiny import ARCH, QUERY, SHOT, build, episodes, randomize

import main
import noise
from data.episodes import sample_batch
from model import PHI

F64 = tf.float64


def draw(groups: int = 1, seed=(11, 12)) -> noise.Draw:
    return noise.Draw(tf.constant(seed, tf.int64), itertools.count(1), groups, F64)


def softplus(x):
    return np.logaddexp(0, x)


def constant_net(phi: dict, l: int, bias: np.ndarray, name: str = "conv") -> dict:
    """phi with block l's 3x3 conv `name` replaced by a zero kernel and `bias`: its output is `bias`."""
    phi = dict(phi)
    phi[f"{name}{l}_w"] = tf.zeros_like(phi[f"{name}{l}_w"])
    phi[f"{name}{l}_b"] = tf.constant(bias, F64)
    return phi


def init_phi(layer: noise.Perturbation) -> dict:
    with tf.compat.v1.variable_scope("phi"):
        return layer.init_phi(ARCH.convs, ARCH.feat_dim, F64)


def run(fetch, feed=None):
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        return sess.run(fetch, feed)


def test_fixed_gaussian_has_no_variables():
    with tf.Graph().as_default():
        model = build("fixed_gaussian")
        assert model.phi == {}
        assert not [v for v in tf.compat.v1.global_variables() if v.name.startswith("phi/")]
        # Its noise is still there: softplus(a), a ~ N(0, I) (mean of softplus(N(0, 1)) > log 2 = a = 0).
        f = tf.ones([4000, 1, 1, 3], F64)
        z, _ = noise.get("fixed_gaussian").conv({}, 0, f, f, draw())
        z_det, _ = noise.get("fixed_gaussian").conv({}, 0, f, f, None)
        z, z_det = run([z, z_det])
    np.testing.assert_allclose(z_det, np.log(2))
    grid = np.linspace(-12, 12, 200001)
    exact = np.trapezoid(softplus(grid) * np.exp(-0.5 * grid**2) / np.sqrt(2 * np.pi), grid)
    assert abs(z.mean() - exact) < 4 * z.std() / np.sqrt(z.size)


def test_independent_gaussian_mu_is_per_channel_and_noise_ignores_the_input():
    layer = noise.get("independent_gaussian")
    with tf.Graph().as_default():
        phi = init_phi(layer)
        assert {k: v.shape.as_list() for k, v in phi.items()} == {
            f"mu{l}": [cout] for l, (_, cout) in enumerate(ARCH.convs)
        }
        rng = np.random.default_rng(0)
        f = tf.ones([5, 4, 4, ARCH.filters], F64)
        h1, h2 = (tf.constant(rng.random([5, 4, 4, 1])) for _ in range(2))
        z1, _ = layer.conv(phi, 0, h1, f, draw())
        z2, _ = layer.conv(phi, 0, h2, f, draw())  # another input, the same noise seed
        z3, _ = layer.conv(phi, 0, h1, f, draw(seed=(3, 4)))
        z1, z2, z3 = run([z1, z2, z3])
    np.testing.assert_array_equal(z1, z2)
    assert np.abs(z1 - z3).max() > 1e-3


@pytest.mark.parametrize("gamma", [0.2, 1.0, 2.0])
def test_mixup_soft_labels_and_beta_lambda(gamma):
    # Two examples per sample, labels eye(2): a sample that swaps the pair has y[0] = (lam, 1 - lam).
    layer, g = noise.get("mixup", gamma=gamma), 3000
    with tf.Graph().as_default():
        rng = np.random.default_rng(1)
        h = np.tile(rng.random([2, 3, 3, 1]), [g, 1, 1, 1])
        y = np.tile(np.eye(2), [g, 1])
        d = draw(g)
        h0, y0 = layer.mix(0, 2, tf.constant(h), tf.constant(y), d)
        h1, y1 = layer.mix(1, 2, tf.constant(h), y0, d)  # the same pass, block 1's input
        h0, y0, h1, y1 = run([h0, y0, h1, y1])
    np.testing.assert_array_equal(y0, y1)  # labels are mixed once
    np.testing.assert_allclose(y0.sum(1), 1.0)
    assert y0.min() >= 0
    y0 = y0.reshape(g, 2, 2)
    swapped = y0[:, 0, 1] > 0
    assert 0.3 < swapped.mean() < 0.7
    assert stats.kstest(y0[swapped, 0, 0], "beta", args=(gamma, gamma)).pvalue > 1e-3
    # Exactly one of the layers (the input or block 1's) is mixed in each sample, with the labels' weights.
    hg = h.reshape(g, 2, -1)
    mixed = np.einsum("gij,gjd->gid", y0, hg)
    at = [
        np.isclose(out.reshape(g, 2, -1), mixed).all((1, 2))
        & ~np.isclose(out.reshape(g, 2, -1), hg).all((1, 2))
        for out in (h0, h1)
    ]
    kept = [np.isclose(out.reshape(g, 2, -1), hg).all((1, 2)) for out in (h0, h1)]
    moved = swapped & ~np.isclose(y0[:, 0, 0], 1.0)
    assert np.all((at[0] & kept[1]) | (kept[0] & at[1]) | ~moved)
    assert 0.3 < at[0][moved].mean() < 0.7


def test_vib_kl_matches_the_closed_form_and_the_noise_std():
    layer = noise.get("vib", beta=1e-2)
    sig_in = np.array([-1.0, 0.3, 2.0])
    n = 4000
    with tf.Graph().as_default():
        phi0 = init_phi(layer)
        phi = constant_net(phi0, 0, sig_in)
        rng = np.random.default_rng(2)
        f = rng.normal(size=[n, 2, 2, 3])
        z, reg = layer.conv(phi, 0, tf.zeros([n, 2, 2, 1], F64), tf.constant(f), draw())
        z, reg, bias0 = run([z, reg, phi0["conv0_b"]])
    # sigma starts at softplus(-5), as Alemi et al. (2017, Section 4.1).
    np.testing.assert_allclose(softplus(bias0), np.log1p(np.exp(-5.0)), rtol=1e-12)
    sigma = softplus(sig_in)
    # KL[N(f, sigma^2) || N(0, 1)] per unit, averaged over the block's units and the examples.
    kl = np.log(1 / sigma) + (sigma**2 + f**2) / 2 - 0.5
    np.testing.assert_allclose(reg, 1e-2 * kl.reshape(n, -1).mean(1).mean(), rtol=1e-12)
    eps = (z - f).reshape(-1, 3)
    assert np.all(np.abs(eps.std(0) - sigma) < 5 * sigma / np.sqrt(2 * len(eps)))
    # The Monte-Carlo KL estimate E_q[log q(z) - log p(z)] agrees within its standard error.
    logq = stats.norm.logpdf(z, f, sigma)
    logp = stats.norm.logpdf(z)
    per_example = (logq - logp).reshape(n, -1).mean(1)
    assert abs(per_example.mean() - reg / 1e-2) < 4 * per_example.std() / np.sqrt(n)


def test_information_dropout_kl_and_log_normal_noise():
    layer = noise.get("infodrop", beta=1e-3, alpha_max=0.7)
    a_in = np.array([-2.0, 0.0, 1.5])
    n = 4000
    with tf.Graph().as_default():
        phi = constant_net(init_phi(layer), 0, a_in)
        rng = np.random.default_rng(3)
        f = rng.normal(size=[n, 2, 2, 3])
        z, reg = layer.conv(phi, 0, tf.zeros([n, 2, 2, 1], F64), tf.constant(f), draw())
        z, reg = run([z, reg])
    alpha = 0.7 / (1 + np.exp(-a_in))
    # KL to the log-uniform prior for ReLU units (Achille & Soatto 2018): -log alpha where f > 0 (+ const).
    kl = np.where(f > 0, -np.log(alpha), 0.0)
    np.testing.assert_allclose(reg, 1e-3 * kl.reshape(n, -1).sum(1).mean(), rtol=1e-12)
    log_eps = np.log(z / f).reshape(-1, 3)
    assert np.all(np.abs(log_eps.mean(0)) < 4 * alpha / np.sqrt(len(log_eps)))
    assert np.all(np.abs(log_eps.std(0) - alpha) < 5 * alpha / np.sqrt(2 * len(log_eps)))


def test_additive_metadrop_noise_std_is_lambda_sigma():
    layer = noise.get("metadrop_add", lam=0.1)
    s_in = np.array([-0.5, 0.0, 2.5])
    n = 4000
    with tf.Graph().as_default():
        phi = constant_net(init_phi(layer), 0, s_in)
        f = np.random.default_rng(4).normal(size=[n, 2, 2, 3])
        z, _ = layer.conv(phi, 0, tf.zeros([n, 2, 2, 1], F64), tf.constant(f), draw())
        z_det, _ = layer.conv(phi, 0, tf.zeros([n, 2, 2, 1], F64), tf.constant(f), None)
        z, z_det = run([z, z_det])
    np.testing.assert_array_equal(z_det, f)
    std = 0.1 * softplus(s_in)
    eps = (z - f).reshape(-1, 3)
    assert np.all(np.abs(eps.mean(0)) < 4 * std / np.sqrt(len(eps)))
    assert np.all(np.abs(eps.std(0) - std) < 5 * std / np.sqrt(2 * len(eps)))


def test_weight_gaussian_draws_one_kernel_per_sample():
    layer = noise.get("weight_gaussian")
    with tf.Graph().as_default():
        phi = init_phi(layer)
        w = tf.constant(np.random.default_rng(5).normal(size=[3, 3, 1, ARCH.filters]))
        b = tf.zeros([ARCH.filters], F64)
        h = tf.constant(np.tile(np.random.default_rng(6).random([2, 4, 4, 1]), [3, 1, 1, 1]))
        f = layer.linear(phi, 0, h, w, b, draw(groups=3))
        f_det = layer.linear(phi, 0, h, w, b, None)
        f, f_det, rho = run([f, f_det, phi["rho0"]])
    np.testing.assert_allclose(softplus(rho), 0.01)
    groups = f.reshape(3, 2, -1)
    assert np.abs(groups[0] - groups[1]).max() > 1e-4  # each sample its own kernel
    assert np.abs(f - f_det).max() < 0.2  # around the mean kernel


@pytest.mark.parametrize("name, adapted", [("more_param", True), ("deterministic_metadrop", False)])
def test_which_phi_the_inner_loop_adapts(name, adapted):
    with tf.Graph().as_default():
        model = build(name)
        ph = model.placeholders(1, SHOT, QUERY, "t")
        theta_star = model.adapt(ph["xtr"][0], ph["ytr"][0], n_samp=1)
        phi_star = model._phi(theta_star)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            randomize(sess, model.meta_params)
            feed = {ph[k]: v for k, v in episodes(1).items()}
            phi0, phi1 = sess.run([model.phi, phi_star], feed)
    assert phi0 and set(phi0) == set(phi1)
    assert any(k.startswith(PHI) for k in theta_star) == adapted
    change = max(np.abs(phi0[k] - phi1[k]).max() for k in phi0)
    assert change > 1e-6 if adapted else change == 0


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--noise", "mixup", "--noise_hp", "gamma=0"], "gamma must be > 0"),
        (["--noise", "mixup", "--noise_hp", "gamma=-1"], "gamma must be > 0"),
        (["--noise", "vib", "--noise_hp", "betta=1e-4"], "no hyperparameter 'betta'"),
        (["--noise", "metadrop", "--noise_hp", "gamma=1"], "takes no hyperparameters"),
        (["--maml", "--noise_hp", "beta=1"], "takes no hyperparameters"),
        (["--noise", "infodrop", "--noise_hp", "beta=x"], "is not a float"),
        (["--noise", "vib", "--noise_hp", "beta"], "write K=V"),
        (["--noise", "vib", "--noise_hp", "beta=nan"], "not finite"),
        (["--noise", "dropout"], "unknown perturbation"),
    ],
)
def test_bad_hyperparameters_exit_2_with_a_message(capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        main.parse_args(["--savedir", "x", *flags])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_hyperparameters_are_resolved_for_the_config():
    args = main.parse_args(["--savedir", "x", "--noise", "infodrop", "--noise_hp", "beta=1e-4"])
    assert args.noise_hp == {"beta": 1e-4, "alpha_max": 0.7}
    assert args.noise_title == noise.get("infodrop").title
    assert main.parse_args(["--savedir", "x", "--maml"]).noise_hp == {}


def labelled_split(n_classes: int = 30, n_examples: int = 20) -> np.ndarray:
    """Each example's features are (class id, example id)."""
    c, e = np.meshgrid(np.arange(n_classes), np.arange(n_examples), indexing="ij")
    return np.stack([c, e], axis=-1).astype(np.float32)


@pytest.mark.parametrize("sampler", ["original", "independent"])
def test_original_sampler_shares_classes_across_the_batch(sampler):
    rng = np.random.default_rng(0)
    for _ in range(10):
        b = sample_batch(labelled_split(), 4, way=5, shot=2, query=3, rng=rng, sampler=sampler)
        # The class of each label in each task, and the examples each task holds.
        classes = [tuple(b["xtr"][t][b["ytr"][t].argmax(1) == c][0, 0] for c in range(5)) for t in range(4)]
        examples = [frozenset(map(tuple, np.concatenate([b["xtr"][t], b["xte"][t]]))) for t in range(4)]
        if sampler == "original":
            assert len(set(classes)) == 1
            assert len(set(examples)) == 4  # each task its own examples
        else:
            assert len({frozenset(c) for c in classes}) == 4


# Where each hyperparameter acts (hooks of noise.Perturbation) and a second value for it; every
# registered perturbation's hyperparameters must be listed, so a new one is checked the day it comes.
HP_SITES = {
    ("metadrop_add", "lam"): (("conv", "dense"), 0.3),
    ("vib", "beta"): (("conv",), 2e-3),
    ("infodrop", "beta"): (("conv",), 2e-5),
    ("infodrop", "alpha_max"): (("conv",), 0.35),
    ("mixup", "gamma"): (("mix",), 2.0),
    ("metaperturb", "clipval"): (("act",), 0.5),
    ("metaperturb", "double_bessel"): (("act",), 1),
}
HP_CASES = [
    (name, hp, hook, l)
    for (name, hp), (hooks, _) in HP_SITES.items()
    for hook in hooks
    for l in (range(ARCH.n_blocks) if hook != "dense" else [0])
]


def test_every_hyperparameter_has_its_sites_listed():
    registered = {(n, k) for n, cls in noise.PERTURBATIONS.items() for k in noise.get(n).hp()}
    assert registered == set(HP_SITES)


def hook_outputs(layer: noise.Perturbation, phi: dict, hook: str, l: int, scope: str) -> list:
    """What `hook` of block l returns for fixed random inputs and noise (seed fixed), with the
    running statistics a training-mode `act` assigns."""
    rng = np.random.default_rng(l)
    cin, cout = ARCH.convs[l]
    side = ARCH.hw >> l
    h = tf.constant(rng.standard_normal((8, side, side, cin)))
    f = tf.constant(rng.standard_normal((8, side, side, cout)))
    if hook == "mix":  # 8 samples of 1 example pair: every block is mixed in one of them
        y = tf.constant(np.tile(np.eye(2), (8, 1)))
        h = tf.constant(rng.standard_normal((16, side, side, cin)))
        return list(layer.mix(l, ARCH.n_blocks, h, y, draw(groups=8)))
    if hook == "conv":
        return [v for v in layer.conv(phi, l, h, f, draw()) if v is not None]
    if hook == "dense":
        feat = tf.constant(rng.standard_normal((8, ARCH.feat_dim)))
        logits = tf.constant(rng.standard_normal((8, ARCH.way)))
        return [v for v in layer.dense(phi, feat, logits, draw()) if v is not None]
    with tf.compat.v1.variable_scope(scope):
        site = noise.Site(float(ARCH.filters), float(ARCH.hw), stats=layer.init_stats(cout, F64))
    out = layer.act(phi, l, f, draw(), site)
    with tf.control_dependencies(site.updates):
        return [out, *(tf.identity(v) for v in site.stats.values())]


@pytest.mark.parametrize("name, hp, hook, l", HP_CASES)
def test_each_hyperparameter_changes_every_site_it_acts_on(name, hp, hook, l):
    # The same inputs, phi and noise with the default value and another: the hook's output (its
    # features, labels, regulariser or running statistics) changes at every block.
    default = noise.get(name)
    other = noise.get(name, **{hp: HP_SITES[name, hp][1]})
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(3)
        phi = init_phi(default)
        phi = {k: v + 0.1 * tf.random.normal(tf.shape(v), dtype=F64) for k, v in phi.items()}
        a = hook_outputs(default, phi, hook, l, "a")
        b = hook_outputs(other, phi, hook, l, "b")
        a, b = run([a, b])
    assert len(a) == len(b)
    assert any(np.abs(x - y).max() > 1e-9 * np.abs(x).max() for x, y in zip(a, b)), (name, hp, hook, l)
