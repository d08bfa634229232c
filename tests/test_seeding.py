"""Meta-test noise is a function of the checkpoint, the episodes and --seed only (#28 part 4): each
episode's draws (Meta-Dropout's test-time MC samples, Bayesian TAML's posterior draws) are seeded
from its index, so grouping the episodes into meta-batches of another size, the last one padded,
changes no episode's accuracy."""

import numpy as np
import pytest

import data
import episodic
import main
from data.episodes import write_file

N_EPISODES = 5
METABATCHES = (1, 2, 4, 3)  # 2, 4 and 3 do not divide 5: the last meta-batch is padded
TINY = ["--dataset", "digits", "--way", "5", "--query", "5", "--n_steps", "1", "--inner_lr", "0.4"]
SYSTEMS = {
    # Meta-Dropout: 3 noise samples per inner step
    "metadrop": (["--shot", "1"], ["--n_test_mc_samp", "3"], {}),
    # Bayesian TAML: 2 posterior draws; also on the test split's sampled episodes
    "taml": (
        ["--max_shot", "3", "--alpha_on", "--omega_on", "--gamma_on", "--z_on"],
        ["--n_mc_samples", "2"],
        {"max_shot": 3},
    ),
}


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # main sets it; restored afterwards


def per_episode(monkeypatch, argv: list[str]) -> np.ndarray:
    """The per-episode accuracies of one meta_test (episodic.evaluate's output)."""
    out, real = [], episodic.evaluate

    def recorded(*a, **kw):
        out.append(real(*a, **kw))
        return out[-1]

    with monkeypatch.context() as m:
        m.setattr(episodic, "evaluate", recorded)
        assert main.main(argv) == 0
    (accs,) = out
    return accs


@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_meta_test_accuracies_do_not_depend_on_the_metabatch(system, tmp_path, monkeypatch):
    flags, test_flags, file_flags = SYSTEMS[system]
    savedir = str(tmp_path / "run")
    common = [*TINY, *flags, "--savedir", savedir]
    train = ["--mode", "meta_train", "--n_train_iters", "1", "--metabatch", "1", "--n_val_iters", "1"]
    assert main.main([*common, *train]) == 0
    test = [*common, "--mode", "meta_test", *test_flags]
    path = str(tmp_path / "episodes.npz")
    split = data.load("digits").split("test")
    write_file(path, split, 5, 1, 5, N_EPISODES, 7, {"dataset": "digits"}, **file_flags)
    # the episodes of a file, by their index in it
    accs = {
        m: per_episode(monkeypatch, [*test, "--episodes", path, "--metabatch", str(m)]) for m in METABATCHES
    }
    for m in METABATCHES:
        assert accs[m].shape == (N_EPISODES,)
        np.testing.assert_array_equal(accs[m], accs[1], err_msg=f"--metabatch {m}")
    # the draws matter: another --seed draws other noise on the same episodes, and some accuracy moves
    other = per_episode(monkeypatch, [*test, "--episodes", path, "--metabatch", "2", "--seed", "1"])
    assert np.any(other != accs[1]), (other, accs[1])
    if file_flags:  # sampled episodes, by their index in the sequence
        sampled = [*test, "--n_test_episodes", str(N_EPISODES), "--metabatch"]
        np.testing.assert_array_equal(
            per_episode(monkeypatch, [*sampled, "3"]), per_episode(monkeypatch, [*sampled, "1"])
        )
