"""The command line: --help everywhere, env, list, info, clear one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ssmrepro.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]


def subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


@pytest.mark.parametrize("cmd", subcommands())
def test_help_everywhere(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0
    assert "usage: ssmrepro" in capsys.readouterr().out


def test_console_script_help():
    out = subprocess.run([str(Path(sys.executable).parent / "ssmrepro"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    for cmd in ("train", "evaluate", "metrics", "erf", "report", "plan", "info", "env", "fetch"):
        assert cmd in out


def test_env_reports_backends_gpu_and_weights(capsys):
    assert main(["env", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scan_backends"]["reference"]["available"] is True
    assert report["scan_backends"]["chunked"]["available"] is True
    assert "available" in report["gpu"]
    files = {w["file"] for w in report["pretrained_weights"]}
    assert {"vgg16-397923af.pth", "pt_inception-2015-12-05-6726825d.pth"} <= files
    for w in report["pretrained_weights"]:
        assert w["present"] or w["path"]  # where to put a missing file


def test_list_shows_cards_and_rows(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "semnet-half " in out and "semnet T2(g)" in out and "semnet T5(ours)" in out
    assert "evssm " in out


def test_info_json(capsys):
    assert main(["info", "evssm", "--scale", "smoke", "--size", "32", "32", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] > 0 and info["macs"] > 0 and info["scan_flops"] > 0
    assert "fvcore" in info["macs_counter"] and "scan" in info["macs_counter"]
    assert info["peak_forward_memory_mib"] >= 0


def test_unknown_card_lists_known_ones(capsys):
    assert main(["info", "semnet-nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown card 'semnet-nope'" in err and "semnet-half" in err


def test_bad_size_names_the_multiple(capsys):
    assert main(["info", "semnet-half", "--scale", "smoke", "--size", "24", "40", "--no-memory"]) == 2
    err = capsys.readouterr().err
    assert "16" in err and err.count("\n") == 1


def test_evaluate_without_a_run_says_what_to_do(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "ssmrepro train" in capsys.readouterr().err


def test_metrics_command_on_folders(tmp_path, capsys):
    import numpy as np

    from ssmrepro.data.imageio import write_png

    rng = np.random.default_rng(0)
    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
    for i in range(3):
        gt = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        write_png(tmp_path / "gt" / f"{i}.png", gt)
        write_png(tmp_path / "pred" / f"{i}.png", np.clip(gt.astype(int) + 3, 0, 255).astype(np.uint8))
    assert main(["metrics", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--protocol", "psnr[rgb,uint8]", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_images"] == 3 and out["metrics"]["psnr[rgb,uint8]"]["value"] > 30
    (tmp_path / "gt" / "2.png").unlink()
    assert main(["metrics", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--protocol", "psnr[rgb,uint8]"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
