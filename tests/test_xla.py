"""--xla: the graphs compiled as one XLA cluster compute what TensorFlow's kernels compute."""

import contextlib
import dataclasses
import re

import numpy as np
import pytest
import tensorflow as tf
from tiny import ARCH, QUERY, SHOT, episodes, randomize

import noise
from model import Model

SEED = np.array([3, 4])  # fixes every noise draw
ARCH32 = dataclasses.replace(ARCH, dtype=tf.float32)  # main.py's dtype: the fused batch-norm kernel
VARIANTS = [(name, False) for name in noise.PERTURBATIONS] + [("metadrop", True)]  # + Meta-SGD


def compiled(xla: bool) -> contextlib.AbstractContextManager:
    return tf.xla.experimental.jit_scope() if xla else contextlib.nullcontext()


def run(noise_name: str, metasgd: bool, xla: bool, arch=ARCH32) -> tuple[list, list[str]]:
    """Query loss, its meta-gradients and the accuracy with 2 noise samples (a validation graph),
    and the types of the ops that ran."""
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(1)
        model = Model(arch, noise.get(noise_name), 0.5, n_steps=1, metasgd=metasgd)
        with compiled(xla):
            ph = model.placeholders(2, SHOT, QUERY, "t")
            loss, _ = model.meta_batch(ph, 1)
            grads = tf.gradients(loss, model.meta_params)
        with compiled(xla):
            _, acc = model.meta_batch(ph, 2)
        config = tf.compat.v1.ConfigProto()
        config.graph_options.rewrite_options.disable_meta_optimizer = True  # as main.py on a CPU
        with tf.compat.v1.Session(config=config) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            randomize(sess, [p for p in model.meta_params if not p.name.startswith("lr/")], scale=0.5)
            feed = {ph[k]: v for k, v in episodes(2).items()}
            feed[model.noise_seed] = SEED
            meta = tf.compat.v1.RunMetadata()
            trace = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
            out = sess.run([loss, grads, acc], feed, options=trace, run_metadata=meta)
    ran = [
        n.timeline_label.split(" = ")[1].split("(")[0]
        for d in meta.step_stats.dev_stats
        for n in d.node_stats
    ]
    return out, [r for r in ran if r]


@pytest.mark.slow  # an XLA compilation per variant (~15 s of CPU each); the fast tier has the float32 test
@pytest.mark.parametrize(("noise_name", "metasgd"), VARIANTS)
def test_xla_computes_what_tensorflow_computes(noise_name, metasgd):
    # float64 (the explicit batch norm): the same arithmetic, so the same numbers up to rounding.
    (l_ref, g_ref, a_ref), _ = run(noise_name, metasgd, xla=False, arch=ARCH)
    (l_xla, g_xla, a_xla), ran = run(noise_name, metasgd, xla=True, arch=ARCH)
    assert "_XlaRun" in ran and "Conv2D" not in ran
    np.testing.assert_allclose(l_xla, l_ref, rtol=1e-12)
    np.testing.assert_array_equal(a_xla, a_ref)
    for g, gr in zip(g_xla, g_ref):
        np.testing.assert_allclose(g, gr, rtol=0, atol=1e-12 * max(1.0, np.abs(gr).max()))


@pytest.mark.parametrize(("noise_name", "metasgd"), [("metadrop", False)])
def test_xla_in_float32_as_main_py_runs_it(noise_name, metasgd):
    (l_ref, g_ref, a_ref), ran_ref = run(noise_name, metasgd, xla=False)
    (l_xla, g_xla, a_xla), ran_xla = run(noise_name, metasgd, xla=True)
    assert "_XlaRun" not in ran_ref
    # Each graph (meta-gradients; validation with 2 samples) ran as one cluster: outside them only
    # the noise draws, the feeds and plumbing.
    assert ran_xla.count("_XlaRun") == 2, sorted(set(ran_xla))
    assert not {"Conv2D", "Softplus", "FusedBatchNormV3", "MatMul"} & set(ran_xla)
    assert ("StatelessRandomNormalV2" in ran_xla) == noise.get(noise_name).stochastic
    np.testing.assert_allclose(l_xla, l_ref, rtol=1e-5)
    np.testing.assert_array_equal(a_xla, a_ref)
    # XLA orders float32 sums differently: rounding only (1e-15 in float64, above).
    for g, gr in zip(g_xla, g_ref):
        np.testing.assert_allclose(g, gr, rtol=1e-3, atol=1e-4 * np.abs(gr).max())


@pytest.mark.slow  # main.py with XLA compiles the training, validation and test graphs
def test_main_py_xla_trains_as_without_it(tmp_path):
    from test_main import TINY, run_main

    cache = tmp_path / "xla_cache"
    losses, params = {}, {}
    for xla in ("off", "on"):
        savedir = tmp_path / xla
        common = [
            *TINY,
            "--metabatch",
            "1",
            "--savedir",
            str(savedir),
            "--xla",
            xla,
            "--xla_cache",
            str(cache),
        ]
        run_main(*common, "--n_train_iters", "1", "--log_freq", "1", "--n_val_iters", "2")
        assert cache.exists() == (xla == "on")  # --xla off compiles nothing
        log = open(savedir / "meta_train.log").read()
        losses[xla] = re.findall(r"^iter 1 loss ([\d.]+)", log, re.M)
        ckpt = tf.train.load_checkpoint(str(savedir / "ckpt"))
        params[xla] = {k: ckpt.get_tensor(k) for k in ckpt.get_variable_to_shape_map() if "Adam" not in k}
    assert losses["on"] == losses["off"] and len(losses["on"]) == 1
    # One Adam step moves each element by about meta_lr (1e-3) times the sign of its meta-gradient:
    # the same step, but for elements whose meta-gradient is rounding noise (sign flips).
    diff = np.concatenate([np.abs(params["on"][k] - params["off"][k]).ravel() for k in params["off"]])
    assert np.mean(diff > 1e-5) < 0.01 and diff.max() <= 2.1e-3
    run_main(*common, "--mode", "meta_test", "--n_test_iters", "2")  # its graph compiled too
    assert (tmp_path / "on" / "results.json").exists()
