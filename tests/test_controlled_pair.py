"""The controlled-acceptance pair: draft = the target's first layers, acceptance set by epsilon."""

import json

import pytest
import torch

from specbench.backends import load_backend
from specbench.backends.torch_backend import TorchBackend
from specbench.errors import SpecbenchError
from specbench.shapes import controlled_pair, hf_model, llama_config_dict, random_prompts, write_controlled_pair


def mean_acceptance(pair, k=4, prompts=4):
    backend = TorchBackend.from_decoders(pair.target, pair.draft, max_seq_len=64)
    rates = []
    for prompt in random_prompts(pair.vocab_size, prompts, 8, seed=1):
        speculative = backend.generate(prompt, max_new_tokens=24, k=k)
        assert speculative.tokens == backend.generate(prompt, max_new_tokens=24).tokens  # outputs stay the target's
        rates.append(speculative.acceptance_rate)
    return sum(rates) / len(rates)


def test_epsilon_zero_makes_the_target_compute_the_drafts_logits():
    pair = controlled_pair("tiny", draft_layers=2, epsilon=0.0, dtype="float32")
    ids = torch.tensor([random_prompts(pair.vocab_size, 1, 12)[0]])
    for model in pair:
        if isinstance(model, torch.nn.Module):
            model.setup_cache(32)
    with torch.no_grad():
        assert torch.equal(pair.target(ids, 0), pair.draft(ids, 0))
    assert mean_acceptance(pair) == 1.0


def test_acceptance_falls_as_epsilon_grows():
    rates = [mean_acceptance(controlled_pair("tiny", 2, epsilon, dtype="float32")) for epsilon in (0.0, 0.2, 1.0)]
    assert rates[0] == 1.0 and rates[0] > rates[1] > rates[2], rates
    assert rates[2] < 0.5


def test_the_draft_shares_the_targets_weights_but_not_its_cache():
    pair = controlled_pair("tiny", draft_layers=1, epsilon=0.5, dtype="float32")
    assert pair.draft.config.num_layers == 1 and pair.vocab_size == 512
    assert pair.draft.embed.weight.data_ptr() == pair.target.embed.weight.data_ptr()
    assert pair.draft.layers[0].wo.weight.data_ptr() == pair.target.layers[0].wo.weight.data_ptr()
    assert pair.draft.lm_head.weight.data_ptr() == pair.target.lm_head.weight.data_ptr()
    pair.target.setup_cache(16)
    pair.draft.setup_cache(16)
    assert pair.draft.layers[0].k_cache.data_ptr() != pair.target.layers[0].k_cache.data_ptr()


def test_hf_view_of_a_decoder_computes_the_same_logits():
    pair = controlled_pair("tiny", draft_layers=2, epsilon=0.3, dtype="float32")
    model = hf_model(pair.target, llama_config_dict("tiny"))
    pair.target.setup_cache(32)
    ids = torch.tensor([random_prompts(pair.vocab_size, 1, 20)[0]])
    with torch.no_grad():
        assert (model(ids).logits - pair.target(ids, 0)).abs().max().item() < 1e-4


def test_written_pair_runs_through_torch_hf_and_hf_assisted_alike(tmp_path):
    target, draft = write_controlled_pair(tmp_path / "pair", "tiny", draft_layers=2, epsilon=0.2)
    assert json.loads((tmp_path / "pair" / "controlled_pair.json").read_text())["epsilon"] == 0.2
    prompt = random_prompts(512, 1, 8, seed=3)[0]
    outputs = {}
    for name in ("torch", "hf", "hf-assisted"):
        backend = load_backend(name, target=str(target), draft=str(draft), max_seq_len=64)
        assert backend.tokenizer.decode(prompt[:2]) == f"t{prompt[0]} t{prompt[1]}"
        outputs[name] = backend.generate(prompt, max_new_tokens=16, k=3).tokens
        assert backend.generate(prompt, max_new_tokens=16).tokens == outputs[name]
    assert outputs["torch"] == outputs["hf"] == outputs["hf-assisted"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(draft_layers=4, epsilon=0.1), "draft_layers must be between 1 and 3"),
    (dict(draft_layers=0, epsilon=0.1), "draft_layers must be between 1 and 3"),
    (dict(draft_layers=2, epsilon=-1.0), "epsilon must be a finite number >= 0"),
])
def test_bad_pair_parameters_are_one_line_errors(kwargs, message):
    with pytest.raises(SpecbenchError, match=message):
        controlled_pair("tiny", dtype="float32", **kwargs)
