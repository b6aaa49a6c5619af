"""Importing the authors' checkpoints: strict mapping, unused reference modules named and dropped,
weights-only loading, one-line errors. Uses the reference key lists in tests/fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ssmrepro.cards import load_card
from ssmrepro.cli import main
from ssmrepro.convert import ConversionError, load_weights_only, reference_to_ours

FIX = Path(__file__).resolve().parent / "fixtures"


def fake_reference(keys_shapes, prefix=""):
    return {prefix + k: torch.zeros(s) for k, s in keys_shapes}


def test_semnet_default_key_list_converts_completely():
    info = json.loads((FIX / "sem_keys.json").read_text())["generator"]
    ref = fake_reference(info["state_dict"], prefix="module.")
    ours = load_card("semnet").build("paper").state_dict()
    from ssmrepro.convert import _state_dict

    sd, dropped = reference_to_ours(_state_dict({"generator": ref}, "sem_net", Path("x")), ours, "sem_net")
    assert set(dropped) == set(info["params_unused_in_forward"])
    assert len(sd) + len(dropped) == info["num_state_dict_entries"] == 2390
    assert sum(t.numel() for t in sd.values()) == 81_438_048
    assert sum(t.numel() for t in sd.values()) + info["unused_param_count"] == info["total_params"]


def test_evssm_default_key_list_converts_completely():
    info = json.loads((FIX / "evssm_keys.json").read_text())["models/EVSSM.py"]
    ref = fake_reference(info["state_dict"])
    ours = load_card("evssm").build("paper").state_dict()
    sd, dropped = reference_to_ours(ref, ours, "evssm")
    assert dropped == []
    assert sum(t.numel() for t in sd.values()) == info["total_params"] == 17_129_472


def test_import_weights_round_trip(tmp_path):
    model = load_card("evssm").build("smoke")
    src = tmp_path / "ref.pth"
    torch.save({"params": model.state_dict()}, src)
    out = tmp_path / "ours.pt"
    assert main(["import-weights", str(src), "--card", "evssm", "--scale", "smoke",
                 "--out", str(out)]) == 0
    got = torch.load(out, weights_only=True)
    assert got["card"] == "evssm" and got["dropped_reference_keys"] == []
    assert got["model"].keys() == model.state_dict().keys()
    assert all(torch.equal(got["model"][k], v) for k, v in model.state_dict().items())
    # the same weights into the paper-scale model: shapes differ, refused in one line
    assert main(["import-weights", str(src), "--card", "evssm", "--out", str(out)]) == 2


def test_wrong_model_is_refused_in_one_line(tmp_path, capsys):
    src = tmp_path / "semnet.pth"
    torch.save({"params": load_card("semnet-half").build("smoke").state_dict()}, src)
    assert main(["import-weights", str(src), "--card", "evssm", "--out", str(tmp_path / "o.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a evssm checkpoint" in err
    torch.save({"generator": {}}, src)  # a SEM-Net container given for an EVSSM card
    assert main(["import-weights", str(src), "--card", "evssm", "--out", str(tmp_path / "o.pt")]) == 2
    assert "no state dict of tensors found under params" in capsys.readouterr().err


def test_truncated_file_is_refused(tmp_path):
    src = tmp_path / "t.pth"
    torch.save({"params": {"a": torch.ones(1000)}}, src)
    src.write_bytes(src.read_bytes()[:300])
    with pytest.raises(ConversionError, match="truncated or corrupted"):
        load_weights_only(src)


class Payload:  # pickled code: weights-only loading must refuse it
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_refused(tmp_path, capsys):
    src = tmp_path / "evil.pth"
    torch.save({"params": Payload()}, src)
    with pytest.raises(ConversionError, match="needs unpickling"):
        load_weights_only(src)
    assert "pwned" not in capsys.readouterr().out
