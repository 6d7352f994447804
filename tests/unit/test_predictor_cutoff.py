"""Activation predictors without a model file or the runtime: the recall cutoff."""

from __future__ import annotations

import numpy as np
from ggufsparse.methods.predictor import cutoff_for_recall


def test_cutoff_keeps_the_requested_recall_and_no_more():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((400, 50))
    active = rng.random((400, 50)) < 0.3
    for recall in (0.9, 0.99, 1.0):
        c = cutoff_for_recall(scores, active, recall)
        kept = (scores[active] > c).mean()
        assert kept >= recall
        # the next active score above c would drop below the recall
        above = np.sort(scores[active][scores[active] > c])
        assert ((scores[active] > above[0]).mean() < recall) if recall < 1.0 else kept == 1.0
