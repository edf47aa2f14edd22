"""Review this next: per-proposal terms, values and a deterministic order."""

from __future__ import annotations

import math

import pytest

from pollenstudio.core.types import Box, Detection
from pollenstudio.engine.review_order import ImageProposals, flip_back, proposal_terms, review_order, review_value


def _d(x1, y1, x2, y2, score, label="pollen", topk=()):
    return Detection(box=Box(x1, y1, x2, y2), class_index=0, label=label, score=score, topk=topk)


def test_uncertainty_is_the_score_entropy_and_peaks_at_one_half():
    terms = proposal_terms(ImageProposals(1, [_d(0, 0, 10, 10, 0.5), _d(20, 20, 30, 30, 0.99)]))
    assert terms[0, 0] == pytest.approx(1.0)
    assert terms[1, 0] == pytest.approx(-(0.99 * math.log2(0.99) + 0.01 * math.log2(0.01)))
    assert (terms[:, 2] == 0).all()  # no flipped pass: no disagreement


def test_naming_doubt_from_the_two_best_taxa():
    d = _d(0, 0, 10, 10, 0.9, "Betula", topk=(("Betula", 0.55), ("Alnus", 0.40)))
    assert proposal_terms(ImageProposals(1, [d]))[0, 1] == pytest.approx(0.85)


def test_flip_back_and_disagreement():
    # the flipped pass saw the grain at the mirrored place, and a second box the image pass missed
    flipped_raw = [_d(100 - 30, 0, 100 - 10, 20, 0.9), _d(0, 50, 10, 60, 0.6)]
    flipped = flip_back(flipped_raw, 100)
    assert (flipped[0].box.x1, flipped[0].box.x2) == (10, 30)
    terms = proposal_terms(ImageProposals(1, [_d(10, 0, 30, 20, 0.9)], flipped))
    assert terms.shape == (2, 3)
    assert terms[0, 2] == pytest.approx(0.0)  # exact mirror: full agreement
    assert list(terms[1]) == [0.0, 0.0, 1.0]  # the unmatched flipped proposal


def test_rare_taxa_and_many_doubtful_grains_come_first():
    doubtful = [_d(i * 20, 0, i * 20 + 10, 10, 0.5, "Alnus") for i in range(3)]
    one = ImageProposals(1, doubtful[:1])
    three = ImageProposals(2, doubtful)
    assert review_value(three) == pytest.approx(3 * review_value(one))
    common = ImageProposals(3, [_d(0, 0, 10, 10, 0.5, "Betula")])
    rare = ImageProposals(4, [_d(0, 0, 10, 10, 0.5, "Alnus")])
    counts = {"Betula": 99, "Alnus": 0}
    assert review_value(rare, counts) > review_value(common, counts)
    assert review_order([common, rare, one, three], counts) == [2, 1, 4, 3]


def test_order_is_deterministic_and_ties_go_by_image_id():
    same = [ImageProposals(i, [_d(0, 0, 10, 10, 0.7)]) for i in (5, 3, 9)]
    empty = ImageProposals(1, [])
    assert review_order([*same, empty]) == [3, 5, 9, 1]
    assert review_order(list(reversed([*same, empty]))) == [3, 5, 9, 1]
