"""MetaPerturb's test-time prediction (transfer.py, spec 1.4): the mean of the noise samples'
softmax probabilities, not the softmax of their mean logits, from a tiny target run on digits."""

import os

import numpy as np
import tensorflow as tf
from test_transfer import phi_file, tgt_flags

import results
import transfer

S = 3  # --test_samples


def test_final_accuracy_and_nll_are_those_of_the_mean_probabilities(tmp_path, monkeypatch):
    # Every run of the test graph is recorded (the images' feed and what it returned); the final
    # test's S passes over the test set, averaged here, give results.json's accuracy and NLL.
    calls = []
    real = tf.compat.v1.Session.run

    def run(self, fetches, feed_dict=None, *args, **kw):
        out = real(self, fetches, feed_dict, *args, **kw)
        if feed_dict and any(getattr(k, "name", "") == "test_x:0" for k in feed_dict):
            calls.append(out)
        return out

    monkeypatch.setattr(tf.compat.v1.Session, "run", run)
    flags = tgt_flags(tmp_path, "--phi_from", phi_file(tmp_path), "--test_samples", str(S))
    assert transfer.main(flags) == 0
    result = results.read(os.path.join(tmp_path, "tgt", "t", "results.json"))
    _, _, (_, labels), k = transfer.target_data(transfer.parse_args(flags))
    batches = -(-len(labels) // transfer.EVAL_BATCH)
    final = calls[-S * batches :]
    assert all(isinstance(p, np.ndarray) and p.shape[1:] == (k,) for p in final)
    each = np.stack([np.concatenate(final[s * batches : (s + 1) * batches]) for s in range(S)])
    assert np.all(each >= 0) and np.allclose(each.sum(-1), 1.0, atol=1e-5)  # probabilities
    assert np.abs(each[0] - each[1]).max() > 1e-3  # the samples differ
    mean = each.mean(0)
    rows = np.arange(len(labels))
    assert result.test["mc_samples"] == S and result.n == len(labels)
    np.testing.assert_allclose(result.mean, 100.0 * np.mean(mean.argmax(1) == labels), rtol=1e-12)
    np.testing.assert_allclose(result.nll, -np.mean(np.log(mean[rows, labels])), rtol=1e-6)
    # the softmax of the mean logits (= of the mean log-probabilities) would give another NLL
    logit_mean = np.log(each).mean(0)
    other = np.exp(logit_mean) / np.exp(logit_mean).sum(1, keepdims=True)
    assert abs(-np.mean(np.log(other[rows, labels])) - result.nll) > 1e-4
