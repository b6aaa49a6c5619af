"""The authors' checkpoints: cards for the released files, import -> export round trips, the
converter proven on the reference fixtures' weights (import-weights from a file in the reference
container reproduces the official outputs), ``ssmrepro evaluate-weights`` (one code path with
``ssmrepro evaluate``, one-line errors) and the report's "authors' weights" line.

Fixtures: tests/fixtures (see /work/shared/fixtures/README.md). No released file is needed: the
released checkpoints are stood in for by files in the same container and key layout.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from ssmrepro import authors
from ssmrepro.cards import all_cards, load_card
from ssmrepro.cli import main
from ssmrepro.convert import _state_dict, export_reference, read_weights, reference_to_ours
from ssmrepro.ssm.scan import scan_backend
from ssmrepro.tables import load_tables

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures"
TABLES = REPO / "workflow" / "tables"
RELEASED = {"authors-evssm-gopro": ("evssm", "gopro", "net_g_GoPro.pth"),
            "authors-evssm-realblur-j": ("evssm", "realblur_j", "net_g_realblur_j.pth"),
            "authors-evssm-realblur-r": ("evssm", "realblur_r", "net_g_realblur_r.pth"),
            "authors-semnet-celeba-hq": ("semnet", "celeba_hq", "InpaintingModel_gen.pth"),
            "authors-semnet-places2": ("semnet", "places2", "InpaintingModel_gen.pth")}
FORMAT = {"evssm": "evssm-basicsr", "sem_net": "semnet-generator"}


def rel_err(out, ref):
    return ((out - ref).abs().max() / ref.abs().max()).item()


# ------------------------------------------------------------------ the cards of released files
def test_released_cards_name_their_files_and_stand_for_their_card():
    cards = all_cards()
    rel = authors.released_cards()
    assert set(rel) == set(RELEASED)
    for name, (for_card, trained_on, file) in RELEASED.items():
        card, base, r = cards[name], cards[for_card], rel[name]
        assert (r.for_card, r.trained_on, r.file) == (for_card, trained_on, file)
        assert r.url.startswith("https://drive.google.com/drive/folders/") and "github.com" in r.source
        assert r.format == FORMAT[card.family]
        if r.sha256 is None:  # unknown: said so, with what to do
            assert "sha256sum" in card.checkpoint["sha256_note"]
        else:
            assert re.fullmatch(r"[0-9a-f]{64}", r.sha256)
        assert trained_on in r.evaluates
        for ds in r.evaluates:
            assert (REPO / "datasets" / f"{ds}.yaml").exists(), ds
        # the same model as the trained card: the weights stand for exactly its configuration
        for key in ("family", "task", "switches", "scales", "input", "train"):
            assert getattr(card, key) == getattr(base, key), (name, key)
        assert card.checkpoint["note"] and r.default_path() == authors.weights_dir() / name / file


def test_released_cards_serve_exactly_the_rows_of_their_model_on_their_dataset():
    rows = {(t.paper, t.table, r.id): (r.card, t.dataset) for t in load_tables(TABLES) for r in t.rows}
    index = authors.row_index()
    for key, r in index.items():
        assert rows[key] == (r.for_card, r.trained_on), key  # a row of that card, on that dataset
    expected = {k for k, (card, ds) in rows.items() if (card, ds) in {("evssm", "gopro"), ("semnet", "celeba_hq")}}
    assert set(index) == expected
    assert {k[1:] for k, r in index.items() if r.card == "authors-evssm-gopro"} == {
        (10, "l1_freq"), (11, "k7"), (12, "evssm"), (12, "evssm_se")}
    assert {k[1:] for k, r in index.items() if r.card == "authors-semnet-celeba-hq"} == {(1, "ours")}
    assert ("evssm", 13, "evssm") not in index  # DPDD: no released model


# ------------------------------------------------------------------ reference layout round trips
def _ours_meta(card: str):
    with torch.device("meta"):
        return load_card(card).build("paper").state_dict()


@pytest.mark.parametrize("family,card,keyfile", [("evssm", "evssm", "evssm_keys.json"),
                                                 ("sem_net", "semnet", "sem_keys.json")])
def test_default_config_round_trip_reference_import_export(family, card, keyfile):
    """Reference state dict (every official key, a distinct value per tensor) -> import -> export:
    every used key comes back equal, in the reference order; SEM-Net's unused ones are dropped."""
    info = json.loads((FIX / keyfile).read_text())
    info = info["generator"] if family == "sem_net" else info["models/EVSSM.py"]
    ref = {k: torch.full((1,), float(i)).expand(s) for i, (k, s) in enumerate(info["state_dict"])}
    container = ({"iteration": 12, "generator": {"module." + k: v for k, v in ref.items()}}
                 if family == "sem_net" else {"params": ref})
    sd, dropped = reference_to_ours(_state_dict(container, family, Path("x")), _ours_meta(card), family)
    unused = info.get("params_unused_in_forward", [])
    assert sorted(dropped) == sorted(unused)
    out = export_reference(sd, family, iteration=12)
    inner = out["generator" if family == "sem_net" else "params"]
    assert list(inner) == [k for k, _ in info["state_dict"] if k not in set(unused)]
    assert all(torch.equal(inner[k], ref[k]) for k in inner)
    assert (out.get("iteration") == 12) == (family == "sem_net")


# ------------------------------------------------------------------ the fixtures through the CLI
SHARED = REPO.parent / "shared" / "fixtures"


@pytest.mark.parametrize("name", ["evssm_dev.pt", "sem_dev.pt", "selective_scan_dev.pt",
                                  "evssm_keys.json", "sem_keys.json"])
def test_fixture_copies_are_the_shared_reference_files(name):
    """The equality tests (test_evssm, test_sem_net, test_scan, test_convert and this file) run on
    copies of the reference fixtures; they must be those files, byte for byte."""
    if not (SHARED / name).exists():
        pytest.skip(f"{SHARED} not present")
    assert (FIX / name).read_bytes() == (SHARED / name).read_bytes()


def fixture_project(tmp_path: Path, monkeypatch, card: str, smoke: dict) -> Path:
    """A project whose card ``card`` is the real one with its smoke scale set to the fixture's
    configuration (so import-weights --scale smoke builds exactly the fixture's model)."""
    root = tmp_path / "project"
    (root / "models").mkdir(parents=True)
    shutil.copytree(REPO / "workflow" / "schemas", root / "workflow" / "schemas")
    data = yaml.safe_load((REPO / "models" / f"{card}.yaml").read_text())
    data["scales"]["smoke"] = smoke
    (root / "models" / f"{card}.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("SSMREPRO_ROOT", str(root))
    return root


def _import(tmp_path, container: dict, card: str) -> dict:
    src, out = tmp_path / "reference.pth", tmp_path / "imported.pt"
    torch.save(container, src)  # the reference container, float32 as the authors save it
    assert main(["import-weights", str(src), "--card", card, "--scale", "smoke", "--out", str(out)]) == 0
    return torch.load(out, weights_only=True)


def _export(tmp_path, src: Path, card: str) -> dict:
    out = tmp_path / "exported.pth"
    assert main(["export-weights", str(src), "--card", card, "--scale", "smoke", "--out", str(out)]) == 0
    return torch.load(out, weights_only=True)


def test_evssm_fixture_weights_through_import_weights_reproduce_the_official_outputs(tmp_path, monkeypatch):
    dev = torch.load(FIX / "evssm_dev.pt", weights_only=True)
    cfg = dev["config"]
    assert cfg["ffn_expansion_factor"] == 3 and cfg["bias"] is False  # as the card
    fixture_project(tmp_path, monkeypatch, "evssm", {"dim": cfg["dim"], "num_blocks": cfg["num_blocks"]})
    ref = dev["state_dict_perturbed"]
    got = _import(tmp_path, {"params": {k: v.float() for k, v in ref.items()}}, "evssm")
    assert got["dropped_reference_keys"] == [] and list(got["model"]) == list(ref)
    model = load_card("evssm").build("smoke").double().eval()
    model.load_state_dict(got["model"], strict=True)
    with torch.no_grad(), scan_backend("chunked"):
        for x, want in zip(dev["inputs"], dev["outputs_perturbed"]):  # 28x44 needs the padding
            assert rel_err(model(x), want) <= 1e-9, tuple(x.shape)
        case, k = dev["grid_case"], dev["grid_case"]["kernel_size_per_level"]
        model.set_windows(True, [k["encoder_level1"], k["encoder_level2"], k["encoder_level3"]])
        assert rel_err(model(dev["inputs"][case["input_index"]]), case["output_perturbed"]) <= 1e-9
        model.set_mode("train")
        for x, want in zip(dev["inputs"][:2], dev["outputs_train_arch_perturbed"][:2]):
            assert rel_err(model(x), want) <= 1e-9
    # and back: the exported container holds the fixture's tensors, in the official order
    back = _export(tmp_path, tmp_path / "imported.pt", "evssm")
    assert list(back) == ["params"] and list(back["params"]) == list(ref)
    assert all(torch.equal(back["params"][k].double(), v) for k, v in ref.items())


def test_sem_net_fixture_weights_through_import_weights_reproduce_the_official_outputs(tmp_path, monkeypatch):
    dev = torch.load(FIX / "sem_dev.pt", weights_only=True)
    cfg = dev["config"]
    smoke = {"dim": cfg["dim"], "num_blocks": cfg["num_blocks"], "heads": cfg["heads"],
             "ffn_expansion_factor": cfg["ffn_expansion_factor"], "bias": cfg["bias"],
             "layer_norm": cfg["LayerNorm_type"]}
    fixture_project(tmp_path, monkeypatch, "semnet", smoke)
    ref = dev["state_dict_perturbed"]  # all 446 reference tensors, the 163 unused ones included
    container = {"iteration": 4000, "generator": {"module." + k: v.float() for k, v in ref.items()}}
    got = _import(tmp_path, container, "semnet")
    unused = dev["unused_state_dict_keys"]
    assert sorted(got["dropped_reference_keys"]) == sorted(unused) and len(unused) == 163
    model = load_card("semnet").build("smoke").double().eval()
    model.load_state_dict(got["model"], strict=True)
    with torch.no_grad(), scan_backend("chunked"):
        for case, want in zip(dev["inputs"], dev["outputs_perturbed"]):
            assert rel_err(model(case["inp_img"], case["mask_whole"]), want) <= 1e-9
    back = _export(tmp_path, tmp_path / "imported.pt", "semnet")
    assert list(back) == ["iteration", "generator"] and back["iteration"] == 4000
    used = [k for k in ref if k not in set(unused)]
    assert list(back["generator"]) == used  # unused modules not written (reference: strict=False)
    assert all(torch.equal(back["generator"][k].double(), ref[k]) for k in used)


# ------------------------------------------------------------------ export of our own runs
def fake_run(run_dir: Path, card: str, dataset: str, scale: str = "smoke", seed: int = 0, step: int = 5):
    from ssmrepro.train.checkpoint import save_checkpoint

    c = load_card(card)
    torch.manual_seed(seed)
    model = c.build(scale)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(
        {"card": card, "switches": c.switches_at(scale), "task": c.task, "dataset": dataset,
         "scale": scale, "seed": seed, "data_version": None}))
    (run_dir / "config_hash").write_text("0123456789abcdef\n")
    save_checkpoint(run_dir / "final.pt", {"format": "ssmrepro.final/1", "step": step,
                                           "model": model.state_dict()})
    return model.state_dict()


@pytest.mark.parametrize("card,key", [("evssm", "params"), ("semnet", "generator")])
def test_export_weights_of_a_run(tmp_path, card, key):
    sd = fake_run(tmp_path / "run", card, "embedded_deblur")
    out = tmp_path / "ref.pth"
    assert main(["export-weights", str(tmp_path / "run"), "--card", card, "--scale", "smoke",
                 "--out", str(out)]) == 0
    obj = torch.load(out, weights_only=True)
    assert list(obj[key]) == list(sd) and all(torch.equal(obj[key][k], v) for k, v in sd.items())
    assert obj.get("iteration") == (5 if card == "semnet" else None)
    # what it wrote is what import-weights / evaluate-weights read back
    back, info = read_weights(out, card, "smoke")
    assert info["kind"] == "reference" and all(torch.equal(back[k], v) for k, v in sd.items())


def test_export_weights_refuses_the_wrong_card(tmp_path, capsys):
    fake_run(tmp_path / "run", "evssm", "embedded_deblur")
    assert main(["export-weights", str(tmp_path / "run"), "--card", "semnet", "--scale", "smoke",
                 "--out", str(tmp_path / "o.pth")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a sem_net checkpoint" in err
    assert not (tmp_path / "o.pth").exists()


# ------------------------------------------------------------------ evaluate-weights
@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from ssmrepro.data.embedded import build_embedded

    root = tmp_path_factory.mktemp("data")
    build_embedded("embedded_deblur", root=root, size=32, count=2, test_count=2)
    build_embedded("embedded_inpainting", root=root, size=32, count=2, test_count=2, masks_per_bin=1)
    return root


@pytest.fixture
def weights_home(tmp_path, monkeypatch):
    home = tmp_path / "weights"
    monkeypatch.setenv(authors.WEIGHTS_ENV, str(home))
    return home


def released_file(home: Path, card: str, container: dict) -> Path:
    path = home / card / authors.released(load_card(card)).file
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(container, path)
    return path


def test_evaluate_weights_scores_released_weights_like_a_run(tmp_path, monkeypatch, data_root, weights_home):
    """Released weights (at their default place) are scored without training; the same weights in
    a run folder give the same numbers through ``ssmrepro evaluate``: one code path."""
    monkeypatch.chdir(tmp_path)
    sd = fake_run(tmp_path / "runs" / "r", "evssm", "embedded_deblur")
    path = released_file(weights_home, "authors-evssm-gopro", {"params": sd})
    assert main(["evaluate-weights", "authors-evssm-gopro", "--data", "embedded_deblur", "--scale", "smoke",
                 "--model-scale", "smoke", "--data-root", str(data_root)]) == 0
    res_path = Path("results/smoke/embedded_deblur/evssm/authors/embedded_deblur.json")
    res = json.loads(res_path.read_text())
    assert res["status"] == "ok" and res["schema"] == "ssmrepro.result/1" and res["n_images"] == 2
    assert res["run"]["card"] == "authors-evssm-gopro" and res["run"]["seed"] is None
    w = res["weights"]
    assert w["for_card"] == "evssm" and w["released"] and w["kind"] == "reference"
    assert w["sha256"] == authors.sha256_file(path) and w["url"].startswith("https://drive.google.com/")
    assert Path(res["samples"][0]).is_file() and res["params"] > 0 and res["data_version"]
    assert main(["evaluate", str(tmp_path / "runs" / "r"), "--data-root", str(data_root),
                 "--out", str(tmp_path / "run.json")]) == 0
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["run"]["seed"] == 0 and run["run"]["config_hash"] == "0123456789abcdef"
    assert {k: v["value"] for k, v in run["metrics"].items()} == {k: v["value"] for k, v in res["metrics"].items()}
    assert set(run) - {"weights"} == set(res) - {"weights"}


def test_evaluate_weights_sem_net_and_any_weights_file(tmp_path, monkeypatch, data_root, weights_home):
    sd = load_card("semnet").build("smoke").state_dict()
    released_file(weights_home, "authors-semnet-celeba-hq",
                  {"iteration": 1, "generator": {"module." + k: v for k, v in sd.items()}})
    out = tmp_path / "res"
    assert main(["evaluate-weights", "authors-semnet-celeba-hq", "--data", "embedded_inpainting",
                 "--condition", "40-60", "--model-scale", "smoke", "--data-root", str(data_root),
                 "--limit", "1", "--out", str(out)]) == 0
    res = json.loads((out / "40-60.json").read_text())
    assert res["status"] == "ok" and res["metrics"]["psnr"]["value"] > 0
    assert res["weights"]["for_card"] == "semnet" and res["weights"]["dropped_reference_keys"] == 0
    # a weights file that is not a card's released one: any card, explicit --weights and --out
    esd = load_card("evssm").build("smoke").state_dict()
    torch.save({"params": esd}, tmp_path / "mine.pth")
    assert main(["evaluate-weights", "evssm", "--weights", str(tmp_path / "mine.pth"), "--data",
                 "embedded_deblur", "--model-scale", "smoke", "--limit", "1",
                 "--data-root", str(data_root), "--out", str(tmp_path / "mine.json")]) == 0
    mine = json.loads((tmp_path / "mine.json").read_text())
    assert mine["weights"]["released"] is False and mine["run"]["card"] == "evssm"


def test_commands_are_listed(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "import-weights" in out and "export-weights" in out and "evaluate-weights" in out


def test_missing_released_weights_say_where_to_get_and_put_them(weights_home, capsys):
    assert main(["evaluate-weights", "authors-evssm-gopro", "--data", "gopro"]) == 2
    err = capsys.readouterr().err
    want = weights_home / "authors-evssm-gopro" / "net_g_GoPro.pth"
    assert err.count("\n") == 1 and str(want) in err and "put it at" in err
    assert "https://drive.google.com/drive/folders/1_G0hf1KX_SAwyK41bdGm2q0q63B6wN40" in err
    assert main(["evaluate-weights", "authors-semnet-places2", "--weights", str(weights_home / "nope.pth")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.pth: no such file" in err and "1sgJRu-Vf6u6taZY-RpY8cFXRAH09i4fu" in err
    assert main(["evaluate-weights", "evssm", "--data", "gopro"]) == 2  # no released file, no --weights
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "authors-evssm-gopro" in err


class Payload:  # pickled code: weights-only loading must refuse it
    def __reduce__(self):
        return (print, ("pwned",))


def test_evaluate_weights_bad_files_are_one_line_errors(tmp_path, weights_home, capsys):
    card = "authors-evssm-gopro"
    sem = load_card("semnet").build("smoke").state_dict()
    cases = {
        "wrong model": ({"generator": sem}, "no state dict of tensors found under params"),
        "wrong config": ({"params": load_card("evssm").build("smoke").state_dict()},
                         "not a evssm checkpoint of this configuration"),
        "wrong width": ({"params": load_card("evssm").build("paper", dim=8).state_dict()}, "shape mismatches"),
        "wrong keys": ({"params": sem}, "not a evssm checkpoint"),
        "pickled code": ({"params": Payload()}, "needs unpickling"),
    }
    for why, (container, message) in cases.items():
        path = released_file(weights_home, card, container)
        assert main(["evaluate-weights", card, "--data", "embedded_deblur"]) == 2, why
        captured = capsys.readouterr()
        assert captured.err.count("\n") == 1 and message in captured.err, (why, captured.err)
        assert "pwned" not in captured.out
    path.write_bytes(path.read_bytes()[:300])  # truncated download
    assert main(["evaluate-weights", card, "--data", "embedded_deblur"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "truncated or corrupted" in err


def test_a_file_other_than_the_released_one_is_refused_when_the_card_knows_its_sha256(tmp_path):
    path = tmp_path / "net_g_GoPro.pth"
    path.write_bytes(b"not the release")
    rel = authors.released(load_card("authors-evssm-gopro"))
    assert authors.check_sha256(rel, path) == authors.sha256_file(path)  # unknown: recorded only
    import dataclasses

    known = dataclasses.replace(rel, sha256="0" * 64)
    with pytest.raises(authors.WeightsMismatch, match="not that of the released net_g_GoPro.pth"):
        authors.check_sha256(known, path)


# ------------------------------------------------------------------ the report's line
def _result(path: Path, card: str, condition: str, psnr: float, ssim: float, options=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "schema": "ssmrepro.result/1", "status": "ok", "condition": condition,
        "run": {"card": card, "dataset": "gopro", "scale": "paper", "seed": None, "run_dir": None,
                "checkpoint": "weights/authors-evssm-gopro/net_g_GoPro.pth"},
        "weights": {"card": card, "for_card": "evssm", "released": True},
        "options": {"self_ensemble": False, **(options or {})}, "n_images": 1111,
        "metrics": {"psnr": {"value": psnr, "protocol": "psnr[rgb,uint8]"},
                    "ssim": {"value": ssim, "protocol": "ssim[gauss11x11x11,rgb,uint8]"}},
        "macs_g": 140.0, "runtime_ms_per_image": 120.0,
        "provenance": {"commit": "0" * 40, "dirty": False, "hardware": "H100", "created": "2026-11-21T10:00:00Z"}}))


def test_report_shows_the_authors_weights_beside_the_paper_and_our_training(tmp_path):
    from ssmrepro.report import render

    res = tmp_path / "results"
    _result(res / "paper/gopro/evssm/authors/gopro.json", "authors-evssm-gopro", "gopro", 34.10, 0.9688)
    out = tmp_path / "site"
    render(TABLES, res, out, "paper", plots_enabled=False)
    data = json.loads((out / "data" / "evssm_t12.json").read_text())
    cells = {(c["row"], c["column"]): c for c in data["authors_cells"]}
    assert set(r for r, _ in cells) == {"evssm", "evssm_se"}  # the rows the released file serves
    psnr = cells[("evssm", "psnr")]
    assert psnr["status"] == "ok" and psnr["text"] == "34.10" and psnr["diff_text"] == "-0.05"
    assert cells[("evssm", "ssim")]["text"] == "0.9688"
    se = cells[("evssm_se", "psnr")]  # self-ensemble not scored yet: not run, with its command
    assert se["status"] == "not run" and se["command"] == (
        "ssmrepro evaluate-weights authors-evssm-gopro --data gopro --condition gopro --self-ensemble "
        "--scale paper --out results/paper/gopro/evssm/authors/gopro+self_ensemble.json")
    assert data["counts"]["ok"] == 0  # our training's cells are not the authors'
    html = (out / "evssm_t12.html").read_text()
    table = html.split('<table class="rt"', 1)[1].split("</table>", 1)[0]
    assert table.count("<td class=\"kind\">authors&#39; weights</td>") == 2
    assert ">34.10</a>" in table and "not run: ssmrepro evaluate-weights authors-evssm-gopro" in table
    assert "weights/authors-evssm-gopro/net_g_GoPro.pth" in html and "Re-score:" in html
    assert "authors&#39; weights" in (out / "evssm_t10.html").read_text()
    assert "authors&#39; weights" not in (out / "evssm_t13.html").read_text()  # DPDD: nothing released
    t1 = (out / "semnet_t1.html").read_text()
    assert "ssmrepro evaluate-weights authors-semnet-celeba-hq --data celeba_hq --condition 40-60" in t1
    assert "authors' weights & -- & --" in (out / "latex" / "semnet_t1.tex").read_text()
    # no cards describing released weights: no such line
    render(TABLES, tmp_path / "none", tmp_path / "site2", "paper", plots_enabled=False, released={})
    assert "authors&#39; weights" not in (tmp_path / "site2" / "evssm_t12.html").read_text()
