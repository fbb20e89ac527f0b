from conftest import DAYS, DIGITS, TINY_TASKS, WordTokenizer

from successor_lens.tasks import build_token_set, standard_tasks


def test_split_items_are_dropped_and_reported():
    tok = WordTokenizer(DIGITS + [d for d in DAYS if d != " Wednesday"])
    ts = build_token_set(tok, TINY_TASKS, variants="space")
    assert [d.text for d in ts.dropped if d.task == "days"] == [" Wednesday"]
    assert "splits into" in ts.dropped[0].reason
    # no-space digits are absent in this variant: all ten spaced digits are dropped
    assert sum(d.task == "numbers" for d in ts.dropped) == 10
    assert " Wednesday" not in [i.text for i in ts.items]


def test_successor_pairs_skip_gaps_and_wrap_cyclic_tasks():
    tok = WordTokenizer(DIGITS + [d for d in DAYS if d != " Wednesday"])
    ts = build_token_set(tok, TINY_TASKS, variants="both")
    text = {i: item.text for i, item in enumerate(ts.items)}
    pairs = {(text[a], text[b]) for a, b in ts.successor_pairs()}
    assert (" Sunday", " Monday") in pairs  # cyclic wrap
    assert not any(a == " Tuesday" or b == " Wednesday" for a, b in pairs)  # successor missing
    assert ("8", "9") in pairs and not any(a == "9" for a, _ in pairs)  # linear: last has none
    assert len(pairs) == 9 + 5  # digits 0->1..8->9; days Mon->Tue, Thu->Fri->Sat->Sun->Mon


def test_standard_tasks_indices():
    tasks = {t.name: t for t in standard_tasks()}
    assert tasks["numbers"].indices[:3] == (1, 2, 3)
    assert tasks["ordinals"].items[4] == "fifth" and tasks["ordinals"].indices[4] == 5
    assert tasks["months"].cyclic and not tasks["letters"].cyclic
    assert tasks["roman"].held_out
    assert len(standard_tasks(range(0, 501))[0].items) == 501
