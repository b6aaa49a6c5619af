"""ssmrepro.report: HTML, LaTeX, audit and plots from table definitions and result files only."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from ssmrepro.report import render
from ssmrepro.report.claims import evaluate_claim
from ssmrepro.report.collect import Measure
from ssmrepro.tables import load_tables
from test_tables import TABLES, expected_tokens

SEMNET_PROTOCOLS = {"psnr": "psnr[rgb,uint8]", "ssim": "ssim[uniform7,rgb,uint8]",
                    "l1": "l1[whole,percent]", "fid": "fid[pytorch-fid,2048]", "lpips": "lpips[vgg,v0.1]"}
EVSSM_PROTOCOLS = {"psnr": "psnr[rgb,uint8]", "ssim": "ssim[gauss11x11x11,rgb,uint8]"}
PV = re.compile(r'<span class="pv">([^<]*)</span>')


# ------------------------------------------------------------------ synthetic result files
def write_result(root: Path, scale: str, dataset_dir: str, card: str, seed: int, condition: str,
                 metrics: dict[str, float] | None, protocols: dict[str, str], status: str = "ok",
                 options: dict | None = None, stem: str | None = None, **extra) -> Path:
    options = {"self_ensemble": False, "windows": True, **(options or {})}
    doc = {
        "schema": "ssmrepro.result/1",
        "status": status,
        "run": {"card": card, "dataset": dataset_dir, "scale": scale, "seed": seed,
                "run_dir": f"runs/{scale}/{dataset_dir}/{card}/seed{seed}",
                "config_hash": f"cfg{seed}{card.replace('-', '')[:9]:0<9}"[:16],
                "checkpoint": f"runs/{scale}/{dataset_dir}/{card}/seed{seed}/final.pt"},
        "condition": condition,
        "data_version": "d41d8cd98f00b204e9800998ecf8427e",
        "metrics": {k: {"value": v, "protocol": protocols[k]} for k, v in (metrics or {}).items()},
        "n_images": 8,
        "options": options,
        "provenance": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False,
                       "environment": {"python": "3.11", "torch": "2.13.0"},
                       "hardware": "CPU (test fixture)", "created": "2026-11-21T10:00:00Z"},
        **extra,
    }
    se = "+self_ensemble" if options.get("self_ensemble") else ""
    path = root / scale / dataset_dir / card / f"seed{seed}" / f"{stem or condition + se}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


BASE = {"0.01-20": (30.0, 0.90, 1.0, 3.0, 0.08), "20-40": (24.0, 0.80, 3.0, 6.0, 0.15),
        "40-60": (20.0, 0.70, 5.0, 9.0, 0.25)}


def populate(root: Path, scale: str = "smoke") -> None:
    """Two seeds for a few rows of SEM-Net T2/T3 and EVSSM T11/T12, plus gaps and failures."""
    for seed, jitter in ((0, 0.0), (1, 0.02)):
        for cond, (p, s, l1, fid, lp) in BASE.items():
            # semnet-half (T2 g, T4 e, T5 ours): clearly better than semnet-half-base (T2 a)
            write_result(root, scale, "embedded_inpainting", "semnet-half", seed, cond,
                         {"psnr": p + 1.0 + jitter, "ssim": s + 0.02 + jitter / 10, "l1": l1 - 0.3 - jitter,
                          "fid": fid - 0.5 - jitter, "lpips": lp - 0.02 - jitter / 10}, SEMNET_PROTOCOLS)
            write_result(root, scale, "embedded_inpainting", "semnet-half-base", seed, cond,
                         {"psnr": p - jitter, "ssim": s - jitter / 10, "l1": l1 + jitter,
                          "fid": fid + jitter, "lpips": lp + jitter / 10}, SEMNET_PROTOCOLS)
            # T3: spatial attention out of memory at 256
            write_result(root, scale, "embedded_inpainting", "semnet-half-ssa", seed, cond, None,
                         SEMNET_PROTOCOLS, status="out of memory")
    # T2 (b): one seed only -> "n too small"
    for cond, (p, s, l1, fid, lp) in BASE.items():
        write_result(root, scale, "embedded_inpainting", "semnet-half-mb-fn", 0, cond,
                     {"psnr": p + 0.3, "ssim": s + 0.01, "l1": l1 - 0.1, "fid": fid - 0.1, "lpips": lp - 0.01},
                     SEMNET_PROTOCOLS)
    # T2 (c): a failed run; T2 (d): an unreadable file
    write_result(root, scale, "embedded_inpainting", "semnet-half-mb-sefn", 0, "40-60", None,
                 SEMNET_PROTOCOLS, status="failed: CUDA error: device-side assert triggered")
    bad = root / scale / "embedded_inpainting" / "semnet-half-mb-fn-sbdm" / "seed0" / "0.01-20.json"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text("{not json")
    # EVSSM T12: evssm with and without self-ensemble, two seeds each
    for seed, jitter in ((0, 0.0), (1, 0.03)):
        write_result(root, scale, "embedded_deblur", "evssm", seed, "embedded_deblur",
                     {"psnr": 28.0 + jitter, "ssim": 0.90 + jitter / 10}, EVSSM_PROTOCOLS,
                     macs_g=1.2, runtime_ms_per_image=10.0 + jitter * 10, runtime_size=[64, 64], params=120000)
        write_result(root, scale, "embedded_deblur", "evssm", seed, "embedded_deblur",
                     {"psnr": 28.3 + jitter, "ssim": 0.905 + jitter / 10}, EVSSM_PROTOCOLS,
                     options={"self_ensemble": True}, macs_g=4.8, runtime_ms_per_image=40.0 + jitter * 10,
                     runtime_size=[64, 64])
    # EVSSM T11: the 3x3 kernel evaluated with the wrong SSIM protocol
    write_result(root, scale, "embedded_deblur", "evssm-k3", 0, "embedded_deblur",
                 {"psnr": 27.5, "ssim": 0.89}, {"psnr": "psnr[rgb,uint8]", "ssim": "ssim[uniform7,rgb,uint8]"},
                 runtime_ms_per_image=9.0)
    # a training log beside a result
    log = root / scale / "embedded_inpainting" / "semnet-half" / "seed0" / "log.jsonl"
    log.write_text("\n".join(json.dumps({"step": i * 10, "loss": 1.0 / (i + 1), "psnr": 20 + i})
                             for i in range(20)) + "\n{broken line\n")
    # receptive fields (Fig. 4/5), activation maps (Fig. 6), a qualitative image (Fig. 7)
    erf = root / scale / "erf"
    erf.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[-32:33, -32:33]
    for card, width in (("evssm", 20.0), ("nafnet", 5.0), ("restormer", 8.0), ("evssm-fourdir", 19.5)):
        np.save(erf / f"{card}.npy", np.exp(-(xx**2 + yy**2) / (2 * width**2)))
    np.save(erf / "fftformer.npy", np.array([1.0, 2.0]))  # a bad array: reported, not raised
    for k in range(4):  # what `ssmrepro erf` writes beside an ERF: one map per block
        np.save(erf / f"evssm.act.encoder_level1.{k}.npy", np.random.default_rng(k).random((16, 16)))
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    q = root / scale / "qualitative" / "evssm_fig8"
    q.mkdir(parents=True, exist_ok=True)
    plt.imsave(q / "gopro_000_evssm.png", np.random.default_rng(1).random((32, 32, 3)))
    # evaluation samples (paths relative to the project root, as `ssmrepro evaluate` writes them)
    samples = Path("runs") / scale / "embedded_deblur" / "evssm" / "seed0" / "samples" / "embedded_deblur"
    (root.parent / samples).mkdir(parents=True, exist_ok=True)
    for kind in ("pred", "gt"):
        plt.imsave(root.parent / samples / f"img_003_{kind}.png", np.random.default_rng(2).random((32, 32, 3)))
    res = root / scale / "embedded_deblur" / "evssm" / "seed0" / "embedded_deblur.json"
    doc = json.loads(res.read_text())
    doc["samples"] = [str(samples / "img_003_pred.png"), "runs/missing_pred.png", 7]
    res.write_text(json.dumps(doc))


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tables():
    return {t.id: t for t in load_tables(TABLES)}


@pytest.fixture(scope="module")
def empty_report(tmp_path_factory):
    base = tmp_path_factory.mktemp("empty")
    render(TABLES, base / "results", base / "reports", "smoke")
    return base / "reports"


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory):
    base = tmp_path_factory.mktemp("synthetic")
    populate(base / "results")
    render(TABLES, base / "results", base / "reports", "smoke")
    return base / "reports"


def page(out: Path, name: str) -> str:
    return (out / f"{name}.html").read_text()


def main_table(html: str) -> str:
    return html[html.index('<table class="rt"'):html.index("</table>", html.index('<table class="rt"'))]


def data(out: Path, tid: str) -> dict:
    return json.loads((out / "data" / f"{tid}.json").read_text())


def cell(out: Path, tid: str, row: str, cond: str, col: str) -> dict:
    return next(c for c in data(out, tid)["cells"]
                if (c["row"], c["condition"], c["column"]) == (row, cond, col))


def claim(out: Path, tid: str, cid: str) -> dict:
    return next(c for c in data(out, tid)["claims"] if c["id"] == cid)


# ------------------------------------------------------------------ every printed number
@pytest.mark.parametrize("report", ["empty_report", "synthetic_report"])
def test_every_printed_number_appears_in_its_table_page(request, report):
    """Parsed from the supplements' text: each value, as printed, is a paper cell of its table's page."""
    out = request.getfixturevalue(report)
    expected = expected_tokens()
    assert sum(len(v) for v in expected.values()) == 20 + 105 + (60 + 3) + 60 + 30 + 8 + 4 + 12 + 16 + 16  # T3: 3 x "Out of memory"
    for tid, tokens in expected.items():
        html = page(out, tid)
        shown = PV.findall(main_table(html))
        assert Counter(shown) == Counter(tokens), tid
        for tok in tokens:
            assert f">{tok}<" in html


def test_no_results_shows_not_run_everywhere(empty_report, tables):
    for tid, t in tables.items():
        html = main_table(page(empty_report, tid))
        runnable = sum(len(t.conditions) * len(t.columns) for r in t.rows if r.card)
        published_only = sum(len(t.conditions) * len(t.columns) for r in t.rows if not r.card)
        assert html.count(">not run</a>") == runnable, tid
        assert html.count("published only</span>") >= published_only
        assert 'class="rv"' not in html and "±" not in html
        d = data(empty_report, tid)
        assert {c["reproduced"] for c in d["claims"]} <= {"not run", "no number"}
        assert d["counts"]["ok"] == 0 and d["counts"]["not_run"] == runnable
    t2 = page(empty_report, "semnet_t2")
    assert "snakemake reproduce_semnet_t2 --config scale=smoke" in t2
    assert "ssmrepro evaluate runs/smoke/embedded_inpainting/semnet-half-base/seed0 --condition 0.01-20" in t2
    assert "snakemake results/smoke/embedded_inpainting/semnet-half-base/seed0/0.01-20.json" in t2
    t12 = page(empty_report, "evssm_t12")
    assert ("ssmrepro evaluate runs/smoke/embedded_deblur/evssm-nogeot/seed0 --condition embedded_deblur "
            "--self-ensemble --out results/smoke/embedded_deblur/evssm-nogeot/seed0/embedded_deblur+self_ensemble.json"
            ) in t12
    t3 = page(empty_report, "semnet_t3")
    assert "runs/smoke/embedded_inpainting-64/semnet-half-ssa/seed0" in t3
    for fig in ("evssm_fig4", "evssm_fig5", "evssm_fig6", "semnet_fig2", "semnet_fig6", "evssm_fig11"):
        assert "not run" in page(empty_report, fig)
    fig5 = page(empty_report, "evssm_fig5")
    assert "snakemake results/smoke/erf/evssm-flip.npy --config scale=smoke" in fig5
    assert ("ssmrepro erf evssm-flip --checkpoint runs/smoke/embedded_deblur/evssm-flip/seed0/final.pt "
            "--scale smoke --out results/smoke/erf/evssm-flip.npy") in fig5
    assert "snakemake results/smoke/embedded_inpainting/semnet/seed0/40-60.json" in page(empty_report, "semnet_fig2")


def test_every_page_has_the_scale_badge(empty_report):
    pages = list(empty_report.glob("*.html"))
    assert len(pages) == 1 + 1 + 10 + 14
    for p in pages:
        html = p.read_text()
        assert 'id="scale-badge"' in html and "scale: smoke" in html
        assert "not comparable to the paper" in html


def test_paper_scale_badge_says_comparable(tmp_path):
    render(TABLES, tmp_path / "results", tmp_path / "out", "paper", plots_enabled=False)
    html = (tmp_path / "out" / "semnet_t1.html").read_text()
    assert "scale: paper" in html and "not comparable" not in html.split("</header>")[0]
    assert "snakemake results/paper/celeba_hq/semnet/seed0/40-60.json --config scale=paper" in html
    assert "snakemake results/paper/dpdd/evssm/seed0/dpdd.json" in (tmp_path / "out" / "evssm_t13.html").read_text()


# ------------------------------------------------------------------ with results
def test_mean_std_n_and_difference(synthetic_report):
    c = cell(synthetic_report, "semnet_t2", "g", "0.01-20", "psnr")
    assert c["status"] == "ok" and c["n"] == 2 and c["seeds"] == [0, 1]
    assert c["mean"] == pytest.approx(31.01) and c["std"] == pytest.approx(np.std([31.0, 31.02], ddof=1))
    assert c["text"] == "31.0100 ± 0.0141" and c["diff_text"] == "-3.1337" and c["diff_class"] == "worse"
    lp = cell(synthetic_report, "semnet_t2", "g", "0.01-20", "lpips")
    assert lp["diff_class"] == "worse" and lp["diff"] > 0  # lower is better for LPIPS
    html = main_table(page(synthetic_report, "semnet_t2"))
    assert "31.0100 ± 0.0141</a><span class=\"n\">n=2</span>" in html
    assert '<span class="diff worse" title="reproduced − paper">-3.1337</span>' in html
    # shared card: the same numbers in T2 (g), T4 (e) and T5 (ours)
    for tid, row in (("semnet_t4", "e"), ("semnet_t5", "ours")):
        assert cell(synthetic_report, tid, row, "0.01-20", "psnr")["text"] == "31.0100 ± 0.0141"
    # one seed only
    b = cell(synthetic_report, "semnet_t2", "b", "40-60", "psnr")
    assert b["n"] == 1 and b["std"] is None and b["text"] == "20.3000"


def test_claims_use_a_welch_test(synthetic_report):
    c = claim(synthetic_report, "semnet_t2", "full_beats_base_psnr_large")
    (sc,) = c["checks"]
    p = stats.ttest_ind([21.0, 21.02], [20.0, 19.98], equal_var=False, alternative="greater").pvalue
    assert sc["p"] == pytest.approx(p) and sc["test"] == "Welch t-test, one-sided"
    assert c["reproduced"] == "reproduced" and sc["verdict"] == "reproduced"
    assert c["paper"] == "supported"
    # n = 1 on one side
    c = claim(synthetic_report, "semnet_t2", "mb_beats_base")
    assert c["reproduced"] == "n too small"
    assert all(s["verdict"] == "n too small" for s in c["checks"])
    # rows not run -> not run; a mix -> incomplete
    assert claim(synthetic_report, "semnet_t2", "pe_helps_sefn")["reproduced"] == "not run"
    assert claim(synthetic_report, "semnet_t2", "full_model_best")["reproduced"] == "incomplete"
    # self-ensemble results are kept apart from plain ones; the FLOPs ratio is checked
    se = cell(synthetic_report, "evssm_t12", "evssm_se", "gopro", "psnr")
    plain = cell(synthetic_report, "evssm_t12", "evssm", "gopro", "psnr")
    assert se["mean"] == pytest.approx(28.315) and plain["mean"] == pytest.approx(28.015)
    assert claim(synthetic_report, "evssm_t12", "self_ensemble_costs_4x_flops")["reproduced"] == "reproduced"
    assert claim(synthetic_report, "evssm_t12", "self_ensemble_gain")["reproduced"] == "reproduced"
    html = page(synthetic_report, "semnet_t2")
    assert "Welch t-test, one-sided" in html and "n too small" in html


def test_statuses_are_shown_not_crashed(synthetic_report):
    t3 = main_table(page(synthetic_report, "semnet_t3"))
    assert t3.count(">out of memory</a>") == 15
    assert claim(synthetic_report, "semnet_t3", "ssa_oom_256")["reproduced"] == "reproduced"
    assert cell(synthetic_report, "semnet_t3", "ssa256", "20-40", "ssim")["note"] == "as in the paper"
    failed = cell(synthetic_report, "semnet_t2", "c", "40-60", "psnr")
    assert failed["status"] == "failed" and "device-side assert" in failed["problems"][0]
    unreadable = cell(synthetic_report, "semnet_t2", "d", "0.01-20", "fid")
    assert unreadable["status"] == "failed" and "unreadable" in unreadable["problems"][0]
    mismatch = cell(synthetic_report, "evssm_t11", "k3", "gopro", "ssim")
    assert mismatch["status"] == "protocol mismatch"
    assert "ssim[uniform7,rgb,uint8]" in mismatch["problems"][0]
    assert cell(synthetic_report, "evssm_t11", "k3", "gopro", "psnr")["status"] == "ok"
    # a non-metric column missing from the result file
    assert cell(synthetic_report, "evssm_t11", "k7", "gopro", "runtime")["status"] == "ok"
    assert cell(synthetic_report, "evssm_t9", "evssm2", "gopro", "params")["status"] == "not run"
    html = page(synthetic_report, "semnet_t2")
    assert ">failed</a>" in html


def test_provenance_of_each_number(synthetic_report):
    html = page(synthetic_report, "semnet_t2")
    m = re.search(r'<a class="rv" href="#(prov-g-0\.01-20)"', html)
    assert m, "a reproduced number links to its provenance"
    block = html[html.index(f'id="{m.group(1)}"'):]
    block = block[:block.index('<div class="prov"', 10)]
    for needle in ("semnet-half", "cfg0semnethal", "0123456789ab", "d41d8cd98f00b204e98", "CPU (test fixture)",
                   "psnr[rgb,uint8]", "lpips[vgg,v0.1]", "smoke/embedded_inpainting/semnet-half/seed1/0.01-20.json",
                   "2026-11-21T10:00:00Z"):
        assert needle in block, needle
    prov = data(synthetic_report, "semnet_t2")["provenance"]
    g = next(p for p in prov if p["row"] == "g" and p["condition"] == "0.01-20")
    assert [s["config_hash"] for s in g["seeds"]] == ["cfg0semnethal", "cfg1semnethal"]
    assert g["seeds"][0]["commit"].startswith("0123456789ab") and g["seeds"][0]["hardware"] == "CPU (test fixture)"


def test_plots(synthetic_report, empty_report):
    for tid in ("semnet_t2", "semnet_t3", "semnet_t4", "semnet_t5"):
        for out in (synthetic_report, empty_report):
            png = out / "plots" / f"{tid}_mask_ratio.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f'src="plots/{tid}_mask_ratio.png"' in page(out, tid)
    assert (synthetic_report / "plots" / "semnet_t2_curves.png").exists()
    assert not (empty_report / "plots" / "semnet_t2_curves.png").exists()
    assert (synthetic_report / "plots" / "evssm_fig4.png").exists()
    assert (synthetic_report / "plots" / "evssm_fig6_evssm.png").exists()
    assert "encoder_level1.3" in page(synthetic_report, "evssm_fig6")
    assert (synthetic_report / "assets" / "evssm_fig8" / "gopro_000_evssm.png").exists()
    # qualitative grids from the evaluation samples a result lists (missing ones skipped)
    fig7 = page(synthetic_report, "evssm_fig7")
    assert 'src="assets/evssm_fig7/evssm_embedded_deblur_img_003_pred.png"' in fig7
    assert 'src="assets/evssm_fig7/evssm_embedded_deblur_img_003_gt.png"' in fig7
    fig4 = page(synthetic_report, "evssm_fig4")
    assert "failed: fftformer.npy" in fig4 and 'src="plots/evssm_fig4.png"' in fig4
    assert "missing: fftformer" in fig4  # the claim cannot be checked without it
    fig5 = page(synthetic_report, "evssm_fig5")
    assert "reproduced" in fig5  # evssm and the four-direction scan have similar ERFs here


def test_every_local_link_and_image_exists(synthetic_report):
    for p in synthetic_report.glob("*.html"):
        html = p.read_text()
        for ref in re.findall(r'(?:src|href)="([^"#:]+)(?:#[^"]*)?"', html):
            assert (synthetic_report / ref).exists(), (p.name, ref)
        ids = set(re.findall(r'id="([^"]+)"', html))
        for frag in re.findall(r'href="#([^"]+)"', html):
            assert frag in ids, (p.name, frag)


def test_audit(empty_report):
    audit = json.loads((empty_report / "audit.json").read_text())
    f = audit["findings"]
    contra = [x for x in f if x["severity"] == "contradiction"]
    assert len(contra) == 1
    assert {c["value"] for c in contra[0]["cells"]} == {"0.0412", "0.0431"}
    assert {(c["table"], c["row"]) for c in contra[0]["cells"]} == {("semnet_t2", "f"), ("semnet_t3", "smb256")}
    psnr_ssim = [x for x in f if x["check"] == "psnr_ssim"]
    assert [x["cells"][0]["table"] for x in psnr_ssim] == ["evssm_t11"]
    assert {c["row"] for c in psnr_ssim[0]["cells"]} == {"k3", "k5", "k7", "k9"}
    margin = next(x for x in f if x.get("claim") == "self_ensemble_gain")
    assert "0.24" in margin["message"] and "0.22" in margin["message"]
    mask = [x for x in f if x["check"] == "mask_ratio"]
    assert {(c["row"], c["column"]) for x in mask for c in x["cells"]} == {("ssa64", "ssim"), ("smb64", "ssim")}
    unsupported = {x["claim"] for x in f if x["check"] == "claims"}
    assert unsupported == {"self_ensemble_gain", "pe_helps_fn", "sbdm_helps_sefn"}
    # the three tables printing the full half-scale model agree on all 15 cells
    agree = [a for a in audit["agreements"] if a["cells"][0]["card"] == "semnet-half"]
    assert len(agree) == 15 and all({c["table"] for c in a["cells"]} == {"semnet_t2", "semnet_t4", "semnet_t5"}
                                    for a in agree)
    evssm = [a for a in audit["agreements"] if a["cells"][0]["card"] == "evssm"]
    assert {c["table"] for a in evssm for c in a["cells"]} == {"evssm_t10", "evssm_t11", "evssm_t12"}
    html = (empty_report / "audit.html").read_text()
    assert "0.0412" in html and "0.0431" in html and 'href="semnet_t3.html#cell-smb256-0.01-20-lpips"' in html
    # flagged cells are marked on the table pages
    assert 'id="cell-smb256-0.01-20-lpips" class="pc flag"' in page(empty_report, "semnet_t3")


def test_latex_files(empty_report, synthetic_report, tables):
    for tid in tables:
        tex = (synthetic_report / "latex" / f"{tid}.tex").read_text()
        assert r"\usepackage{booktabs}" in tex
        assert tex.count(r"\toprule") == 1 and tex.count(r"\bottomrule") == 1 and r"\midrule" in tex
        for tok in expected_tokens()[tid]:
            assert tok in tex
    tex = (synthetic_report / "latex" / "semnet_t2.tex").read_text()
    assert r"31.0100$\pm$0.0141" in tex and r"\multicolumn{5}{c}{0.01\%-20\%}" in tex
    assert r"\multicolumn{5}{c}{Out of memory}" in (synthetic_report / "latex" / "semnet_t3.tex").read_text()


# ------------------------------------------------------------------ robustness
def test_odd_result_files_do_not_crash(tmp_path):
    res = tmp_path / "results"
    d = res / "smoke" / "embedded_deblur" / "evssm" / "seed0"
    d.mkdir(parents=True)
    (d / "embedded_deblur.json").write_text("[1, 2, 3]")
    (d / "other.json").write_bytes(b"\x00\xff\xfe")
    d1 = res / "smoke" / "embedded_deblur" / "evssm-k5" / "seed3"
    d1.mkdir(parents=True)
    (d1 / "embedded_deblur.json").write_text(json.dumps(
        {"status": "ok", "condition": "embedded_deblur", "metrics": {"psnr": {"value": "high", "protocol": "psnr[rgb,uint8]"},
                                                                  "ssim": 0.9}}))
    d2 = res / "smoke" / "embedded_deblur" / "evssm-k9" / "seed0"
    d2.mkdir(parents=True)
    (d2 / "embedded_deblur.json").write_text(json.dumps({"condition": "embedded_deblur", "metrics": []}))
    d3 = res / "smoke" / "embedded_deblur" / "evssm-l1loss" / "seed0"
    d3.mkdir(parents=True)
    (d3 / "embedded_deblur.json").write_text(json.dumps(
        {"schema": "ssmrepro.result/1", "status": "ok", "condition": "embedded_deblur",
         "metrics": {"psnr": {"value": float("nan"), "protocol": "psnr[rgb,uint8]"}},
         "run": {"seed": "zero"}, "provenance": "x"}).replace("NaN", "NaN"))
    (res / "smoke" / "erf").mkdir(parents=True)
    (res / "smoke" / "erf" / "evssm.npy").write_text("not numpy")
    out = tmp_path / "out"
    render(TABLES, res, out, "smoke", plots_enabled=False)
    assert cell(out, "evssm_t11", "k7", "gopro", "psnr")["status"] == "failed"
    k5 = cell(out, "evssm_t11", "k5", "gopro", "psnr")
    assert k5["status"] == "not measured" and "not a number" in k5["problems"][0]
    assert cell(out, "evssm_t11", "k9", "gopro", "psnr")["status"] == "failed"  # no status
    assert cell(out, "evssm_t10", "l1", "gopro", "psnr")["status"] == "not measured"  # NaN
    assert "failed: cannot read evssm.npy" in page(out, "evssm_fig4")


def test_report_reads_only_tables_and_results(tmp_path, monkeypatch):
    """Copied table definitions and a results folder elsewhere are all a render needs."""
    tdir = tmp_path / "defs"
    shutil.copytree(TABLES, tdir)
    populate(tmp_path / "res")
    monkeypatch.chdir(tmp_path)
    index = render("defs", "res", "site", "smoke", plots_enabled=False)
    assert index == Path("site") / "index.html" and index.exists()
    assert "31.0100 ± 0.0141" in (tmp_path / "site" / "semnet_t2.html").read_text()


def test_cli(tmp_path, capsys):
    from ssmrepro.report.__main__ import main

    assert main(["--tables", str(TABLES), "--results", str(tmp_path / "r"), "--out", str(tmp_path / "o"),
                 "--scale", "smoke", "--no-plots"]) == 0
    assert (tmp_path / "o" / "index.html").exists()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "semnet_t1.yaml").write_text("paper: semnet\n")
    assert main(["--tables", str(bad), "--results", str(tmp_path / "r"), "--out", str(tmp_path / "o2")]) == 2
    assert "semnet_t1.yaml" in capsys.readouterr().err


# ------------------------------------------------------------------ claim statistics in isolation
def _measure(values):
    m = Measure()
    m.values = list(values)
    m.seeds = list(range(len(values)))
    return m


def test_claim_statistics(tables):
    t2, t13 = tables["semnet_t2"], tables["evssm_t13"]
    c = next(c for c in t2.claims if c.id == "full_beats_base_psnr_large")
    a, b = [22.0, 22.4, 22.2], [21.9, 22.3, 22.1]
    res = evaluate_claim(t2, c, lambda r, cond, col: _measure(a if r == "g" else b))
    p = stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue
    assert res.checks[0].p == pytest.approx(p) and p > 0.05
    assert res.verdict == "same direction, not significant"
    res = evaluate_claim(t2, c, lambda r, cond, col: _measure(b if r == "g" else a))
    assert res.verdict == "not reproduced"
    # lower-is-better columns flip the direction
    c = next(c for c in t2.claims if c.id == "sefn_beats_fn_full")
    res = evaluate_claim(t2, c, lambda r, cond, col: _measure([1.0, 1.1] if (r == "g") == (col in ("psnr", "ssim"))
                                                              else [0.5, 0.6]))
    assert res.verdict == "reproduced"
    # against published-only rows: one-sample t-test against the printed value
    c = next(c for c in t13.claims if c.id == "evssm_best_dpdd")
    vals = {"psnr": [26.3, 26.5, 26.4], "ssim": [0.83, 0.84, 0.835]}
    res = evaluate_claim(t13, c, lambda r, cond, col: _measure(vals[col]) if r in ("evssm", "restormer") else None)
    ebdb = next(s for s in res.checks if s.b == "ebdb" and s.column == "psnr")
    assert ebdb.p == pytest.approx(stats.ttest_1samp(vals["psnr"], 23.45, alternative="greater").pvalue)
    assert ebdb.verdict == "reproduced"
    # identical seeds (no spread): a direct comparison
    c = next(c for c in tables["evssm_t12"].claims if c.id == "geot_beats_nogeot")
    res = evaluate_claim(tables["evssm_t12"], c,
                         lambda r, cond, col: _measure([2.0, 2.0] if r == "evssm" else [1.0, 1.0]))
    assert res.verdict == "reproduced" and "no spread" in res.checks[0].test
