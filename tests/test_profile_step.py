"""`specbench profile-step` on CPU with tiny shapes: figures, ratios, files and errors."""

import json

import pytest

from specbench.cli import main
from specbench.errors import SpecbenchError
from specbench.profile_step import parse_counts, ratios


def test_profiles_a_shape_and_its_self_draft_to_json(tmp_path, capsys):
    out = tmp_path / "step.json"
    code = main(["profile-step", "--model", "tiny", "--draft", "tiny@1", "--q", "1,3", "--context", "8,24",
                 "--reps", "2", "--mode", "static", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    target, draft = result["models"]["target"], result["models"]["draft"]
    assert [(s["context"], s["q"]) for s in target["steps"]] == [(8, 1), (8, 3), (24, 1), (24, 3)]
    assert all(s["ms"] > 0 and s["over_floor"] > 0 for s in target["steps"] + draft["steps"])
    # The draft has 1 of the target's 4 layers and the same head: fewer weight bytes, lower floor.
    assert draft["weight_bytes_per_step"] < target["weight_bytes_per_step"]
    assert target["floor_ms"] == pytest.approx(target["weight_bytes_per_step"] / (result["copy_bandwidth_GBps"] * 1e9) * 1e3)
    assert set(result["cost_ratio"]) == {"8", "24"} and set(result["verify_ratio"]["8"]) == {"2"}
    assert "cost ratio c" in capsys.readouterr().out


def test_profiles_a_checkpoint_folder(tiny_checkpoint_factory, tmp_path):
    out = tmp_path / "step.json"
    assert main(["profile-step", "--model", str(tiny_checkpoint_factory("qwen2")), "--q", "2", "--context", "5",
                 "--reps", "1", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["models"]["target"]["steps"][0]["q"] == 2


def test_ratios_are_the_step_time_quotients():
    target = {"steps": [{"context": 512, "q": 1, "ms": 20.0}, {"context": 512, "q": 9, "ms": 22.0}]}
    draft = {"steps": [{"context": 512, "q": 1, "ms": 5.0}]}
    out = ratios(target, draft, [512], [1, 9])
    assert out["cost_ratio"] == {"512": 0.25}
    assert out["verify_ratio"] == {"512": {"8": pytest.approx(1.1)}}


@pytest.mark.parametrize("argv, message", [
    (["--model", "gemma-3b-like"], "neither a checkpoint folder nor a shape"),
    (["--model", "tiny@9"], "layer count after @ must be 1..4"),
    (["--model", "tiny", "--q", "0-3"], "positive integers"),
    (["--model", "tiny", "--context", "a,b"], "expected a range"),
    (["--model", "tiny", "--device", "cuda:7"], "not available here"),
])
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
    assert main(["profile-step", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_count_lists_and_ranges():
    assert parse_counts("1-4", "q") == [1, 2, 3, 4]
    assert parse_counts("9,1,5,5", "q") == [1, 5, 9]
    with pytest.raises(SpecbenchError):
        parse_counts("", "q")
