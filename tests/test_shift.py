"""The batch shift warning (core/shift.py): EM recovers a batch's class prior; a batch like
the evaluation images passes, a shifted one warns; on real images a UDA-1 model warns on
HAM10000 photos and not on held-out UDA-1 ones."""

from __future__ import annotations

import numpy as np
import pytest

from stages.core.shift import MIN_BATCH, check_batch, em_prior, reference_profile
from tests.conftest import HAM_DIR, UDA1_DIR

CLASSES = ["benign", "malignant"]


def _posteriors(labels: np.ndarray, rng: np.random.Generator, prior: float = 0.3) -> np.ndarray:
    """Exact posteriors under `prior` for scores x ~ N(±1, 1) given the class."""
    x = rng.normal(np.where(labels == 1, 1.0, -1.0), 1.0)
    odds = prior / (1 - prior) * np.exp(2 * x)
    p = odds / (1 + odds)
    return np.column_stack([1 - p, p])


def _card(reference: np.ndarray, threshold: float = 0.2) -> dict:
    return {"classes": CLASSES,
            "decision": {"threshold": threshold, "refer_classes": ["malignant"]},
            "shift_reference": reference_profile(reference, CLASSES, threshold)}


def test_em_recovers_the_prior_of_an_unlabelled_batch():
    rng = np.random.default_rng(0)
    labels = (rng.uniform(size=4000) < 0.7).astype(int)  # 70 % malignant; calibrated for 30 %
    prior, adjusted = em_prior(_posteriors(labels, rng), np.array([0.7, 0.3]))
    assert prior[1] == pytest.approx(0.7, abs=0.03)
    assert adjusted[:, 1].mean() == pytest.approx(prior[1], abs=1e-6)


def test_a_batch_like_the_reference_passes_and_a_shifted_one_warns():
    rng = np.random.default_rng(1)
    card = _card(_posteriors((rng.uniform(size=1000) < 0.3).astype(int), rng))
    alike = _posteriors((rng.uniform(size=150) < 0.3).astype(int), rng)
    report = check_batch(alike, np.zeros(150), card)
    assert not report["warning"] and len(report["signs"]) == 4, report
    shifted = _posteriors((rng.uniform(size=150) < 0.7).astype(int), rng)
    report = check_batch(shifted, np.zeros(150), card)
    assert report["warning"] and "may not hold" in report["message"]
    assert report["class_prior"]["malignant"] > 0.55
    outside = {s["sign"] for s in report["signs"] if s["outside"]}
    assert "malignant prior (EM, Saerens 2002)" in outside


def test_many_photos_out_of_distribution_warn_and_too_few_photos_are_not_judged():
    rng = np.random.default_rng(2)
    card = _card(_posteriors((rng.uniform(size=1000) < 0.3).astype(int), rng))
    probs = _posteriors((rng.uniform(size=100) < 0.3).astype(int), rng)
    ood = np.where(np.arange(100) < 10, 3.0, 0.5)  # 10 % flagged, 1 % expected
    report = check_batch(probs, ood, card)
    assert report["warning"] and report["signs"][0]["outside"]
    few = check_batch(probs[:MIN_BATCH - 1], np.zeros(MIN_BATCH - 1), card)
    assert not few["warning"] and "too few" in few["message"]


def test_false_alarms_are_rare_on_batches_like_the_reference():
    rng = np.random.default_rng(3)
    card = _card(_posteriors((rng.uniform(size=1000) < 0.3).astype(int), rng))
    alarms = sum(check_batch(_posteriors((rng.uniform(size=60) < 0.3).astype(int), rng),
                             np.zeros(60), card, seed)["warning"] for seed in range(60))
    assert alarms <= 3, alarms  # ~1 % expected


@pytest.mark.slow
@pytest.mark.skipif(not (UDA1_DIR.is_dir() and HAM_DIR.is_dir()),
                    reason="needs ../shared/data/isic-uda1-dev and ham10000-dev")
def test_a_uda1_model_warns_on_ham10000_photos_and_not_on_held_out_uda1_ones():
    from stages.core.sources.local import read_source
    from tests.real_lesion_model import fit_lesion_model

    uda, _ = read_source(UDA1_DIR)
    uda = uda.sample(frac=1.0, random_state=0)
    ham, _ = read_source(HAM_DIR)
    model = fit_lesion_model(uda[:300])
    for batch, warns in ((uda[300:], False), (ham.sample(n=100, random_state=0), True)):
        report = check_batch(model.probs(batch), np.zeros(len(batch)), model.card)
        assert report["warning"] is warns, report
