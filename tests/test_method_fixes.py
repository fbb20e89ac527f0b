"""One test per method fix of the findings issue; each fails on the old behaviour."""

import pytest
import torch
from conftest import WordTokenizer, make_planted, tiny_config

from successor_lens.features.matrix import ItemTable
from successor_lens.features.mine_config import MineConfig
from successor_lens.features.mining import MinedFeatures, recurrence
from successor_lens.nulls import rate_vs_rate, value_vs_draws, words
from successor_lens.probes.arithmetic import offset_profile, vector_arithmetic
from successor_lens.probes.circuit import OVCircuit
from successor_lens.probes.head_choice import choose_head
from successor_lens.probes.linear import leave_one_task_out
from successor_lens.tasks import Task, build_token_set


def test_the_analysis_head_is_chosen_from_evidence_not_a_tie_break():
    # Two heads tie on the OV score; only the later one raises the answer in context (SmolLM2's L3H2 vs L23H3).
    ov = {"L3H2": 0.125, "L23H3": 0.125, "L29H1": 0.068, "L0H0": 0.01}
    dla = {"L3H2": -0.01, "L23H3": 0.31, "L29H1": 0.53, "L0H0": 0.0}
    choice = choose_head(ov, dla)
    assert choice.head == "L23H3" and "in-context DLA" in choice.reason
    assert choose_head(ov, None).head == "L3H2"  # no in-context evidence: the OV score decides
    assert choose_head(ov, {h: -1.0 for h in ov}).reason.startswith("highest OV succession score")
    assert choose_head(ov, dla, override="L29H1").head == "L29H1"


def test_probe_rows_are_not_stretched_along_low_variance_dimensions():
    # Class signal along 4 high-variance dimensions; 40 nuisance dimensions of tiny variance.
    # Per-dimension standardisation mapped back as coef/scale points the rows at the nuisance.
    g = torch.Generator().manual_seed(0)
    tasks = [Task(f"t{i}", tuple(f"w{i}_{j}" for j in range(20)), tuple(range(20))) for i in range(4)]
    words_ = [w for t in tasks for w in t.items]
    table = ItemTable.from_token_set(build_token_set(WordTokenizer(words_), tasks, variants="nospace"))
    classes = torch.linalg.qr(torch.randn(12, 12, generator=g))[0][:10]
    signal = 3 * classes[table.residues]
    nuisance = 1e-3 * torch.randn(len(table.texts), 40, generator=g)
    acts = torch.cat([signal + 0.3 * torch.randn(signal.shape, generator=g), nuisance], 1)
    probe = leave_one_task_out(acts, table)
    on_signal = probe.directions[:, :12].norm(dim=-1)
    assert on_signal.min() > 0.95, on_signal
    assert min(probe.accuracy.values()) > 0.9


def _mined(latent_class, acts_FN, W_dec):
    n_classes = 10
    profile = torch.zeros(len(W_dec), n_classes)
    modal = {c: l for l, c in latent_class.items()}
    return MinedFeatures(latent_class, [], torch.ones(len(W_dec)), {c: W_dec[l] / W_dec[l].norm() for l, c in latent_class.items()},
                         {c: 1.0 for c in modal}, {c: 1.0 for c in modal}, modal, profile, torch.zeros(0), [], MineConfig(),
                         acts_FN=acts_FN, W_dec=W_dec)


def test_recurrence_matches_classes_by_firing_pattern_over_all_pairs():
    # Three SAEs whose class-c latents fire on the same items but have unrelated decoder rows.
    g = torch.Generator().manual_seed(1)
    fires = (torch.rand(10, 50, generator=g) > 0.5).float()
    mined = []
    for seed in range(3):
        perm = torch.randperm(10, generator=torch.Generator().manual_seed(seed))  # latents in another order
        W = torch.randn(10, 16, generator=torch.Generator().manual_seed(100 + seed))
        mined.append(_mined({int(perm[c]): c for c in range(10)}, fires[perm.argsort()] * (1 + seed), W))
    rec = recurrence(mined)
    assert all(rec.counts[c] == 3 for c in range(10)) and sorted(rec.modal_directions) == list(range(10))
    assert all(rec.pair_rate[c] == 1.0 for c in range(10))
    assert all(abs(rec.decoder_cosine[c]) < 0.9 for c in range(10))  # the decoder rows do not match


def test_a_class_split_across_two_latents_still_recurs():
    fires = torch.eye(10).repeat_interleave(6, 1)
    W = torch.randn(11, 16, generator=torch.Generator().manual_seed(5))
    split = fires.clone()
    split = torch.cat([split, split[3:4]])
    split[3, 18 + 3 :] = 0  # class 3: latent 3 fires on half its items, latent 10 on the other half
    split[10, 18 : 18 + 3] = 0
    whole = _mined({c: c for c in range(10)}, fires, W[:10])
    halves = _mined({**{c: c for c in range(10)}, 10: 3}, split, W)
    rec = recurrence([whole, halves])
    assert rec.counts[3] == 2 and rec.match_cosine[3] > 0.99


def test_recurrence_counts_pairs_beyond_the_first_sae():
    # SAE 0 lacks class 3; SAEs 1 and 2 share it: it recurs in 2 of 3 (comparing with SAE 0 only found none).
    fires = torch.eye(10).repeat_interleave(5, 1)
    W = torch.eye(10, 16)
    full = {c: c for c in range(10)}
    without = {c: c for c in range(10) if c != 3}
    rec = recurrence([_mined(without, fires, W), _mined(full, fires, W), _mined(full, fires, W)])
    assert rec.counts[3] == 2 and 3 in rec.modal_directions and rec.pair_rate[3] == 1.0


def _days_table():
    days = "Mon Tue Wed Thu Fri Sat Sun".split()
    task = Task("days", tuple(days), tuple(range(1, 8)), cyclic=True)
    return ItemTable.from_token_set(build_token_set(WordTokenizer(days), [task], variants="nospace"))


def test_offsets_of_cyclic_tasks_wrap():
    table = _days_table()
    off = table.offsets()
    sun, mon = table.texts.index("Sun"), table.texts.index("Mon")
    assert off[sun, mon] == 1 and off[mon, sun] == -1
    # A planted successor circuit over the days peaks at +1 with Sun -> Mon included, and no offset beyond +-3.
    n = len(table.texts)
    W_U = torch.eye(n)
    circuit = OVCircuit(torch.eye(n), torch.zeros(n), torch.eye(n).roll(1, 1), W_U, lambda x: x, "planted")
    profile = offset_profile(circuit, torch.eye(n), table)["all"]
    assert max(profile, key=profile.get) == 1 and set(profile) == set(range(-3, 4))


def test_arithmetic_reports_the_heads_ceiling_and_the_chance_of_overshooting():
    tasks = [Task("numbers", tuple(str(i) for i in range(30)), tuple(range(30)))]
    table = ItemTable.from_token_set(build_token_set(WordTokenizer([str(i) for i in range(30)]), tasks, variants="nospace"))
    n = len(table.texts)
    classes = torch.eye(10)
    acts = torch.cat([classes[table.residues], torch.eye(3)[table.indices // 10]], 1)  # class + decade
    dirs = {c: torch.cat([classes[c], torch.zeros(3)]) for c in range(10)}
    # A head that copies (no succession): its own ceiling is 0, so nothing is conditional on it being right.
    W_U = acts.T.contiguous()
    copy = OVCircuit(torch.eye(13), torch.zeros(13), torch.eye(13), W_U, lambda x: x, "copy")
    r = vector_arithmetic(copy, acts, table, dirs)
    assert r.ceiling == 0.0 and r.conditional is None and r.n_head_right == 0
    failures = [(int(pred), int(target)) for _, _, _, target, pred in r.predictions if pred != target]
    assert r.n_failures == len(failures) and abs(r.overshoot - sum(p > t for p, t in failures) / len(failures)) < 1e-6
    assert 0.3 < r.overshoot_chance < 0.7  # targets 1..29 among 0..29: about half the other items lie after
    none = vector_arithmetic(copy, acts, table, {})
    assert none.overall is None and "arithmetic cases" in none.reason  # a null model gets a result, not an error
    assert n == 30


def test_null_verdicts_say_so_in_words():
    assert rate_vs_rate(90, 100, 10, 100).above and not rate_vs_rate(12, 100, 10, 100).above
    v = value_vs_draws(7.0, [6, 7, 8, 5] * 25, "index-permutation null")
    assert not v.above and words("classes", v).endswith("NOT above its null (p 0.50)")
    assert value_vs_draws(9.0, [6, 7, 8, 5] * 25, "null").above
    few = value_vs_draws(9.0, [6, 7, 8, 5], "null")  # above every draw, but 4 draws cannot give p <= 0.01
    assert not few.above and few.p == 1 / 5 and words("x", few).endswith("NOT above its null (p 0.20) (p = 1/5: cannot reach 0.01 with 4 draws)")
    tiny = value_vs_draws(0.003, [0.0] * 99, "null", min_effect=0.05)  # a null identically 0 makes any value "significant"
    assert tiny.p == 0.01 and not tiny.above and "minimum effect 0.05" in words("coverage", tiny) and "constant at 0" in tiny.test


def test_split_items_are_read_at_their_last_token_in_context():
    from transformer_lens import HookedTransformer

    from successor_lens.sites import item_activations

    model = HookedTransformer(tiny_config()).eval()
    items = [(3,), (4, 5), (1, 2, 5)]
    acts = item_activations(model, items, "blocks.0.hook_mlp_out")
    _, cache = model.run_with_cache(torch.tensor([[1, 2, 5]]), names_filter="blocks.0.hook_mlp_out")
    assert torch.allclose(acts[2], cache["blocks.0.hook_mlp_out"][0, -1], atol=1e-5)
    assert not torch.allclose(acts[1], acts[2])  # the same last token, another context
    alone = model.blocks[0].mlp(model.blocks[0].ln2(model.W_E[3][None, None]))[0, 0]
    assert torch.allclose(acts[0], alone, atol=1e-5)  # a single token stays vocabulary-level (no attention)


def test_residual_embedding_reads_the_token_after_a_prefix():
    from successor_lens.probes.circuit import effective_embeddings, residual_prefix

    model = make_planted(None)
    model.tokenizer = WordTokenizer([str(i) for i in range(10)] + ["\n"])
    prefix = residual_prefix(model)
    assert prefix == 10  # no BOS: a newline
    x = effective_embeddings(model, torch.tensor([3]), "residual")
    _, cache = model.run_with_cache(torch.tensor([[prefix, 3]]), names_filter="blocks.1.hook_resid_pre")
    assert torch.allclose(x[1, 0], cache["blocks.1.hook_resid_pre"][0, 1], atol=1e-5)


def test_the_choosing_and_held_out_prompts_split_each_task_by_the_seed():
    from successor_lens.probes.head_choice import split_prompts
    from successor_lens.probes.incontext import Prompt

    prompts = [Prompt(task, f"{task} {i}", [i], i, [i]) for task, n in (("days", 5), ("numbers", 12), ("letters", 1)) for i in range(n)]
    choosing, held_out = split_prompts(prompts, seed=3)
    assert sorted(map(id, choosing + held_out)) == sorted(map(id, prompts)) and not set(map(id, choosing)) & set(map(id, held_out))
    for task, n in (("days", 5), ("numbers", 12), ("letters", 1)):
        assert sum(p.task == task for p in choosing) == (n + 1) // 2 and sum(p.task == task for p in held_out) == n // 2
    assert split_prompts(prompts, seed=3) == (choosing, held_out) and split_prompts(prompts, seed=4) != (choosing, held_out)


def test_confirming_a_head_on_the_prompts_that_chose_it_passes_on_noise_and_held_out_prompts_do_not():
    """The control the split exists for: 16 heads whose per-prompt effects are pure noise. The head
    with the largest effect on the choosing prompts, confirmed on those same prompts, is "above every
    other head" every time (the wrong method); on held-out prompts, about 1 time in 16, as a
    permutation null promises."""
    from successor_lens.probes.head_choice import split_prompts
    from successor_lens.probes.incontext import Prompt

    gen = torch.Generator().manual_seed(0)
    prompts = [Prompt("numbers", str(i), [i], i, [i]) for i in range(40)]
    same = held = 0
    trials = 300
    for trial in range(trials):
        effect = torch.randn(16, len(prompts), generator=gen)  # [head, prompt]: no head matters
        choosing, held_out = split_prompts(prompts, seed=trial)
        on_choosing, on_held_out = (effect[:, [p.answer for p in ps]].mean(1) for ps in (choosing, held_out))
        found = int(on_choosing.argmax())
        for rises, counter in ((on_choosing, "same"), (on_held_out, "held")):
            verdict = value_vs_draws(float(rises[found]), [float(r) for h, r in enumerate(rises) if h != found], "other heads")
            assert not verdict.above  # 15 other heads cannot give p <= 0.01: the verdict says so rather than pass at 1/16
            beats_all = verdict.p == 1 / 16
            same += beats_all and counter == "same"
            held += beats_all and counter == "held"
    assert same == trials
    assert held / trials < 0.15  # 1/16 expected; 0.15 is far in the binomial tail


def test_overshoot_null_equals_a_loop_over_permuted_failures_and_a_fixed_guess_is_not_a_bias():
    """The overshoot's null permutes the failures' predictions within each task: the vectorised form
    equals a loop over the same permutations, and a head that always names the same late item (it
    "overshoots" most targets, as chance's formula would count it) is no bias against it."""
    from successor_lens.probes.arithmetic import _after, _nearest_rows, overshoot_null
    from successor_lens.tasks import same_task

    days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    tasks = [Task("days", tuple(days), tuple(range(1, 8)), cyclic=True), Task("numbers", tuple(str(i) for i in range(30)), tuple(range(30)))]
    table = ItemTable.from_token_set(build_token_set(WordTokenizer(days + [str(i) for i in range(30)]), tasks, variants="nospace"))
    gen = torch.Generator().manual_seed(0)
    failed = [(t, int(table.tokens[int(p)]), table.tasks[t]) for t, p in
              ((int(t), int(torch.randint(len(table.tasks), (1,), generator=gen))) for t in torch.randint(len(table.tasks), (40,), generator=gen))
              if table.tasks[t] == table.tasks[p] and p != t]
    got = overshoot_null(table, failed, seed=1, draws=20)
    same = same_task(table.tasks)
    perm_gen = torch.Generator().manual_seed(1 + 17)
    sums, counts = torch.zeros(20), torch.zeros(20)
    for task in dict.fromkeys(k for _, _, k in failed):
        group = [(t, p) for t, p, k in failed if k == task]
        perm = torch.rand(20, len(group), generator=perm_gen).argsort(-1)
        for d in range(20):
            for i, (t, _) in enumerate(group):
                p = group[int(perm[d, i])][1]
                if p != int(table.tokens[t]):
                    sums[d] += float(_after(table, t, torch.tensor([_nearest_rows(table, same[t], t)[p]]))[0])
                    counts[d] += 1
    assert got == pytest.approx((sums / counts).tolist(), abs=1e-6)
    numbers = [r for r, k in enumerate(table.tasks) if k.startswith("numbers")]
    late = int(table.tokens[numbers[-1]])
    always_late = [(t, late, table.tasks[t]) for t in numbers[:25]]  # "29" for every target below 25
    observed = 1.0  # every such failure overshoots
    assert sum(v >= observed for v in overshoot_null(table, always_late)) == len(overshoot_null(table, always_late))
