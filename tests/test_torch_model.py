"""specbench's own decoder reproduces transformers' logits for every supported family."""

import json

import pytest
import torch
import transformers

from specbench.cli import main
from specbench.errors import SpecbenchError
from specbench.models.torch_model import load_decoder
from tests.checkpoints import FAMILIES


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_transformers_through_prefill_and_single_steps(tiny_checkpoint_factory, family):
    path = tiny_checkpoint_factory(family)
    ours = load_decoder(path)
    ours.setup_cache(64)
    reference = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    torch.manual_seed(0)
    ids = torch.randint(3, ours.config.vocab_size, (1, 24))  # longer than the 6-token sliding windows
    with torch.no_grad():
        expected = reference(ids).logits
        prefill = ours(ids[:, :13], 0)
        steps = [ours(ids[:, i : i + 1], i) for i in range(13, 24)]
    got = torch.cat([prefill, *steps], dim=1)
    assert (got - expected).abs().max().item() <= 1e-4


def test_rolled_back_cache_continues_like_a_fresh_prefill(tiny_checkpoint_factory):
    """Verify k drafts, reject some, continue from the earlier position: same logits as recomputing."""
    model = load_decoder(tiny_checkpoint_factory("gemma2"))  # sliding window 6 < sequence
    model.setup_cache(64)
    torch.manual_seed(1)
    committed = torch.randint(3, 90, (1, 10))
    rejected_drafts = torch.randint(3, 90, (1, 5))
    correction = torch.randint(3, 90, (1, 3))
    with torch.no_grad():
        model(committed[:, :9], 0)
        model(torch.cat([committed[:, 9:], rejected_drafts], dim=1), 9)  # verification of 5 drafts
        # all 5 rejected: continue at position 10, overwriting the stale entries
        continued = model(correction, 10)
        fresh = load_decoder(tiny_checkpoint_factory("gemma2"))
        fresh.setup_cache(64)
        recomputed = fresh(torch.cat([committed, correction], dim=1), 0)[:, 10:]
    assert (continued - recomputed).abs().max().item() <= 1e-5


def _corrupt(path, tmp_path, edit):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    edit(broken)
    return broken


def test_unknown_architecture_is_a_one_line_error(tiny_checkpoint_factory, tmp_path):
    def edit(folder):
        config = json.loads((folder / "config.json").read_text())
        config["model_type"] = "gpt2"
        (folder / "config.json").write_text(json.dumps(config))

    broken = _corrupt(tiny_checkpoint_factory("llama"), tmp_path, edit)
    with pytest.raises(SpecbenchError, match="unsupported architecture 'gpt2'.*supported: Llama"):
        load_decoder(broken)


def test_missing_and_misshapen_tensors_are_named(tiny_checkpoint_factory, tmp_path):
    from safetensors.torch import load_file, save_file

    def drop(folder):
        tensors = load_file(folder / "model.safetensors")
        del tensors["model.layers.1.mlp.up_proj.weight"]
        save_file(tensors, folder / "model.safetensors")

    with pytest.raises(SpecbenchError, match="missing tensor 'model.layers.1.mlp.up_proj.weight'"):
        load_decoder(_corrupt(tiny_checkpoint_factory("llama"), tmp_path / "a", drop))

    def reshape(folder):
        tensors = load_file(folder / "model.safetensors")
        tensors["model.norm.weight"] = torch.ones(7)
        save_file(tensors, folder / "model.safetensors")

    with pytest.raises(SpecbenchError, match=r"'model.norm.weight' has shape \(7,\), expected \(32,\)"):
        load_decoder(_corrupt(tiny_checkpoint_factory("llama"), tmp_path / "b", reshape))


def test_cli_reports_bad_input_in_one_line_without_traceback(tiny_checkpoint_factory, tmp_path, capsys):
    target = str(tiny_checkpoint_factory("llama"))
    small_vocab = tmp_path / "small"
    from tests.checkpoints import build_small_vocab_checkpoint

    build_small_vocab_checkpoint(small_vocab)
    cases = {
        "checkpoint not found": ["--target", str(tmp_path / "missing")],
        "different vocabularies": ["--target", target, "--draft", str(small_vocab)],
        "--k must be at least 1": ["--target", target, "--draft", target, "--k", "0"],
        "exceeds max_seq_len 16": ["--target", target, "--max-seq-len", "16", "--max-new-tokens", "12"],
        "unknown device 'quantum'": ["--target", target, "--device", "quantum"],
        "not available here": ["--target", target, "--device", "cuda:3"],
    }
    capsys.readouterr()  # drop what building the checkpoints printed
    for expected, args in cases.items():
        code = main(["generate", *args, "--prompt", "the quick brown fox"])
        err = capsys.readouterr().err
        assert code == 2, expected
        assert expected in err and err.count("\n") == 1 and "Traceback" not in err, err
    unsupported = _corrupt(tiny_checkpoint_factory("llama"), tmp_path / "arch", lambda f: (f / "config.json").write_text(
        json.dumps({**json.loads((f / "config.json").read_text()), "model_type": "falcon"})))
    capsys.readouterr()
    assert main(["generate", "--target", str(unsupported), "--prompt", "x"]) == 2
    assert "unsupported architecture 'falcon'" in capsys.readouterr().err


def test_cli_json_output_has_tokens_text_stats_and_timing(tiny_checkpoint_factory, capsys):
    target = str(tiny_checkpoint_factory("llama"))
    draft = str(tiny_checkpoint_factory("llama", seed=1))
    assert main(["generate", "--target", target, "--draft", draft, "--k", "2", "--max-new-tokens", "8",
                 "--prompt", "the quick brown fox", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["tokens"]) == 8 and isinstance(out["text"], str)
    assert set(out["stats"]) >= {"iterations", "drafted", "accepted", "acceptance_rate", "mean_accepted_length"}
    assert out["stats"]["drafted"] == 2 * out["stats"]["iterations"]
    assert out["timing"]["prefill_s"] > 0 and out["timing"]["decode_s"] > 0
