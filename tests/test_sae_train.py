"""SAE training on planted data: recovery, determinism, resume, round trips and bad input."""

import json

import pytest
import torch
from conftest import tiny_config
from sae_lens import SAE, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
from transformer_lens import HookedTransformer

from successor_lens.errors import UserError
from successor_lens.sae_train.batches import ShuffledBatches
from successor_lens.sae_train.checkpoint import Checkpointer, CheckpointError
from successor_lens.sae_train.dictionary import DictionaryError, evaluate, load_dictionary, save_dictionary
from successor_lens.sae_train.runtime import Runtime
from successor_lens.sae_train.train_config import TrainConfig
from successor_lens.sae_train.train_run import train_sae
from successor_lens.sae_train.trainer import NonFiniteError, make_sae, train

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def planted_data(n=12000, d=32, n_dirs=48, active=3, seed=1):
    """Sparse combinations of known unit directions."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n_dirs, d, generator=g)
    dirs /= dirs.norm(dim=-1, keepdim=True)
    codes = (torch.rand(n, n_dirs, generator=g) < active / n_dirs).float() * (0.5 + torch.rand(n, n_dirs, generator=g))
    return codes @ dirs, dirs


def recovered(sae, dirs) -> torch.Tensor:
    W = sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True)
    return (dirs @ W.T).max(-1).values


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_sparse_trainer_recovers_planted_directions(arch, device):
    X, dirs = planted_data()
    cfg = TrainConfig(arch=arch, d_sae=96, k=4, steps=600, batch_size=512, lr=1e-2)
    sae = make_sae(cfg, X.shape[1])
    train(cfg, sae, ShuffledBatches(X, cfg.batch_size), Runtime(device), progress=False)
    assert (recovered(sae.cpu(), dirs) > 0.95).float().mean() >= 0.9


@pytest.mark.parametrize("arch", ["standard", "jumprelu"])
def test_saelens_architectures_train_and_reconstruct(arch):
    X, dirs = planted_data()
    cfg = TrainConfig(arch=arch, d_sae=96, steps=300, batch_size=512, lr=3e-3, l1_coefficient=1.0, l0_coefficient=0.5)
    sae = make_sae(cfg, X.shape[1])
    result = train(cfg, sae, ShuffledBatches(X, cfg.batch_size), progress=False)
    assert result.last_log["fvu"] < 0.3
    assert (recovered(sae, dirs) > 0.9).float().mean() >= 0.8


def test_bf16_autocast_on_cpu_trains():
    X, dirs = planted_data()
    cfg = TrainConfig(d_sae=96, k=4, steps=300, batch_size=512, lr=3e-3)
    sae = make_sae(cfg, X.shape[1])
    train(cfg, sae, ShuffledBatches(X, cfg.batch_size), Runtime("cpu", "bf16"), progress=False)
    assert sae.W_enc.dtype == torch.float32  # parameters stay fp32
    assert (recovered(sae, dirs) > 0.95).float().mean() >= 0.8


def _weights(sae):
    return {k: v.clone() for k, v in sae.state_dict().items()}


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "jumprelu"])
def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path, arch):
    X, _ = planted_data(n=3000)
    cfg = TrainConfig(arch=arch, d_sae=64, k=4, steps=60, batch_size=256, lr=3e-3, checkpoint_every=25, dead_after_steps=5)

    straight = make_sae(cfg, X.shape[1])
    train(cfg, straight, ShuffledBatches(X, cfg.batch_size), progress=False)

    again = make_sae(cfg, X.shape[1])
    train(cfg, again, ShuffledBatches(X, cfg.batch_size), progress=False)
    for k, v in _weights(straight).items():  # seeded CPU runs are bit-for-bit repeatable
        assert torch.equal(v, again.state_dict()[k]), k

    ckpt = Checkpointer(tmp_path / "ckpt")
    first = make_sae(cfg, X.shape[1])
    train(cfg, first, ShuffledBatches(X, cfg.batch_size), checkpointer=ckpt, stop_after=37, progress=False)
    assert [p.name for p in ckpt.paths()] == ["ckpt_00000025.safetensors", "ckpt_00000037.safetensors"]

    resumed = make_sae(cfg, X.shape[1])  # a fresh process would build the SAE anew
    result = train(cfg, resumed, ShuffledBatches(X, cfg.batch_size), checkpointer=ckpt, resume=True, progress=False)
    assert result.resumed_from == 37
    for k, v in _weights(straight).items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_resume_with_a_different_config_is_refused(tmp_path):
    X, _ = planted_data(n=1000)
    cfg = TrainConfig(d_sae=32, k=4, steps=10, batch_size=128)
    ckpt = Checkpointer(tmp_path)
    train(cfg, make_sae(cfg, 32), ShuffledBatches(X, 128), checkpointer=ckpt, stop_after=5, progress=False)
    other = TrainConfig(d_sae=32, k=8, steps=10, batch_size=128)
    with pytest.raises(CheckpointError, match="different config"):
        train(other, make_sae(other, 32), ShuffledBatches(X, 128), checkpointer=ckpt, resume=True, progress=False)


def test_nan_activations_stop_with_a_clear_error_and_keep_the_last_good_checkpoint(tmp_path):
    X, _ = planted_data(n=2048)
    clean = ShuffledBatches(X, 256)

    class PoisonedAfterStep6:
        d_in = 32

        def batch(self, step):
            x = clean.batch(step)
            return x.fill_(float("nan")) if step >= 6 else x

    cfg = TrainConfig(d_sae=32, k=4, steps=40, batch_size=256, checkpoint_every=1)
    ckpt = Checkpointer(tmp_path)
    with pytest.raises(NonFiniteError, match="activation batch 6 contains NaN or inf"):
        train(cfg, make_sae(cfg, 32), PoisonedAfterStep6(), checkpointer=ckpt, progress=False)
    tensors, meta = ckpt.latest()
    assert meta["step"] == 6
    assert all(torch.isfinite(v.float()).all() for v in tensors.values())
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_dimension_mismatch_is_a_clear_error():
    X, _ = planted_data(n=512)
    cfg = TrainConfig(d_sae=32, k=4, steps=5, batch_size=128)
    with pytest.raises(UserError, match="d_in=32 but the SAE expects 16"):
        train(cfg, make_sae(cfg, 16), ShuffledBatches(X, 128), progress=False)


def test_round_trip_through_sae_lens(tmp_path):
    X, _ = planted_data(n=2000)
    for arch in ("topk", "batchtopk", "standard", "jumprelu"):
        cfg = TrainConfig(arch=arch, d_sae=64, k=4, steps=30, batch_size=256, lr=3e-3)
        sae = make_sae(cfg, 32, {"model_name": "planted", "hook_name": "blocks.0.hook_mlp_out"})
        train(cfg, sae, ShuffledBatches(X, 256), progress=False)
        folder = save_dictionary(sae, tmp_path / arch, {"train_config": {"arch": arch}})
        loaded = SAE.load_from_disk(folder)
        if arch != "batchtopk":  # batchtopk is exported as a JumpReLU with the learned threshold
            with torch.no_grad():
                assert torch.allclose(loaded.decode(loaded.encode(X[:64])), sae.decode(sae.encode(X[:64])), atol=1e-5)
        else:
            assert loaded.cfg.architecture() == "jumprelu"
        ours = load_dictionary(folder, expected_d_in=32, expected_hook="blocks.0.hook_mlp_out")
        assert ours.provenance["train_config"]["arch"] == arch and ours.provenance["package"] == "successor-lens"


def test_load_a_folder_written_by_sae_lens_itself(tmp_path):
    for cls, cfg in ((TopKSAE, TopKSAEConfig(d_in=16, d_sae=40, k=3)), (StandardSAE, StandardSAEConfig(d_in=16, d_sae=40))):
        torch.manual_seed(0)
        theirs = cls(cfg)
        theirs.save_model(tmp_path / cls.__name__)
        loaded = load_dictionary(tmp_path / cls.__name__).sae
        x = torch.randn(8, 16)
        with torch.no_grad():
            assert torch.allclose(loaded.decode(loaded.encode(x)), theirs.decode(theirs.encode(x)))


def test_bad_dictionary_files_give_one_line_errors(tmp_path):
    X, _ = planted_data(n=512)
    cfg = TrainConfig(d_sae=32, k=4, steps=3, batch_size=128)
    folder = save_dictionary(make_sae(cfg, 32), tmp_path / "sae", {})

    with pytest.raises(DictionaryError, match="d_in is 32 but the hook has d_model 576"):
        load_dictionary(folder, expected_d_in=576)

    weights = folder / "sae_weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(DictionaryError, match=r"sae_weights.safetensors: truncated") as err:
        load_dictionary(folder)
    assert "\n" not in str(err.value)

    (folder / "cfg.json").unlink()
    with pytest.raises(DictionaryError, match="cfg.json: missing"):
        load_dictionary(folder)
    with pytest.raises(DictionaryError, match="neither a folder nor an sae-lens release"):
        load_dictionary("no-such-release-xyz")


def test_offline_release_fails_fast_with_one_line():
    with pytest.raises(DictionaryError, match="cannot download gpt2-small-mlp-tm.*HF_HUB_OFFLINE=1"):
        load_dictionary("gpt2-small-mlp-tm", "blocks.0.hook_mlp_out")


def test_pipeline_with_nan_activations_leaves_no_dictionary(tmp_path):
    model = HookedTransformer(tiny_config(d_vocab=300)).eval()
    with torch.no_grad():
        model.W_E[7] = float("nan")
    cfg = TrainConfig(d_sae=32, k=4, steps=20, batch_size=64)
    with pytest.raises(NonFiniteError):
        train_sae(model, "embed", cfg, tmp_path, Runtime("cpu"), tokens="vocab", progress=False)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(("sae-", ".sae-"))]


def test_pipeline_on_a_tiny_model_caches_activations_and_saves_provenance(tmp_path):
    model = HookedTransformer(tiny_config(d_vocab=300)).eval()
    cfg = TrainConfig(d_sae=64, k=4, steps=50, batch_size=128, lr=3e-3)
    run = train_sae(model, "mlp0", cfg, tmp_path, Runtime("cpu"), tokens="vocab", progress=False)
    prov = json.loads((run.folder / "provenance.json").read_text())
    assert prov["hook"] == "blocks.0.hook_mlp_out" and prov["weight_processing"]["fold_ln"] is False
    assert prov["train_config"]["d_sae"] == 64 and len(prov["data_sha256"]) == 64
    assert json.loads((run.folder / "cfg.json").read_text())["metadata"]["hook_name"] == "blocks.0.hook_mlp_out"
    assert 0 <= run.metrics.fvu < 1 and run.metrics.l0 <= 4
    meta = json.loads((tmp_path / "activations" / "mlp0-vocab" / "meta.json").read_text())
    assert meta["n_rows"] == 300 and meta["d_in"] == 64


def test_streamed_evaluation_matches_the_whole_tensor():
    X, _ = planted_data(n=3000)
    cfg = TrainConfig(d_sae=64, k=4, steps=20, batch_size=256)
    sae = make_sae(cfg, 32)
    train(cfg, sae, ShuffledBatches(X, 256), progress=False)
    whole, streamed = evaluate(sae, X), evaluate(sae, iter(X.split(700)), batch_size=256)
    assert abs(whole.fvu - streamed.fvu) < 1e-9 and abs(whole.mse - streamed.mse) < 1e-6 and whole.l0 == streamed.l0
    with torch.no_grad():
        err = (sae.decode(sae.encode(X)) - X).pow(2).sum()
    assert abs(whole.fvu - (err / (X - X.mean(0)).pow(2).sum()).item()) < 1e-5  # the stated formula


class _Identity:
    def encode(self, x):
        return x

    def decode(self, f):
        return f


class _Zero(_Identity):
    def decode(self, f):
        return torch.zeros_like(f)


def test_spliced_loss_is_all_recovered_by_an_identity_and_none_by_zero():
    from successor_lens.sae_train.spliced import spliced_loss

    model = HookedTransformer(tiny_config(d_vocab=300)).eval()
    windows = torch.randint(0, 300, (6, 16), generator=torch.Generator().manual_seed(0))
    same = spliced_loss(model, _Identity(), windows, "blocks.0.hook_mlp_out", batch=4)
    none = spliced_loss(model, _Zero(), windows, "blocks.0.hook_mlp_out", batch=4)
    assert same.loss_recovered == pytest.approx(1.0, abs=1e-6) and same.kl_spliced == pytest.approx(0.0, abs=1e-6)
    assert none.loss_recovered == pytest.approx(0.0, abs=1e-6) and none.kl_spliced == pytest.approx(none.kl_zero)
    assert same.n_tokens == 6 * 15 and none.zero_ablated != pytest.approx(none.clean)
    # against a dense reference: the loss the model itself reports
    assert same.clean == pytest.approx(model(windows, return_type="loss").item(), rel=1e-5)


def test_spliced_losses_share_the_clean_pass_and_give_each_dictionary_its_own():
    from successor_lens.sae_train.spliced import spliced_loss, spliced_losses

    model = HookedTransformer(tiny_config(d_vocab=300)).eval()
    windows = torch.randint(0, 300, (6, 16), generator=torch.Generator().manual_seed(1))
    together = spliced_losses(model, [_Identity(), _Zero()], windows, "blocks.0.hook_mlp_out", batch=4)
    alone = [spliced_loss(model, d, windows, "blocks.0.hook_mlp_out", batch=4) for d in (_Identity(), _Zero())]
    for a, b in zip(together, alone):
        assert a.spliced == pytest.approx(b.spliced) and a.kl_spliced == pytest.approx(b.kl_spliced) and a.clean == pytest.approx(b.clean)
    assert together[0].spliced != pytest.approx(together[1].spliced)
    # one hook per dictionary: the clean pass shared across hooks, each its own zero ablation
    mixed = spliced_losses(model, [_Identity(), _Identity()], windows, ["blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"], batch=4)
    other = spliced_loss(model, _Identity(), windows, "blocks.1.hook_mlp_out", batch=4)
    assert mixed[0].zero_ablated == pytest.approx(alone[0].zero_ablated) and mixed[1].zero_ablated == pytest.approx(other.zero_ablated)
    assert mixed[1].kl_zero == pytest.approx(other.kl_zero) and mixed[0].zero_ablated != pytest.approx(mixed[1].zero_ablated)


def test_a_corpus_dictionary_records_its_spliced_in_loss(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"Step {i}: count one, two, three and four; then Monday, Tuesday and Wednesday." for i in range(200)))
    model = HookedTransformer(tiny_config(d_vocab=300)).eval()
    from conftest import WordTokenizer

    model.tokenizer = WordTokenizer([chr(65 + i % 26) * (1 + i // 26) for i in range(290)])
    cfg = TrainConfig(d_sae=64, k=8, steps=30, batch_size=128)
    run = train_sae(model, "mlp0", cfg, tmp_path / "out", Runtime("cpu"), tokens="corpus", corpus=str(corpus), progress=False)
    saved = json.loads((run.folder / "metrics.json").read_text())["spliced"]
    assert run.spliced is not None and saved["n_tokens"] == run.spliced.n_tokens == 16 * 31  # 16 windows of n_ctx 32
    c, s, z = saved["clean"], saved["spliced"], saved["zero_ablated"]
    assert saved["loss_recovered"] == pytest.approx((z - s) / (z - c)) and saved["kl_spliced"] >= 0


@pytest.mark.parametrize("workspace", [False, True])
def test_the_sparse_topk_step_equals_a_dense_reference_in_loss_and_every_gradient(workspace):
    """The sparse path's own backward (sparse.py) against plain dense autograd of the same math:
    TopK encode, decode, and the AuxK term on dead latents."""
    from successor_lens.sae_train.trainer import _sparse_step

    torch.manual_seed(0)
    cfg = TrainConfig(arch="topk", d_sae=32, k=4, aux_coefficient=0.25)
    sae = make_sae(cfg, 12)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(0, 0.1)
    x = torch.randn(20, 12) * 2 + 1
    dead = torch.zeros(32, dtype=torch.bool)
    dead[::3] = True
    buffer = torch.empty(20, 32) if workspace else None
    stats = _sparse_step(cfg, sae, x, dead, Runtime(), workspace=buffer)
    stats.loss.backward()
    sparse = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()

    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    keep = torch.zeros_like(pre).scatter(1, pre.detach().topk(cfg.k, dim=-1).indices, 1.0)
    x_hat = (pre.relu() * keep) @ sae.W_dec + sae.b_dec
    loss = (x_hat - x).pow(2).sum(-1).mean()
    err = (x - x_hat).detach()
    k_aux = min(12 // 2, int(dead.sum()))
    aux_keep = torch.zeros_like(pre).scatter(1, pre.detach().masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1).indices, 1.0)
    e_hat = (pre.relu() * aux_keep) @ sae.W_dec
    aux = (e_hat - err).pow(2).sum(-1).mean() / err.sub(err.mean(0)).pow(2).sum(-1).mean()
    dense_loss = loss + cfg.aux_coefficient * aux
    dense_loss.backward()
    assert torch.allclose(stats.loss, dense_loss, rtol=1e-5)
    for name, p in sae.named_parameters():
        assert p.grad.abs().max() > 0, name
        assert torch.allclose(sparse[name], p.grad, atol=1e-5, rtol=1e-4), (name, (sparse[name] - p.grad).abs().max())
