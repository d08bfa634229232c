"""A resumed meta-training run equals an uninterrupted one in every random stream (episodes, noise,
posterior draws): 4 iterations straight against 2, stop, resume to 4, checkpoints bit for bit."""

import pytest
import tensorflow as tf

import main

DIGITS = ["--dataset", "digits", "--way", "3", "--query", "2", "--n_steps", "1", "--metabatch", "2"]
RUNS = {
    "metadrop": [*DIGITS, "--shot", "1", "--noise", "metadrop", "--inner_lr", "0.4"],
    # any-shot episodes, one posterior draw of every balancing variable per task
    "bayesian_taml": [*DIGITS, "--max_shot", "3", "--alpha_on", "--omega_on", "--gamma_on", "--z_on"],
}


def train(savedir: str, argv: list[str], iters: int) -> None:
    flags = ["--mode", "meta_train", "--n_train_iters", str(iters), "--save_freq", "2"]
    flags += ["--val_freq", "1000", "--n_val_iters", "1", "--log_freq", "1000"]
    assert main.main([*argv, "--savedir", savedir, *flags]) == 0


def checkpoint(savedir: str) -> dict:
    """Every variable of the run's checkpoint at iteration 4 (weights, Adam's slots, the step)."""
    reader = tf.train.load_checkpoint(f"{savedir}/ckpt/model-4")
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}


@pytest.mark.parametrize("name", RUNS)
def test_resumed_run_equals_the_uninterrupted_run(name, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    train(straight, RUNS[name], 4)
    train(resumed, RUNS[name], 2)
    train(resumed, RUNS[name], 4)
    a, b = checkpoint(straight), checkpoint(resumed)
    assert a.keys() == b.keys() and any("Adam" in k for k in a)
    for k in a:
        assert (a[k] == b[k]).all(), k
