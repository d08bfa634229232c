"""Every average over samples against the same samples taken one at a time and averaged in numpy:
Meta-Dropout's inner loss over MC samples (Eq. 3), Bayesian TAML's prediction over posterior draws
(E10: probabilities, not logits) in Model.predict and Model.evaluate."""

import numpy as np
import tensorflow as tf
from tiny import ARCH, episodes, randomize

import noise
import taml
from model import Model

S = 3  # samples


class Given(noise.Draw):
    """Draws whose N(0, I) values are given arrays, in call order; with record, fresh ones are made
    (seeded) and kept in `made`."""

    def __init__(self, groups: int, arrays=None, seed: int = 0) -> None:
        super().__init__(None, iter(()), groups, tf.float64)
        self.arrays, self.made, self.rng = (
            None if arrays is None else iter(arrays),
            [],
            np.random.default_rng(seed),
        )

    def normal(self, shape) -> tf.Tensor:
        if self.arrays is not None:
            return tf.constant(next(self.arrays))
        value = self.rng.standard_normal(tf.get_static_value(shape))
        self.made.append(value)
        return tf.constant(value)


class GivenModel(Model):
    """A Model whose passes draw from `given` (one Given per pass, in the order the graph is built)."""

    given: list

    def draw(self, n_samp, stochastic):
        return self.given.pop(0) if super().draw(n_samp, stochastic) else None

    def _draw(self):
        return self.given.pop(0)


def session() -> tf.compat.v1.Session:
    return tf.compat.v1.Session()


def test_meta_dropout_inner_step_averages_the_loss_over_its_samples():
    # One inner step on S stacked noise samples = the mean of S one-sample steps with the same
    # draws (the gradient of the mean loss is the mean of the gradients; Eq. 3).
    ep = episodes(1)
    n = ep["xtr"].shape[1]
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(1)
        model = GivenModel(ARCH, noise.get("metadrop"), 0.5, 1)
        xtr, ytr = tf.constant(ep["xtr"][0]), tf.constant(ep["ytr"][0])
        stacked = Given(S)
        model.given = [stacked]
        together = model.inner_step(model.initial(), xtr, ytr, S)
        # each sample's rows of every site's draw (samples stacked on axis 0)
        model.given = [Given(1, [a[s * n : (s + 1) * n] for a in stacked.made]) for s in range(S)]
        alone = [model.inner_step(model.initial(), xtr, ytr, 1) for _ in range(S)]
        with session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            randomize(sess, model.meta_params)
            together, alone = sess.run([together, alone])
    assert len(stacked.made) == ARCH.n_blocks + 1  # every site drew
    spread = max(np.abs(alone[0][k] - alone[1][k]).max() for k in together)
    assert spread > 1e-3  # the samples differ: a one-sample step would not pass
    for k, v in together.items():
        np.testing.assert_allclose(
            v, np.mean([a[k] for a in alone], axis=0), rtol=1e-10, atol=1e-13, err_msg=k
        )


def taml_model(given) -> GivenModel:
    tf.compat.v1.set_random_seed(1)
    learner = taml.get(omega=True, gamma=True, z=True, max_shot=2)
    model = GivenModel(ARCH, noise.get("none"), 0.5, 1, metasgd=True, learner=learner)
    model.given = given
    return model


def test_bayesian_taml_prediction_averages_probabilities_over_posterior_draws():
    # E10: Model.predict with S draws = the mean of the S one-draw predictions' probabilities, and
    # Model.evaluate's NLL and accuracy are those of that mean (not of averaged logits).
    ep = episodes(2)
    with tf.Graph().as_default():
        made = [Given(1, seed=t) for t in range(2)]  # evaluate's draws, one Given per task
        model = taml_model(list(made))
        ph = {k: tf.constant(v) for k, v in ep.items()}
        nll, acc = model.evaluate(ph, 1, S)
        each, logits = [], []
        for t in range(2):
            post = model._posterior(ph, t)[0]
            eps = dict(zip(post.mu, made[t].made))
            xtr, ytr, xte = ph["xtr"][t], ph["ytr"][t], ph["xte"][t]
            together = model.predict(xtr, ytr, xte, 1, post, eps)
            alone = [
                model.predict(xtr, ytr, xte, 1, post, {k: e[s : s + 1] for k, e in eps.items()})
                for s in range(S)
            ]
            each.append((together, alone))
            balances = [post.at({k: e[s] for k, e in eps.items()}) for s in range(S)]
            logits.append([model.forward(xte, model.adapt(xtr, ytr, 1, None, b))[1] for b in balances])
        with session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            randomize(sess, model.meta_params, scale=0.1)
            nll, acc, each, logits = sess.run([nll, acc, each, logits])
    assert np.isfinite(logits).all()
    probs = []
    for (together, alone), lg in zip(each, logits):
        soft = [
            np.exp(x - x.max(1, keepdims=True)) / np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True)
            for x in lg
        ]
        np.testing.assert_allclose(alone, soft, rtol=1e-10, atol=1e-14)  # one draw: its softmax
        np.testing.assert_allclose(together, np.mean(alone, axis=0), rtol=1e-10, atol=1e-14)
        assert np.abs(np.mean(alone, axis=0) - soft_of_mean(lg)).max() > 1e-3  # logits' mean differs
        probs.append(np.mean(alone, axis=0))
    y = ep["yte"].argmax(-1)
    want_nll = np.mean([-np.mean(np.log(p[np.arange(len(p)), y[t]])) for t, p in enumerate(probs)])
    np.testing.assert_allclose(nll, want_nll, rtol=1e-10)
    np.testing.assert_array_equal(acc, [np.mean(p.argmax(1) == y[t]) for t, p in enumerate(probs)])


def soft_of_mean(logits: list) -> np.ndarray:
    m = np.mean(logits, axis=0)
    e = np.exp(m - m.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)
