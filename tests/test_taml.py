"""Bayesian TAML (taml.py, Model(learner=...)) against independent computations (spec section 7).

Tiny float64 graphs: 8x8 one-channel images, 2 blocks of 3 filters, 3-way any-shot tasks.
"""

import zlib

import numpy as np
import pytest
import tensorflow as tf
from scipy import integrate
from tiny import check_directional_fd

import layers
import noise
import taml
from layers import cross_entropy
from model import Arch, Model

ARCH = Arch(hw=8, channels=1, filters=3, way=3, n_blocks=2, dtype=tf.float64)
MAX_SHOT, QUERY = 4, 2
SHOTS = [[1, 3, 2], [4, 1, 1]]  # per task, per class: class and task imbalance
SEED = np.array([3, 4])  # fixes the posterior draws
ALL = dict(omega=True, gamma=True, z=True, max_shot=MAX_SHOT)


def anyshot(
    shots: list[list[int]], max_shot: int = MAX_SHOT, seed: int = 0, zero_padding: bool = False
) -> dict[str, np.ndarray]:
    """Padded episodes: real support rows at shuffled positions, padding rows with random images
    (they must not matter; zero images with zero_padding, as data/episodes.py makes them), zero labels
    and mask 0; `real` holds each task's unpadded (xtr, ytr)."""
    rng, pad_rng = np.random.default_rng(seed), np.random.default_rng(seed + max_shot)
    n_pad = ARCH.way * max_shot
    ep = {k: [] for k in ("xtr", "ytr", "mtr", "xte", "yte", "real")}
    for task in shots:
        y = np.repeat(np.eye(ARCH.way), task, axis=0)
        x = rng.random((len(y), ARCH.x_dim))
        pos = pad_rng.permutation(n_pad)[: len(y)]
        xtr, ytr, mtr = pad_rng.random((n_pad, ARCH.x_dim)), np.zeros((n_pad, ARCH.way)), np.zeros(n_pad)
        xtr *= not zero_padding
        xtr[pos], ytr[pos], mtr[pos] = x, y, 1.0
        ep["xtr"].append(xtr), ep["ytr"].append(ytr), ep["mtr"].append(mtr), ep["real"].append((x, y))
        ep["xte"].append(rng.random((ARCH.way * QUERY, ARCH.x_dim)))
        ep["yte"].append(np.repeat(np.eye(ARCH.way), QUERY, axis=0))
    return {k: v if k == "real" else np.stack(v) for k, v in ep.items()}


def build(learner: taml.Learner | None = None, metasgd: bool = False, n_steps: int = 1) -> Model:
    tf.compat.v1.set_random_seed(1)
    return Model(ARCH, noise.get("none"), 0.4, n_steps, metasgd=metasgd, learner=learner)


def set_values(sess, model: Model, zero_mu: bool = False) -> None:
    """The same random values, by variable name, in every graph; with zero_mu, the posterior means'
    output layers zero (mu = 0: the prior mean of every balancing variable)."""
    params = model.meta_params
    for p, v in zip(params, sess.run(params)):
        name = p.name.split(":")[0]
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        if name.startswith("lr/"):
            v = v * np.exp(0.3 * rng.standard_normal(v.shape))
        elif zero_mu and "_mu_" in name:
            v = np.zeros_like(v)
        else:
            v = v + 0.3 * rng.standard_normal(v.shape)
        p.load(v, sess)


def session() -> tf.compat.v1.Session:
    """A session without grappler's rewrites (as main.py on a CPU: they cost seconds per graph)."""
    config = tf.compat.v1.ConfigProto()
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    return tf.compat.v1.Session(config=config)


def feed_of(ph: dict, ep: dict) -> dict:
    return {ph[k]: ep[k] for k in ph}


def reference(metasgd: bool, ep: dict) -> tuple[float, dict]:
    """Today's MAML / Meta-SGD graph on each task's real rows only (no padding, no mask)."""
    with tf.Graph().as_default():
        model = build(metasgd=metasgd)
        losses = []
        for t, (x, y) in enumerate(ep["real"]):
            loss, _ = model.task(
                tf.constant(x), tf.constant(y), tf.constant(ep["xte"][t]), tf.constant(ep["yte"][t]), 1
            )
            losses.append(loss)
        loss = tf.reduce_mean(tf.stack(losses))
        grads = tf.gradients(loss, model.meta_params)
        with session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            set_values(sess, model)
            out, g = sess.run([loss, grads])
        return out, {p.name: v for p, v in zip(model.meta_params, g)}


@pytest.mark.parametrize(
    "case, learner, metasgd",
    [
        ("maml", taml.get(max_shot=MAX_SHOT), False),  # T1: all switches off (K = 1 here, 2 below)
        ("metasgd", taml.get(max_shot=MAX_SHOT), True),  # T2: alpha alone
        ("prior mean", taml.get(**ALL), True),  # T3: all on, mu = 0, posterior means
    ],
)
def test_reductions_to_maml_and_metasgd_on_padded_anyshot_tasks(case, learner, metasgd):
    # The padded, masked any-shot graph against today's graph on the real rows alone: loss (the
    # query cross-entropy) and the meta-gradient of every shared variable, to float64 precision.
    ep = anyshot(SHOTS)
    ref_loss, ref_grads = reference(metasgd, ep)
    with tf.Graph().as_default():
        model = build(learner, metasgd)
        ph = model.placeholders(2, 0, QUERY, "t", max_shot=MAX_SHOT)
        out = model.objective(ph, 1, sample=False)
        params = [p for p in model.meta_params if p.name in ref_grads]
        assert len(params) == len(ref_grads)
        grads = tf.gradients(out["cent"], params)
        with session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            set_values(sess, model, zero_mu=True)
            cent, g = sess.run([out["cent"], grads], feed_of(ph, ep))
    np.testing.assert_allclose(cent, ref_loss, rtol=1e-12)
    for p, v in zip(params, g):
        np.testing.assert_allclose(v, ref_grads[p.name], rtol=1e-9, atol=1e-12, err_msg=p.name)


ORIGINAL_SHOTS = [[1, 1, 2], [4, 2, 1]]  # 4 and 7 real rows: the original pads the first task to 7


def spec_objective(values: dict[str, np.ndarray], ep: dict, n_steps: int) -> tuple[tf.Tensor, dict]:
    """The original's Meta-SGD objective on any-shot tasks, from the spec alone (1.1, 1.2, 1.5, 1.6,
    2.2): each task's support is its real rows then zero rows (image and label) up to the largest
    support of the meta-batch; those rows enter batch norm and the mean of E3. Returns the query
    cross-entropy averaged over tasks and its gradients by variable name (values: name -> array)."""
    w = {k: tf.constant(v) for k, v in values.items()}
    theta0 = {k[len("theta/") :]: v for k, v in w.items() if k.startswith("theta/")}

    def forward(theta: dict, x: tf.Tensor) -> tf.Tensor:
        h = tf.reshape(x, [-1, ARCH.hw, ARCH.hw, ARCH.channels])
        for l in range(ARCH.n_blocks):
            h = tf.nn.conv2d(h, theta[f"conv{l}_w"], 1, "SAME") + theta[f"conv{l}_b"]
            mean = tf.reduce_mean(h, axis=[0, 1, 2])
            var = tf.reduce_mean(tf.square(h - mean), axis=[0, 1, 2])
            h = tf.nn.max_pool2d(
                tf.nn.relu((h - mean) / tf.sqrt(var + 1e-3) + w[f"bn/offset{l}"]), 2, 2, "VALID"
            )
        return tf.matmul(tf.reshape(h, [tf.shape(h)[0], -1]), theta["dense_w"]) + theta["dense_b"]

    def ce(theta: dict, x: np.ndarray, y: np.ndarray) -> tf.Tensor:  # mean over all rows, padding too
        return -tf.reduce_mean(tf.reduce_sum(y * tf.nn.log_softmax(forward(theta, tf.constant(x))), -1))

    n_max = max(len(y) for _, y in ep["real"])
    losses = []
    for t, (x, y) in enumerate(ep["real"]):
        x = np.vstack([x, np.zeros((n_max - len(x), x.shape[1]))])
        y = np.vstack([y, np.zeros((n_max - len(y), y.shape[1]))])
        theta = theta0
        for _ in range(n_steps):
            g = dict(zip(theta, tf.gradients(ce(theta, x, y), list(theta.values()))))
            theta = {k: v - w[f"lr/{k}"] * g[k] for k, v in theta.items()}
        losses.append(ce(theta, ep["xte"][t], ep["yte"][t]))
    loss = tf.reduce_mean(tf.stack(losses))
    return loss, dict(zip(w, tf.gradients(loss, list(w.values()))))


@pytest.mark.parametrize(
    "learner",
    [
        taml.get(max_shot=MAX_SHOT, original_padding=True),
        taml.get(**ALL, original_padding=True),  # posterior means at the prior's: Meta-SGD's inner loop
    ],
    ids=["metasgd", "all switches"],
)
def test_original_padding_is_the_original_padded_objective(learner):
    # Q3/Q14's original: every task padded to the largest support of its meta-batch (7 rows, not
    # way x max_shot = 12), the padding in batch norm and in N of E3 and E8; against the spec's
    # objective in a graph of its own (spec_objective) and the KL term over N + M = 7 + 6 rows.
    ep = anyshot(ORIGINAL_SHOTS, zero_padding=True)
    with tf.Graph().as_default():
        model = build(learner, metasgd=True, n_steps=2)
        ph = model.placeholders(2, 0, QUERY, "t", max_shot=MAX_SHOT)
        out = model.objective(ph, 1, sample=False)
        shared = {p.name[:-2]: p for p in model.meta_params if not p.name.startswith("psi/")}
        grads = dict(zip(shared, tf.gradients(out["cent"], list(shared.values()))))
        kls = [model._posterior(ph, t)[0].kl() for t in range(2)] if learner.enabled else []
        with session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            set_values(sess, model, zero_mu=True)
            values = sess.run(shared)
            ours, g, kls = sess.run([out, grads, kls], feed_of(ph, ep))
    with tf.Graph().as_default():
        loss, ref = spec_objective(values, ep, n_steps=2)
        with session() as sess:
            ref_loss, ref = sess.run([loss, ref])
    np.testing.assert_allclose(ours["cent"], ref_loss, rtol=1e-12)
    for k, v in ref.items():
        np.testing.assert_allclose(g[k], v, rtol=1e-9, atol=1e-12, err_msg=k)
    n_rows = max(map(sum, ORIGINAL_SHOTS)) + ARCH.way * QUERY
    np.testing.assert_allclose(ours["kl"], np.mean(kls) / n_rows if kls else 0.0, rtol=1e-12)


def test_more_padding_changes_nothing_and_the_kl_is_weighted_by_the_real_rows():
    # The same tasks padded to 4 and to 6 shots: loss (with the KL term), accuracy and every
    # meta-gradient equal; the KL term is the closed form over the task's own N + M rows (E8).
    outs = []
    for max_shot in (MAX_SHOT, 6):
        ep = anyshot(SHOTS, max_shot)
        with tf.Graph().as_default():
            model = build(taml.get(**ALL), metasgd=True)
            ph = model.placeholders(2, 0, QUERY, "t", max_shot=max_shot)
            out = model.objective(ph, 1, sample=True)
            grads = tf.gradients(out["loss"], model.meta_params)
            post = [model._posterior(ph, t)[0] for t in range(2)]
            with session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                set_values(sess, model)
                feed = {**feed_of(ph, ep), model.noise_seed: SEED}
                outs.append(sess.run([out, grads, [(p.mu, p.rho) for p in post]], feed))
    (a, ga, post), (b, gb, _) = outs
    for k in ("loss", "cent", "kl", "acc"):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-11, err_msg=k)
    for x, y in zip(ga, gb):
        np.testing.assert_allclose(x, y, rtol=1e-8, atol=1e-12)
    kl = []
    for t, (mu, rho) in enumerate(post):
        sig = {k: np.log1p(np.exp(rho[k])) for k in rho}
        total = sum(np.sum(-np.log(sig[k]) + (sig[k] ** 2 + mu[k] ** 2) / 2 - 0.5) for k in mu)
        kl.append(total / (sum(SHOTS[t]) + ARCH.way * QUERY))
    np.testing.assert_allclose(a["kl"], np.mean(kl), rtol=1e-12)
    np.testing.assert_allclose(a["loss"], a["cent"] + a["kl"], rtol=1e-14)


def test_kl_matches_numerical_integration_and_monte_carlo():
    # T4: KL[N(mu, softplus(rho)^2) || N(0, 1)] against quadrature of q log(q / p) and a
    # 10^6-sample estimate (4 standard errors); zero at mu = 0, sigma = 1.
    rng = np.random.default_rng(0)
    mu, rho = rng.normal(0, 1.5, 4), rng.normal(0, 1.5, 4)
    rho0 = np.log(np.expm1(1.0))  # softplus(rho0) = 1
    with tf.Graph().as_default(), session() as sess:
        each = sess.run([taml.gaussian_kl(tf.constant(m), tf.constant(r)) for m, r in zip(mu, rho)])
        total = sess.run(taml.gaussian_kl(tf.constant(mu), tf.constant(rho)))
        zero = sess.run(taml.gaussian_kl(tf.constant(0.0, tf.float64), tf.constant(rho0, tf.float64)))
    assert abs(zero) < 1e-15
    np.testing.assert_allclose(total, sum(each), rtol=1e-14)
    for m, r, kl in zip(mu, rho, each):
        s = np.log1p(np.exp(r))

        def log_ratio(x, m=m, s=s):
            return -np.log(s) - (x - m) ** 2 / (2 * s**2) + x**2 / 2

        def integrand(x, m=m, s=s):
            return np.exp(-((x - m) ** 2) / (2 * s**2)) / (s * np.sqrt(2 * np.pi)) * log_ratio(x)

        quad, _ = integrate.quad(integrand, m - 30 * s, m + 30 * s, limit=200)
        assert abs(kl - quad) < 1e-9, (m, s, kl, quad)
        samples = log_ratio(m + s * rng.standard_normal(10**6))
        assert abs(kl - samples.mean()) < 4 * samples.std() / 1e3, (m, s, kl, samples.mean())


def test_statistics_pooling_by_hand():
    # T6: per-class mean, population variance and (n - 1) / (max_shot - 1); a singleton class has
    # variance 0 and count 0; padding rows (zero labels) pool nowhere. Then pooling over classes.
    rng = np.random.default_rng(1)
    h = rng.standard_normal((6, 5))
    labels = [0, 1, 0, -1, 0, 2]  # -1: a padding row
    y = np.zeros((6, 3))
    for i, c in enumerate(labels):
        if c >= 0:
            y[i, c] = 1
    with tf.Graph().as_default(), session() as sess:
        table, count = taml.stat_pool(tf.constant(h), tf.constant(y), max_shot=5)
        u = tf.constant(rng.standard_normal((3, 4)))
        pooled = taml.set_pool(u, count)
        table, count, pooled, u = sess.run([table, count, pooled, u])
    for c in range(3):
        rows = [h[i] for i in range(6) if labels[i] == c]
        mean = sum(rows) / len(rows)
        var = sum((r - mean) ** 2 for r in rows) / len(rows)
        np.testing.assert_allclose(table[c, :, 0], mean, rtol=1e-13)
        np.testing.assert_allclose(table[c, :, 1], var, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(table[c, :, 2], (len(rows) - 1) / 4, rtol=1e-15)
    assert np.all(table[1:, :, 1] == 0) and np.all(table[1:, :, 2] == 0)  # singletons
    np.testing.assert_allclose(count, [0.5, 0.0, 0.0])
    mean_u = sum(u) / 3
    np.testing.assert_allclose(pooled[:, 0], mean_u, rtol=1e-13)
    np.testing.assert_allclose(pooled[:, 1], sum((r - mean_u) ** 2 for r in u) / 3, rtol=1e-12)
    np.testing.assert_allclose(pooled[:, 2], np.mean(count), rtol=1e-15)


def test_encoder_symmetries():
    # T5: permuting support rows (within and across classes) changes no (mu, rho); relabelling the
    # classes by a permutation permutes omega's (mu, rho) alike and leaves gamma's and z's; appended
    # padding rows (random images, zero labels, mask 0) change nothing.
    ep = anyshot([[2, 3, 1]])
    x, y = ep["real"][0]
    rng = np.random.default_rng(5)
    perm_rows, perm_cls = rng.permutation(len(y)), np.array([2, 0, 1])
    pad = rng.random((4, ARCH.x_dim))
    sets = {
        "base": (x, y, np.ones(len(y))),
        "rows": (x[perm_rows], y[perm_rows], np.ones(len(y))),
        "relabel": (x, y[:, perm_cls], np.ones(len(y))),
        "padded": (
            np.vstack([x, pad]),
            np.vstack([y, np.zeros((4, 3))]),
            np.r_[np.ones(len(y)), np.zeros(4)],
        ),
    }
    with tf.Graph().as_default():
        model = build(taml.get(**ALL))
        xp = tf.compat.v1.placeholder(tf.float64, [None, ARCH.x_dim])
        yp = tf.compat.v1.placeholder(tf.float64, [None, ARCH.way])
        mp = tf.compat.v1.placeholder(tf.float64, [None])
        post = model.learner.posterior(model.psi, xp, yp, ARCH.hw, ARCH.channels, mp)
        with session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            set_values(sess, model)
            out = {k: sess.run([post.mu, post.rho], {xp: a, yp: b, mp: m}) for k, (a, b, m) in sets.items()}
    base = out["base"]
    assert np.std(base[0]["omega"]) > 1e-6  # the classes differ: the relabelling test can fail
    for k in ("rows", "padded", "relabel"):
        for i in range(2):
            for v in ("omega", "gamma", "z"):
                want = base[i][v][perm_cls] if (k, v) == ("relabel", "omega") else base[i][v]
                np.testing.assert_allclose(out[k][i][v], want, rtol=1e-11, atol=1e-14, err_msg=(k, v))


def test_meta_gradient_matches_finite_differences():
    # T7: float64, K = 2, one posterior draw per task (fixed seed), all switches on with Meta-SGD and
    # the zero head: every variable (theta, BN offsets, alpha, every encoder layer), KL term included.
    ep = anyshot(SHOTS)
    with tf.Graph().as_default():
        model = build(taml.get(**ALL, zero_head=True), metasgd=True, n_steps=2)
        ph = model.placeholders(2, 0, QUERY, "t", max_shot=MAX_SHOT)
        loss, _ = model.meta_batch(ph, 1)
        params = model.meta_params
        grads = tf.gradients(loss, params)
        assert "dense_w" not in model.theta  # the zero head is no variable (quirk Q1)
        with session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            set_values(sess, model)
            feed = {**feed_of(ph, ep), model.noise_seed: SEED}
            check_directional_fd(sess, params, sess.run(grads, feed), loss, feed)
    names = {p.name.split(":")[0] for p in params}
    assert {"psi/omega_mu_w", "psi/gamma_rho_b", "psi/z_mu_w", "psi/nn1_conv0_w", "lr/dense_w"} <= names


def test_batch_norm_invariances_behind_quirks_q5_q6():
    # T8: a per-channel constant added to a conv bias leaves the logits unchanged (so z~_b acts on no
    # prediction); scaling a conv output channel by a > 0 changes them only through BN's epsilon; one
    # inner step from the scaled weights differs (the relative step scales like 1/a^2). Conv biases
    # get zero inner gradients.
    rng = np.random.default_rng(2)
    with tf.Graph().as_default():
        x, y = tf.constant(rng.random((6, ARCH.x_dim))), tf.constant(np.repeat(np.eye(3), 2, axis=0))
        model = build(n_steps=1)
        theta = model.initial()
        shifted = {**theta, "conv0_b": theta["conv0_b"] + tf.constant([0.7, -1.3, 2.0], tf.float64)}
        scale = tf.constant([3.0, 1.0, 1.0], tf.float64)
        scaled = {**theta, "conv1_w": theta["conv1_w"] * scale, "conv1_b": theta["conv1_b"] * scale}
        logits = [model.forward(x, t)[1] for t in (theta, shifted, scaled)]
        stepped = [model.forward(x, model.inner_step(t, x, y, 1))[1] for t in (theta, scaled)]
        inner = cross_entropy(model.forward(x, theta)[1], y)
        bias_grads = tf.gradients(inner, [theta["conv0_b"], theta["conv1_b"]])
        with session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            set_values(sess, model)
            (base, shift, scal), (step0, step1), bg = sess.run([logits, stepped, bias_grads])
    np.testing.assert_allclose(shift, base, rtol=1e-10, atol=1e-12)
    assert np.max(np.abs(scal - base)) < 1e-2 * np.max(np.abs(base))
    assert np.max(np.abs(step1 - step0)) > 10 * np.max(np.abs(scal - base))
    assert max(np.max(np.abs(b)) for b in bg) < 1e-12


def test_mc_prediction_averages_probabilities():
    # T10: predict averages softmax probabilities over the draws (not logits), each draw with its own
    # inner loop: against the inner loops of the same draws built one by one; S identical draws give
    # the one draw's; evaluate(n_mc=0) is the posterior-mean pass of meta_batch(sample=False), and
    # evaluate's accuracy is the argmax of its averaged probabilities.
    ep = anyshot(SHOTS[:1])
    rng = np.random.default_rng(3)
    with tf.Graph().as_default():
        model = build(taml.get(**ALL), metasgd=True)
        ph = model.placeholders(1, 0, QUERY, "t", max_shot=MAX_SHOT)
        post, mask = model._posterior(ph, 0)
        xtr, ytr, xte = ph["xtr"][0], ph["ytr"][0], ph["xte"][0]
        shapes = {"omega": [ARCH.way], "gamma": [ARCH.n_blocks + 1], "z": [2 * ARCH.n_blocks * ARCH.filters]}
        eps = {k: tf.constant(rng.standard_normal([2] + v)) for k, v in shapes.items()}
        both = model.predict(xtr, ytr, xte, 1, post, eps, mask)
        thrice = model.predict(
            xtr, ytr, xte, 1, post, {k: tf.stack([v[0]] * 3) for k, v in eps.items()}, mask
        )
        logits = []
        for s in range(2):
            theta = model.adapt(xtr, ytr, 1, mask, post.at({k: v[s] for k, v in eps.items()}))
            logits.append(model.forward(xte, theta)[1])
        loss_mean, acc_mean = model.evaluate(ph, 1, 0)
        loss_mc, _ = model.evaluate(ph, 1, 3)
        _, acc_val = model.meta_batch(ph, 1, sample=False)
        zero = {k: tf.zeros([1] + v, tf.float64) for k, v in shapes.items()}
        mean_p = model.predict(xtr, ytr, xte, 1, post, zero, mask)
        with session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            set_values(sess, model)
            feed = {**feed_of(ph, ep), model.noise_seed: SEED}
            other = sess.run(loss_mc, {**feed, model.noise_seed: SEED + 1})
            both, thrice, logits, loss_mean, acc_mean, acc_val, mean_p, loss_mc = sess.run(
                [both, thrice, logits, loss_mean, acc_mean, acc_val, mean_p, loss_mc], feed
            )
    one = [np.exp(z) / np.exp(z).sum(-1, keepdims=True) for z in logits]
    np.testing.assert_allclose(both, (one[0] + one[1]) / 2, rtol=1e-10)
    np.testing.assert_allclose(thrice, one[0], rtol=1e-10)
    z = (logits[0] + logits[1]) / 2
    softmax_of_mean_logits = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    assert np.max(np.abs(both - softmax_of_mean_logits)) > 1e-6
    assert np.max(np.abs(one[0] - one[1])) > 1e-6  # the draws differ
    np.testing.assert_array_equal(acc_mean, acc_val)
    y = ep["yte"][0]
    np.testing.assert_allclose(acc_mean[0], np.mean(mean_p.argmax(-1) == y.argmax(-1)))
    np.testing.assert_allclose(loss_mean, -np.mean(np.log(np.sum(mean_p * y, -1))), rtol=1e-12)
    assert np.isfinite(loss_mc) and abs(loss_mc - loss_mean) > 1e-6  # 3 draws, not the means
    assert abs(loss_mc - other) > 1e-6  # the draws follow the seed


def test_inference_network_size_matches_the_original():
    # Spec 1.3: 146,290 parameters for 32x32x3 inputs, conv4 with 32 filters, 5-way; 28,640 conv
    # weights and biases and no head variable with the zero head (quirk Q1).
    with tf.Graph().as_default():
        arch = Arch(hw=32, channels=3, filters=32, way=5, dtype=tf.float32)
        model = Model(
            arch,
            noise.get("none"),
            0.5,
            1,
            metasgd=True,
            learner=taml.get(omega=True, gamma=True, z=True, zero_head=True),
        )
        size = {
            k: sum(int(np.prod(v.shape)) for v in vs)
            for k, vs in (("psi", model.psi.values()), ("theta", model.theta.values()))
        }
    assert size == {"psi": 146290, "theta": 28640}


def test_masked_batch_norm_in_float32_is_as_precise_as_the_fused_kernel():
    # The masked moments (summed over real rows, padding rows weighed 0) in float32 against float64,
    # beside the fused kernel on the real rows alone: features far from zero mean (mean / std = 200,
    # where E[x^2] - E[x]^2 would lose every digit) at a support set's size; output and gradient.
    rng = np.random.default_rng(0)
    n, real, side, c = 100, 70, 16, 8
    x = 10.0 + 0.05 * rng.standard_normal((n, side, side, c))
    x[real:] = rng.random((n - real, side, side, c))  # padding rows: other values, weighed 0
    offset, up = rng.standard_normal(c), rng.standard_normal((n, side, side, c))
    out = {}
    for dt in (tf.float64, tf.float32):
        with tf.Graph().as_default(), session() as sess:
            xt, xr, o = tf.constant(x, dt), tf.constant(x[:real], dt), tf.constant(offset, dt)
            mask = tf.constant(np.arange(n) < real, dt)
            y = layers.masked_batch_norm(xt, o, 1, mask)[:real]
            fused = layers.batch_norm(xr, o, 1)
            u = tf.constant(up[:real], dt)
            grads = (
                tf.gradients(tf.reduce_sum(y * u), xt)[0][:real],
                tf.gradients(tf.reduce_sum(fused * u), xr)[0],
            )
            out[dt] = sess.run([y, grads[0], fused, grads[1]])

    def err(i):
        return np.abs(out[tf.float32][i] - out[tf.float64][i]).max() / np.abs(out[tf.float64][i]).max()

    np.testing.assert_allclose(out[tf.float64][0], out[tf.float64][2], rtol=1e-9, atol=1e-9)
    for masked, fused in ((0, 2), (1, 3)):
        assert err(masked) <= 2 * err(fused) + 1e-7 and err(masked) < 1e-4, (err(masked), err(fused))


def test_padded_meta_gradient_in_float32_matches_float64():
    # The any-shot Meta-SGD objective (masked batch norm in every support pass) in float32 against
    # the same weights in float64: every meta-gradient within 1e-4 of its largest entry.
    ep = anyshot(SHOTS)
    values, grads = {}, {}
    for dt in (tf.float64, tf.float32):
        arch = Arch(hw=8, channels=1, filters=3, way=3, n_blocks=2, dtype=dt)
        with tf.Graph().as_default():
            tf.compat.v1.set_random_seed(1)
            model = Model(arch, noise.get("none"), 0.4, 2, metasgd=True, learner=taml.get(max_shot=MAX_SHOT))
            ph = model.placeholders(2, 0, QUERY, "t", max_shot=MAX_SHOT)
            out = model.objective(ph, 1, sample=False)
            g = tf.gradients(out["loss"], model.meta_params)
            with session() as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                if not values:
                    set_values(sess, model)
                    values = {p.name: sess.run(p) for p in model.meta_params}
                for p in model.meta_params:
                    p.load(values[p.name].astype(dt.as_numpy_dtype), sess)
                grads[dt] = dict(zip(values, sess.run(g, feed_of(ph, ep))))
    for k, v in grads[tf.float64].items():
        if "conv" in k and "_b" in k:  # zero up to rounding: conv biases precede batch norm
            continue
        np.testing.assert_allclose(grads[tf.float32][k], v, atol=1e-4 * np.abs(v).max(), rtol=0, err_msg=k)
