"""The transfer protocol's networks (nets.py): sizes, batch norm's running statistics, P10, P13."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

import nets
import noise

F64 = tf.float64


def build(model: str, noise_name: str = "metaperturb", shape=(32, 32, 3), classes: int = 10):
    """A network and phi in a fresh graph's scopes (call inside a Graph)."""
    perturbation = noise.get(noise_name)
    with tf.compat.v1.variable_scope("net"):
        net = nets.Network(nets.architecture(model), shape, classes, perturbation, F64)
    with tf.compat.v1.variable_scope("phi"):
        phi = perturbation.init_phi(net.convs, net.feat_dim, F64)
    return net, phi


def draw(seed=(1, 2)) -> noise.Draw:
    return noise.Draw(tf.constant(seed, tf.int64), itertools.count(1), 1, F64)


def n_params(variables) -> int:
    return sum(int(np.prod(v.shape)) for v in variables)


def test_parameter_counts():
    # ResNet-20 on 10 classes, counted by hand: stem 432 + BN 32; stage 1: 3 x (2 x 2304 + 64);
    # stage 2: 4608 + 9216 + 128, then 2 x (2 x 9216 + 128); stage 3: 18432 + 36864 + 256, then
    # 2 x (2 x 36864 + 256); linear 650. Total 269,722.
    with tf.Graph().as_default():
        net, _ = build("resnet20")
        assert n_params(net.theta.values()) == 269_722
    # Conv4 of width 64 on 32x32x3, 5 classes: 4 convs with bias, BN scale and offset, linear on 2x2x64.
    with tf.Graph().as_default():
        net, _ = build("conv4_64", classes=5)
        convs = (27 * 64 + 64) + 3 * (576 * 64 + 64)
        assert n_params(net.theta.values()) == convs + 4 * 128 + 256 * 5 + 5
    for model, blocks in (("resnet32", 15), ("resnet44", 21), ("resnet56", 27)):  # 6n+2 layers, 3n blocks
        with tf.Graph().as_default():
            assert build(model)[0].n_sites == blocks


@pytest.mark.parametrize("model, sites", [("conv4_32", 4), ("conv6_16", 6), ("vgg9", 8), ("resnet20", 9)])
def test_same_phi_runs_in_every_architecture(model, sites):
    # P13: one phi (82 values), one pair of running statistics per insertion point.
    with tf.Graph().as_default():
        net, phi = build(model)
        assert n_params(phi.values()) == 82
        assert net.n_sites == sites
        names = [v.op.name for v in tf.compat.v1.global_variables() if "running_" in v.op.name]
        assert len(names) == 2 * sites
        x = tf.constant(np.random.default_rng(0).random([3, 32, 32, 3]))
        train = net.forward(x, phi, True, draw())
        test = net.forward(x, phi, False, draw())
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            a, b = sess.run([train.logits, test.logits])
    assert a.shape == b.shape == (3, 10) and np.isfinite(a).all() and np.isfinite(b).all()
    # Every batch norm and every perturbation point queues its updates, in training mode only.
    assert len(train.updates) == 2 * len(net.bn_stats) + 2 * sites and not test.updates


def test_shared_phi_across_two_architectures_is_one_set_of_variables():
    with tf.Graph().as_default():
        perturbation = noise.get("metaperturb")
        with tf.compat.v1.variable_scope("phi"):
            phi = perturbation.init_phi([], 0, F64)
        outs = []
        for name in ("conv4_8", "resnet20"):
            with tf.compat.v1.variable_scope(name):
                net = nets.Network(nets.architecture(name), (16, 16, 3), 4, perturbation, F64)
            x = tf.constant(np.random.default_rng(1).random([2, 16, 16, 3]))
            outs.append(net.forward(x, phi, True, draw()).logits)
        loss = sum(tf.reduce_sum(o) for o in outs)
        grads = tf.gradients(loss, list(phi.values()))
        assert all(g is not None for g in grads)
        assert len([v for v in tf.compat.v1.global_variables() if v.op.name.startswith("phi/")]) == 6


def test_batch_norm_running_statistics_and_evaluation_mode():
    rng = np.random.default_rng(2)
    x = rng.standard_normal([4, 16, 16, 3])
    with tf.Graph().as_default():
        net, phi = build("conv4_4", "none", shape=(16, 16, 3))
        train = net.forward(tf.constant(x), phi, True, None)
        with tf.control_dependencies([train.logits]):
            step = tf.group(train.updates)
        test = net.forward(tf.constant(x), phi, False, None)
        f = tf.nn.bias_add(tf.nn.conv2d(x, net.theta["b0_w"], 1, "SAME"), net.theta["b0_b"])
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            before = sess.run(test.logits)
            f0 = sess.run(f)
            sess.run(step)
            st = sess.run(net.bn_stats["b0"])
            sess.run(test.logits)
            assert np.array_equal(sess.run(net.bn_stats["b0"])["mean"], st["mean"])  # eval leaves them
    flat = f0.reshape(-1, 4)
    np.testing.assert_allclose(st["mean"], 0.1 * flat.mean(0), rtol=1e-10)
    np.testing.assert_allclose(st["var"], 0.9 + 0.1 * flat.var(0, ddof=1), rtol=1e-10)
    assert before.shape == (4, 10)


def test_forward_with_other_weights():
    # theta given to forward (e.g. after a differentiable step) stands for every weight, batch norm's
    # scale and offset included: the variables' values do not matter, and loading theta's values
    # into them gives the same logits.
    rng = np.random.default_rng(4)
    with tf.Graph().as_default():
        net, phi = build("conv4_4", shape=(16, 16, 3))
        x = tf.constant(rng.standard_normal([3, 16, 16, 3]))
        other = {k: tf.constant(rng.standard_normal(v.shape.as_list())) for k, v in net.theta.items()}
        given = net.forward(x, phi, True, draw(), theta=other).logits
        own = net.forward(x, phi, True, draw()).logits
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            before = sess.run(given)
            sess.run([v.assign(other[k]) for k, v in net.theta.items()])
            after, loaded = sess.run([given, own])
    np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(after, loaded)


def test_option_a_shortcut():
    h = np.random.default_rng(3).random([2, 4, 4, 16])
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        out = sess.run(nets.shortcut(tf.constant(h), 32, 2))
        same = sess.run(nets.shortcut(tf.constant(h), 16, 1))
    assert out.shape == (2, 2, 2, 32)
    np.testing.assert_array_equal(out[..., 8:24], h[:, ::2, ::2])
    assert not out[..., :8].any() and not out[..., 24:].any()
    np.testing.assert_array_equal(same, h)


def test_unknown_model_and_vanishing_inputs():
    for bad in ("resnet21", "conv4", "conv4_x", "conv4_0", "vgg11"):
        with pytest.raises(ValueError, match="unknown model"):
            nets.architecture(bad)
    assert nets.architecture("conv6_7").widths == (7,) * 6
    with tf.Graph().as_default(), pytest.raises(ValueError, match="vanish"):
        nets.Network(nets.architecture("vgg9"), (16, 16, 3), 3, noise.get("none"), F64)


def test_mc_prediction_averages_probabilities():
    # P10: the mean of the softmax vectors, not the softmax of the mean logits; S copies of one
    # draw give that draw's probabilities.
    logits = np.array([[[20.0, 0.0, 0.0]], [[0.0, 3.0, 0.0]], [[0.0, 3.0, 0.0]]])  # [S=3, N=1, K=3]
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        p = sess.run(nets.mc_probs(tf.constant(logits.reshape(3, 3)), 3))
        one = sess.run(nets.mc_probs(tf.constant(np.tile(logits[1], [5, 1])), 5))
    soft = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(p, soft.mean(0), rtol=1e-12)
    assert p.argmax() == 1  # two of three samples are confident in class 1
    assert logits.mean(0).argmax() == 0  # averaging logits would pick the one large logit
    np.testing.assert_allclose(one, soft[1], rtol=1e-12)


def conv_loops(x: np.ndarray, w: np.ndarray, stride: int) -> np.ndarray:
    """PyTorch's Conv2d(padding=1, stride) with explicit loops: x [N, H, W, Cin], w [3, 3, Cin, Cout]."""
    n, height, width, _ = x.shape
    padded = np.zeros((n, height + 2, width + 2, x.shape[3]))
    padded[:, 1:-1, 1:-1] = x
    rows, cols = (height - 1) // stride + 1, (width - 1) // stride + 1
    out = np.zeros((n, rows, cols, w.shape[3]))
    for i in range(rows):
        for j in range(cols):
            for a in range(3):
                for b in range(3):
                    out[:, i, j] += padded[:, i * stride + a, j * stride + b] @ w[a, b]
    return out


@pytest.mark.parametrize("side", [8, 7])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv3x3_pads_one_pixel_on_every_side(side, stride):
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal([2, side, side, 3]), rng.standard_normal([3, 3, 3, 4])
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        out = sess.run(nets.conv3x3(tf.constant(x), tf.constant(w), stride))
    np.testing.assert_allclose(out, conv_loops(x, w, stride), rtol=1e-12, atol=1e-12)


def resnet_numpy(x: np.ndarray, theta: dict, stats: dict, n: int) -> np.ndarray:
    """The original's CIFAR ResNet-(6n+2) in evaluation mode, in numpy: convs padded 1 on every
    side (conv_loops), option-A shortcuts x[:, ::2, ::2] with the new channels zero on both sides."""

    def bn(name, f):
        s = stats[name]
        normal = (f - s["mean"]) / np.sqrt(s["var"] + nets.BN_EPS)
        return normal * theta[f"{name}_gamma"] + theta[f"{name}_beta"]

    def relu(f):
        return np.maximum(f, 0)

    h = relu(bn("stem", conv_loops(x, theta["stem_w"], 1)))
    j = 0
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(n):
            s = stride if i == 0 else 1
            f = relu(bn(f"b{j}_1", conv_loops(h, theta[f"b{j}_1_w"], s)))
            f = bn(f"b{j}_2", conv_loops(f, theta[f"b{j}_2_w"], 1))
            short = h[:, ::s, ::s]
            extra = cout - short.shape[3]
            short = np.pad(short, [(0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)])
            h, j = relu(f + short), j + 1
    return h.mean(axis=(1, 2)) @ theta["dense_w"] + theta["dense_b"]


def test_resnet_is_the_originals_in_evaluation_mode():
    # Stride-2 convs padded 1 on every side, so the residual branch's pixel i is centred where the
    # shortcut samples (2i): "SAME" padding (0 before, 1 after on even sides) fails this.
    rng = np.random.default_rng(6)
    x = rng.standard_normal([2, 8, 8, 3])
    with tf.Graph().as_default():
        net, phi = build("resnet20", "none", shape=(8, 8, 3), classes=5)
        logits = net.forward(tf.constant(x), phi, False, None).logits
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            for s in net.bn_stats.values():  # running statistics and BN's affine away from 0 / 1
                s["mean"].load(0.1 * rng.standard_normal(s["mean"].shape.as_list()), sess)
                s["var"].load(rng.uniform(0.5, 1.5, s["var"].shape.as_list()), sess)
            for k, v in net.theta.items():
                if k.endswith(("_gamma", "_beta")):
                    v.load(rng.uniform(0.5, 1.5, v.shape.as_list()) - k.endswith("_beta"), sess)
            got, theta, stats = sess.run([logits, net.theta, net.bn_stats])
    np.testing.assert_allclose(got, resnet_numpy(x, theta, stats, 3), rtol=1e-10, atol=1e-12)


def pipeline(x: np.ndarray, shape, size: int, augment: str = "none", seed=None) -> np.ndarray:
    """nets.images of float images x [N, H, W, C] in [0, 1]."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        seed_t = None if seed is None else tf.constant(seed, tf.int64)
        flat = tf.constant(x.reshape(len(x), -1), tf.float32)
        return sess.run(nets.images(flat, shape, size, augment, seed_t))


@pytest.mark.parametrize("size, pad", [(32, 4), (16, 8)])
def test_random_crops_of_the_black_padded_image(size, pad):
    # The original's dataloader: RandomCrop(size, padding=4 at 32 px, 8 otherwise) on the image,
    # padded with black before Normalize(0.5, 0.5), so padding is -1 in the network's input;
    # offsets uniform on 0..2 pad.
    x = np.random.default_rng(7).random([300, size, size, 1]).astype(np.float32)
    out = pipeline(x, (size, size, 1), size, "crop", [3, 4])
    padded = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])  # black: 0 before normalising
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(1, 2))
    # windows [N, 2 pad + 1, 2 pad + 1, C, size, size]: every crop of every image, normalised
    gap = np.abs((windows - 0.5) / 0.5 - out.transpose(0, 3, 1, 2)[:, None, None]).max(axis=(3, 4, 5))
    hits = np.argwhere(gap < 1e-6)  # (image, row offset, column offset)
    assert np.array_equal(hits[:, 0], np.arange(len(x)))  # one crop per image
    found = hits[:, 1:]
    assert set(found[:, 0]) == set(found[:, 1]) == set(range(2 * pad + 1))


@pytest.mark.parametrize("side, size", [(64, 32), (96, 32), (32, 84)])
def test_resizing_is_pils_bilinear(side, size):
    # The original resizes uint8 images with PIL's bilinear filter (torchvision's Resize), which
    # low-pass filters when shrinking; ours agrees within PIL's rounding to uint8 (1/255).
    from bench.resize import photos, pil_bilinear

    x = photos(20, side, seed=1)
    ours = (pipeline(x / np.float32(255), (side, side, 3), size) + 1) / 2
    assert np.abs(ours - pil_bilinear(x, size)).max() <= 1 / 255 + 1e-6


def adam_numpy(p, grads, lrs, betas=(0.9, 0.999), eps=1e-8):
    """torch.optim.Adam's update in closed form, step by step from m = v = 0 (weight decay in the
    gradients): every iterate of p."""
    (b1, b2), m, v, out = betas, 0.0, 0.0, []
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        out.append(p)
    return out


def test_adam_is_torch_adam():
    # Five steps of nets.Adam in float64 against torch.optim.Adam's closed form (eps added to
    # sqrt(v_hat), not to sqrt(v) as TensorFlow's Adam): gradients of very different scales (the
    # difference shows where |g| is not >> eps / sqrt(1 - b2^t)), zero ones, a changing learning rate;
    # the differentiable step (Adam.step) is the value the applied step (Adam.apply) gives.
    rng = np.random.default_rng(8)
    p0 = rng.standard_normal([3, 4])
    scales = np.array([[1.0], [1e-6], [0.0]])
    grads = [scales * rng.standard_normal([3, 4]) for _ in range(5)]
    lrs = [1e-2, 1e-2, 3e-3, 3e-3, 1e-3]
    with tf.Graph().as_default():
        p = tf.Variable(p0)
        g, lr = tf.compat.v1.placeholder(F64, [3, 4]), tf.compat.v1.placeholder(F64, [])
        opt = nets.Adam([p], "adam")
        stepped = opt.step([g], lr).params[0]
        apply = opt.apply([g], lr)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            got = []
            for gi, li in zip(grads, lrs):
                before = sess.run(stepped, {g: gi, lr: li})
                sess.run(apply, {g: gi, lr: li})
                got.append(sess.run(p))
                np.testing.assert_array_equal(before, got[-1])
            assert sess.run(opt.t) == 5
    for a, b in zip(got, adam_numpy(p0, grads, lrs)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    assert np.array_equal(got[-1][2], p0[2])  # zero gradients leave p
