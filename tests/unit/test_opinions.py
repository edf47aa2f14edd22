"""Second opinion on names (issue 30): confirm / dispute, and agreement against figures
worked out by hand."""

import math

import pytest

from pollenstudio.core.errors import ProjectError
from pollenstudio.core.types import Box
from pollenstudio.project import opinions as op
from pollenstudio.project import reviewers as rv


def named_by_anna(tmp_path, store, names):
    """Anna names one grain per entry of ``names``; Ben opens the project."""
    folder = tmp_path / "p"
    a = store.create(folder)
    rv.set_reviewer(a, "Anna")
    with a.importing():
        a.bulk_insert([{"path": "a.png", "width": 1000, "height": 100}], [])
    cats = {n: a.add_category(n) for n in sorted(set(names) | {"Alnus"})}
    ids = [a.add_annotation(1, Box(10 * i, 10, 10 * i + 8, 18), cats[n]) for i, n in enumerate(names)]
    b = store.open(folder)
    rv.set_reviewer(b, "Ben")
    return a, b, cats, ids


def test_hand_computed_kappa_and_wilson(tmp_path, store):
    # first names B B B P P P; second opinions B B P P P B
    a, b, cats, ids = named_by_anna(tmp_path, store, ["Betula"] * 3 + ["Pinus"] * 3)
    assert [g.id for g in op.pending(b)] == ids and op.pending(a) == []  # nobody checks their own names
    second = ["Betula", "Betula", "Pinus", "Pinus", "Pinus", "Betula"]
    first = ["Betula"] * 3 + ["Pinus"] * 3
    for aid, f, s in zip(ids, first, second):
        if f == s:
            o = op.confirm(b, aid)
            assert o.confirms
        else:
            o = op.dispute(b, aid, cats[s])
            assert not o.confirms and o.first_author == "Anna"
    assert op.pending(b) == []
    ag = op.agreement(b)
    # table [[2, 1], [1, 2]]: po = 4/6, pe = (3*3 + 3*3) / 36 = 0.5, kappa = (2/3 - 1/2) / (1/2) = 1/3
    assert (ag.n, ag.agreed) == (6, 4)
    assert ag.kappa.value == pytest.approx(1 / 3)
    # Wilson interval of 4/6 by its formula
    z, n, p = 1.959963985, 6, 4 / 6
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert (ag.lo, ag.hi) == (pytest.approx(centre - half), pytest.approx(centre + half))
    assert ag.kappa.lo < 1 / 3 < ag.kappa.hi
    betula = next(t for t in ag.taxa if t.taxon == "Betula")
    assert (betula.named, betula.confirmed, betula.proposed_by_second) == (3, 2, 1)
    assert betula.percent == pytest.approx(2 / 3)
    # Betula against the rest is the same 2x2 table here
    assert betula.kappa.value == pytest.approx(1 / 3)
    assert ag.pairs == [("Anna", "Ben")]
    a.close()
    b.close()


def test_opinion_is_replaced_not_doubled_and_keeps_the_name_asked_about(tmp_path, store):
    a, b, cats, ids = named_by_anna(tmp_path, store, ["Betula", "Pinus"])
    op.dispute(b, ids[0], cats["Pinus"])
    op.confirm(b, ids[0])  # Ben changes his mind
    a.relabel(ids[1], cats["Alnus"])  # Anna renames it before Ben looks
    op.confirm(b, ids[1])
    a.relabel(ids[1], cats["Pinus"])  # a later rename does not change what Ben agreed with
    ops = op.opinions(b)
    assert [(o.annotation_id, o.category_id, o.first_category_id) for o in ops] == [
        (ids[0], cats["Betula"], cats["Betula"]), (ids[1], cats["Alnus"], cats["Alnus"])]
    ag = op.agreement(b)
    assert (ag.n, ag.agreed) == (2, 2) and math.isnan(ag.kappa.value) is False
    a.close()
    b.close()


def test_refusals_in_words(tmp_path, store):
    a, b, cats, ids = named_by_anna(tmp_path, store, ["Betula"])
    with pytest.raises(ProjectError, match="another reviewer's names"):
        op.confirm(a, ids[0])
    with pytest.raises(ProjectError, match="already named Betula"):
        op.dispute(b, ids[0], cats["Betula"])
    with pytest.raises(ProjectError):
        op.dispute(b, ids[0], 999)
    assert op.opinions(b) == [] and op.agreement(b) is None
    a.close()
    b.close()


def test_kappa_undefined_when_everything_is_one_taxon():
    k = op.cohen_kappa([[5, 0], [0, 0]])
    assert math.isnan(k.value) and k.text().startswith("undefined")
    k = op.cohen_kappa([[20, 5], [10, 15]])  # po .7, pe .5
    assert k.value == pytest.approx(0.4)


def test_report_gives_agreement_per_taxon(tmp_path, store):
    from pollenstudio.project.pollen_report import write_report

    a, b, cats, ids = named_by_anna(tmp_path, store, ["Betula"] * 3 + ["Pinus"] * 3)
    for aid, s in zip(ids, ["Betula", "Betula", "Pinus", "Pinus", "Pinus", "Betula"]):
        op.record(b, aid, cats[s])
    out = tmp_path / "r.html"
    summary = write_report(a, out)
    assert summary["second_opinions"] == 6 and summary["kappa"] == pytest.approx(0.333, abs=1e-3)
    text = out.read_text()
    assert "Second opinion: agreement on names" in text and "Anna checked by Ben" in text
    assert "<tr><td>Betula</td><td>3</td><td>2</td><td>66.7</td>" in text
    pdf = write_report(a, tmp_path / "r.pdf")
    assert pdf["second_opinions"] == 6
    a.close()
    b.close()
