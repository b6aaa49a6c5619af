"""Table definitions (workflow/tables/*.yaml) and their loader, ssmrepro.tables."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from ssmrepro.tables import (TableError, all_cards, all_jobs, card_rows, load_figures, load_scales,
                             load_table, load_tables, mask_bin, options_match, parse_number,
                             printed_decimals, result_stem)

ROOT = Path(__file__).resolve().parents[1]
TABLES = ROOT / "workflow" / "tables"
SEEDS = ROOT.parent / "shared" / "seeds"  # the two supplements as text (absent on some machines)
SEED_FILES = {"semnet": "000_9ef95d3e31fd12f1.txt", "evssm": "004_cf2627459513530d.txt"}

SEMNET_CARDS = {"semnet", "semnet-umamba", "semnet-vmamba", "semnet-2dssm", "semnet-half-base",
                "semnet-half-mb-fn", "semnet-half-mb-sefn", "semnet-half-mb-fn-sbdm",
                "semnet-half-mb-sefn-sbdm", "semnet-half-mb-fn-sbdm-pe", "semnet-half", "semnet-half-csa",
                "semnet-half-ssa", "semnet-half-raster", "semnet-half-biraster", "semnet-half-snake",
                "semnet-half-reduce1x1"}
EVSSM_CARDS = {"evssm", "evssm-l1loss", "evssm-k3", "evssm-k5", "evssm-k9", "evssm-nogeot", "evssm2",
               "evssm2-nogeot", "restormer"}


@pytest.fixture(scope="module")
def tables():
    return load_tables(TABLES)


def by_id(tables):
    return {t.id: t for t in tables}


# ------------------------------------------------------------------ the seed documents, parsed here
def parse_seed(paper: str) -> dict[int, list[str]]:
    """Table number -> the lines of that table in the supplement text (independent of the YAML)."""
    lines = (SEEDS / SEED_FILES[paper]).read_text().splitlines()
    out = {}
    for i, line in enumerate(lines):
        m = re.match(r"^Table (\d+)\. ", line)
        if not m:
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        block = []
        while j < len(lines) and lines[j].strip():
            block.append(lines[j])
            j += 1
        out[int(m.group(1))] = block
    return out


def seed_tables(paper: str) -> dict[int, list[str]]:
    """The printed tables: parsed from the supplement when it is here, else the verbatim copy below."""
    if (SEEDS / SEED_FILES[paper]).exists():
        return parse_seed(paper)
    return {n: lines for (p, n), lines in PRINTED.items() if p == paper}


PRINTED = {  # the table lines of both supplements, verbatim (tab-separated), checked against
    # /work/shared/seeds when that folder is present
    ('semnet', 1): [
        'Mask\tPSNR \\uparrow\tSSIM \\uparrow\tL ₁ \\downarrow\tFID \\downarrow\tLPIPS \\downarrow',
        '2-D SSM [1]\t24.1153\t0.7877\t3.0950\t5.8556\t0.1672',
        'VMamba [5]\t24.1409\t0.8031\t2.9168\t5.9508\t0.1739',
        'U-Mamba [6]\t24.2077\t0.8119\t2.7440\t5.6034\t0.1466',
        'Ours\t24.4805\t0.8240\t2.6389\t5.5972\t0.1368',
    ],
    ('semnet', 2): [
        'Net\tComponents\t\t\t\t\t0.01%-20%\t\t\t\t\t20%-40%\t\t\t\t\t40%-60%\t\t\t\t',
        '\tMB\tFN [11]\tSEFN\tSBDM\tPE\tPSNR \\uparrow\tSSIM \\uparrow\tL1 \\downarrow\tFID \\downarrow\tLPIPS \\downarrow\tPSNR \\uparrow\tSSIM \\uparrow\tL1 \\downarrow\tFID \\downarrow\tLPIPS \\downarrow\tPSNR \\uparrow\tSSIM \\uparrow\tL1 \\downarrow\tFID \\downarrow\tLPIPS \\downarrow',
        '(a)\t\t\t\t\t\t33.5812\t0.9537\t0.5385\t1.4877\t0.0513\t25.8971\t0.8527\t1.9786\t4.4025\t0.1480\t21.6134\t0.7308\t4.1254\t8.1732\t0.2464',
        '(b)\t✓\t✓\t\t\t\t33.7596\t0.9604\t0.5274\t1.4660\t0.0442\t26.0679\t0.8729\t1.8220\t4.3759\t0.1261\t21.7828\t0.7587\t3.9117\t8.0742\t0.2227',
        '(c)\t✓\t\t✓\t\t\t34.1085\t0.9624\t0.5059\t1.4147\t0.0420\t26.3048\t0.8755\t1.7299\t4.3664\t0.1187\t22.0510\t0.7682\t3.7649\t7.9871\t0.2132',
        '(d)\t✓\t✓\t\t✓\t\t33.8899\t0.9614\t0.5151\t1.4534\t0.0415\t26.2217\t0.8767\t1.7635\t4.3674\t0.1181\t21.9064\t0.7653\t3.7679\t8.0214\t0.2102',
        '(e)\t✓\t\t✓\t✓\t\t34.1184\t0.9624\t0.5043\t1.4010\t0.0408\t26.3452\t0.8776\t1.7155\t4.3559\t0.1174\t22.0926\t0.7692\t3.7634\t7.9174\t0.2091',
        '(f)\t✓\t✓\t\t✓\t✓\t33.9455\t0.9616\t0.5128\t1.3751\t0.0412\t26.4037\t0.8790\t1.7303\t4.3004\t0.1193\t22.1776\t0.7708\t3.6747\t7.9125\t0.2095',
        '(g)\t✓\t\t✓\t✓\t✓\t34.1437\t0.9627\t0.4986\t1.3548\t0.0403\t26.4728\t0.8808\t1.6947\t4.2718\t0.1145\t22.1780\t0.7725\t3.6274\t7.8915\t0.2038',
    ],
    ('semnet', 3): [
        'Input Resolution\tModel\t0.01%-20%\t\t\t\t\t20%-40%\t\t\t\t\t40%-60%\t\t\t\t',
        '\t\tPSNR \\uparrow\tSSIM \\uparrow\tL1 \\downarrow\tFID \\downarrow\tLPIPS \\downarrow\tPSNR \\uparrow\tSSIM \\uparrow\tL1 \\downarrow\tFID \\downarrow\tLPIPS \\downarrow\tPSNR \\uparrow\tSSIM \\uparrow\tL1 \\downarrow\tFID \\downarrow\tLPIPS \\downarrow',
        '256*256\tCSA [11]\t33.5878\t0.9595\t0.5451\t2.7514\t0.0462\t25.9348\t0.8712\t1.8644\t5.1404\t0.1300\t21.5362\t0.7543\t4.0471\t8.1652\t0.2326',
        '\tSSA [3]\tOut of memory\t\t\t\t\tOut of memory\t\t\t\t\tOut of memory\t\t\t\t',
        '\tSMB\t33.9455\t0.9616\t0.5128\t1.3751\t0.0431\t26.4037\t0.8790\t1.7303\t4.3004\t0.1193\t22.1776\t0.7708\t3.6747\t7.9125\t0.2095',
        '64*64\tSSA [3]\t32.0110\t0.9308\t0.7354\t0.8345\t0.0375\t24.5320\t0.7121\t3.3047\t2.8991\t0.1035\t20.1655\t0.7265\t5.2256\t5.5547\t0.1702',
        '\tSMB\t32.0218\t0.9437\t0.7120\t0.8152\t0.0351\t24.6112\t0.7214\t3.1575\t2.7503\t0.1022\t20.1716\t0.7352\t5.1332\t5.3158\t0.1617',
    ],
    ('semnet', 4): [
        'Net\tComponents\t\t\t\t0.01%-20%\t\t\t\t\t20%-40%\t\t\t\t\t40%-60%\t\t\t\t\t',
        '\tMB\tBi-D\tSnake\tPE\tSEFN\tPSNR \\uparrow\tSSIM \\uparrow\tL1 \\downarrow\tFID \\downarrow\tLPIPS \\downarrow\tPSNR \\uparrow\tSSIM \\uparrow\tL1 \\downarrow\tFID \\downarrow\tLPIPS \\downarrow\tPSNR \\uparrow\tSSIM \\uparrow\tL1 \\downarrow\tFID \\downarrow\tLPIPS \\downarrow',
        '(a)\t✓\t\t\t✓\t✓\t34.1114\t0.9624\t0.5046\t1.4134\t0.0418\t26.3305\t0.8769\t1.7231\t4.3533\t0.1186\t22.0760\t0.7688\t3.7643\t7.9868\t0.2125',
        '(b)\t✓\t✓\t\t✓\t✓\t34.1428\t0.9625\t0.5016\t1.3560\t0.0416\t26.4725\t0.8802\t1.7078\t4.2751\t0.1178\t22.1351\t0.7715\t3.6742\t8.0395\t0.2078',
        '(c)\t✓\t\t✓\t✓\t✓\t34.1172\t0.9624\t0.5040\t1.3564\t0.0419\t26.4619\t0.8793\t1.7105\t4.2830\t0.1185\t22.1720\t0.7692\t3.6890\t8.0372\t0.2108',
        '(e)\t✓\t✓\t✓\t✓\t✓\t34.1437\t0.9627\t0.4986\t1.3548\t0.0403\t26.4728\t0.8808\t1.6947\t4.2718\t0.1145\t22.1780\t0.7725\t3.6274\t7.8915\t0.2038',
    ],
    ('semnet', 5): [
        'Model\t0.01%-20%\t\t\t\t\t20%-40%\t\t\t\t\t40%-60%\t\t\t\t',
        '\tPSNR \\uparrow\tSSIM \\uparrow\tL1 \\downarrow\tFID \\downarrow\tLPIPS \\downarrow\tPSNR \\uparrow\tSSIM \\uparrow\tL1 \\downarrow\tFID \\downarrow\tLPIPS \\downarrow\tPSNR \\uparrow\tSSIM \\uparrow\tL1 \\downarrow\tFID \\downarrow\tLPIPS \\downarrow',
        'w 1×1 conv\t33.9158\t0.9614\t0.5060\t1.4503\t0.0414\t26.2481\t0.8753\t1.7605\t4.3794\t0.1185\t22.0311\t0.7700\t3.7580\t8.0976\t0.2184',
        'w/o 1×1 conv (ours)\t34.1437\t0.9627\t0.4986\t1.3548\t0.0403\t26.4728\t0.8808\t1.6947\t4.2718\t0.1145\t22.1780\t0.7725\t3.6274\t7.8915\t0.2038',
    ],
    ('evssm', 9): [
        'Method\tParams (M)\tFLOPs (G)\tPSNR (dB)\tSSIM',
        'EVSSM2 w/o GeoT\t24M\t148\t33.94\t0.9683',
        'EVSSM2 w/ GeoT\t24M\t148\t34.19\t0.9691',
    ],
    ('evssm', 10): [
        'Method\tPSNR (dB)\tSSIM',
        'EVSSM (L1 loss)\t33.86\t0.9673',
        'EVSSM (L1&Frequency loss)\t34.15\t0.9690',
    ],
    ('evssm', 11): [
        'Kernel size\t3×3\t5×5\t7×7\t9×9',
        'PSNR (dB)/SSIM\t33.08/0.9687\t33.12/0.9689\t34.15/0.9690\t34.15/0.9691',
        'Runtime (ms)\t83\t85\t89\t97',
    ],
    ('evssm', 12): [
        'Method\tFLOPs (G)\tRuntime (ms)\tPSNR (dB)\tSSIM',
        'EVSSM w/o GeoT\t126\t88\t33.89\t0.9671',
        'EVSSM w/o GeoT (self-ensemble)\t504\t352\t34.14\t0.9690',
        'EVSSM\t126\t89\t34.15\t0.9690',
        'EVSSM (self-ensemble)\t504\t356\t34.37\t0.9701',
    ],
    ('evssm', 13): [
        'Method\tEBDB [7]\tDMENet [10]\tJNB [17]\tDPDNet [1]\tKPAC [18]\tIFAN [11]\tRestormer [21]\tEVSSM (ours)',
        'PSNRs (dB)\t23.45\t23.41\t23.84\t24.34\t25.22\t25.37\t25.98\t26.16',
        'SSIMs\t0.683\t0.714\t0.715\t0.747\t0.774\t0.789\t0.811\t0.823',
    ],
}


NUMBER = re.compile(r"^\d+(\.\d+)?M?$")


def printed_tokens(block: list[str]) -> list[str]:
    """Every printed value of a table: numbers (as printed), pairs 'a/b' split, and 'Out of memory'."""
    out = []
    for line in block:
        for cell in line.split("\t"):
            cell = cell.strip()
            if cell == "Out of memory":
                out.append(cell)
                continue
            parts = cell.split("/") if re.fullmatch(r"\d+\.\d+/\d+\.\d+", cell) else [cell]
            out += [p for p in parts if NUMBER.match(p)]
    return out


def expected_tokens() -> dict[str, list[str]]:
    out = {}
    for paper in ("semnet", "evssm"):
        for n, block in seed_tables(paper).items():
            out[f"{paper}_t{n}"] = printed_tokens(block)
    return out


# ------------------------------------------------------------------ tests
def test_verbatim_copy_matches_the_supplements():
    if not all((SEEDS / f).exists() for f in SEED_FILES.values()):
        pytest.skip(f"the supplements are not under {SEEDS}; the tests use the verbatim copy")
    for paper in SEED_FILES:
        assert parse_seed(paper) == {n: lines for (p, n), lines in PRINTED.items() if p == paper}


def test_every_supplement_table_has_a_definition(tables):
    assert [t.id for t in tables] == ["semnet_t1", "semnet_t2", "semnet_t3", "semnet_t4", "semnet_t5",
                                      "evssm_t9", "evssm_t10", "evssm_t11", "evssm_t12", "evssm_t13"]
    assert set(expected_tokens()) == {t.id for t in tables}


def test_published_values_are_exactly_the_printed_ones(tables):
    """The YAML's published strings, as a multiset, equal the numbers printed in each seed table."""
    expected = expected_tokens()
    for t in tables:
        got = []
        for row in t.rows:
            for cond in t.conditions:
                if cond in row.spans:
                    got.append(row.spans[cond])
                    continue
                got += [row.published[cond][c.id] for c in t.columns if c.id in row.published.get(cond, {})]
        assert Counter(got) == Counter(expected[t.id]), t.id
        assert len(expected[t.id]) > 0


def test_row_labels_are_printed_in_the_seed_table(tables):
    for t in tables:
        block = "\n".join(seed_tables(t.paper)[t.table])
        for row in t.rows:
            assert row.label in block, (t.id, row.label)
            if row.group:
                assert row.group in block


def test_component_checkmarks_match_the_printed_rows(tables):
    """T2 and T4 print check marks; the count per row matches the ✓ in the seed line."""
    for tid in ("semnet_t2", "semnet_t4"):
        t = by_id(tables)[tid]
        block = seed_tables("semnet")[t.table]
        for row in t.rows:
            line = next(l for l in block if l.startswith(row.label + "\t"))
            assert line.count("✓") == len(row.components), (tid, row.id)
            # the order of the marks follows the component columns
            cells = line.split("\t")[1:1 + len(t.components)]
            marked = [cid for (cid, _), cell in zip(t.components, cells) if cell.strip() == "✓"]
            assert marked == [c for c, _ in t.components if c in row.components]


def test_card_names(tables):
    cards = set(all_cards(tables))
    assert cards == SEMNET_CARDS | EVSSM_CARDS
    t = by_id(tables)
    assert t["semnet_t2"].row("f").card == t["semnet_t3"].row("smb256").card == "semnet-half-mb-fn-sbdm-pe"
    assert t["semnet_t2"].row("g").card == t["semnet_t4"].row("e").card == t["semnet_t5"].row("ours").card == "semnet-half"
    assert t["evssm_t12"].row("evssm_se").options == {"self_ensemble": True}
    assert t["evssm_t12"].row("nogeot_se").card == "evssm-nogeot"
    assert [r.card for r in t["evssm_t13"].rows if r.card] == ["restormer", "evssm"]
    serves = card_rows(tables)
    assert {"paper": "evssm", "table": 10, "row": "l1_freq"} in serves["evssm"]


def test_protocols_are_the_papers(tables):
    for t in tables:
        for c in t.columns:
            if not c.is_metric:
                assert c.kind in ("params", "flops", "runtime")
                continue
            if t.paper == "semnet":
                assert c.protocol == {"psnr": "psnr[rgb,uint8]", "ssim": "ssim[uniform7,rgb,uint8]",
                                      "l1": "l1[whole,percent]", "fid": "fid[pytorch-fid,2048]",
                                      "lpips": "lpips[vgg,v0.1]"}[c.metric]
            else:
                assert c.protocol == {"psnr": "psnr[rgb,uint8]", "ssim": "ssim[gauss11x11x11,rgb,uint8]"}[c.metric]


def test_jobs(tables):
    t = by_id(tables)
    t3 = t["semnet_t3"].jobs()
    assert ("semnet-half-mb-fn-sbdm-pe", "celeba_hq", 64, "40-60", {}) in [tuple(j) for j in t3]
    dirs = {(j.card, j.resolution): j.dataset_dir for j in t3}
    assert dirs[("semnet-half-ssa", 64)] == "celeba_hq-64"
    assert dirs[("semnet-half-ssa", 256)] == "celeba_hq"
    assert len(t3) == 5 * 3  # five rows, all distinct jobs (same cards at 256 and 64 train apart)
    t12 = t["evssm_t12"].jobs()
    assert len(t12) == 4
    assert {j.result_stem for j in t12} == {"gopro", "gopro+self_ensemble"}
    # shared rows run once
    jobs = all_jobs(tables)
    assert len(jobs) == len(set(jobs))
    half = [j for j in jobs if j.card == "semnet-half"]
    assert len(half) == 3
    # published-only rows need nothing
    assert {j.card for j in t["evssm_t13"].jobs()} == {"restormer", "evssm"}


def test_jobs_at_smoke_scale_use_embedded_datasets(tables):
    scales = load_scales(TABLES)
    t = by_id(tables)
    j = t["evssm_t12"].jobs("smoke", scales)[0]
    assert (j.dataset, j.condition, j.dataset_dir) == ("embedded_deblur", "embedded_deblur", "embedded_deblur")
    j = [j for j in t["semnet_t3"].jobs("smoke", scales) if j.resolution == 64][0]
    assert j.dataset_dir == "embedded_inpainting-64"
    assert j.result_path("smoke", 1).as_posix() == \
        f"results/smoke/embedded_inpainting-64/{j.card}/seed1/{j.condition}.json"
    assert j.run_dir("smoke", 1).as_posix() == f"runs/smoke/embedded_inpainting-64/{j.card}/seed1"
    assert t["evssm_t13"].jobs("smoke", scales)[0].dataset == "embedded_defocus"
    assert t["evssm_t13"].jobs("full", scales)[0].dataset == "dpdd"


def test_claims_reference_rows_and_columns(tables):
    t = by_id(tables)
    kinds = Counter(c.kind for tab in tables for c in tab.claims)
    assert set(kinds) == {"beats", "order", "ratio", "equal", "status"}
    c = next(c for c in t["semnet_t4"].claims if c.id == "sbdm_beats_raster_psnr_large")
    assert (c.winner, c.losers, c.metrics, c.conditions) == ("e", ("a",), ("psnr",), ("40-60",))
    ratio = next(c for c in t["evssm_t12"].claims if c.id == "self_ensemble_costs_4x_flops")
    assert ratio.expected == 4 and ratio.metrics == ("flops",)
    for tab in tables:
        assert tab.claims, f"{tab.id} states no claim"


def test_figures():
    figs = {f.id: f for f in load_figures(TABLES)}
    assert [p.card for p in figs["evssm_fig4"].panels] == ["nafnet", "restormer", "fftformer", "evssm"]
    assert [p.card for p in figs["evssm_fig5"].panels] == ["evssm-nogeot", "evssm-flip", "evssm-transpose",
                                                          "evssm-fourdir", "evssm"]
    assert [p.label for p in figs["evssm_fig5"].panels][:3] == ["(a) EVSSM w/o F&T", "(b) EVSSM w/o T", "(c) EVSSM w/o F"]
    assert figs["evssm_fig6"].kind == "activation"
    assert {"semnet_fig2", "semnet_fig3"} <= set(figs)
    assert {f"evssm_fig{i}" for i in range(7, 13)} <= set(figs)
    assert "evssm-flip" in all_cards([], figs.values())


# ------------------------------------------------------------------ bad files
def _copy(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copy(TABLES / name, dst)
    return dst


def _edit(path: Path, fn):
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))


@pytest.mark.parametrize("edit, key", [
    (lambda d: d["rows"][0]["published"]["0.01-20"].__setitem__("psnr", 33.5812), "rows[0].published.0.01-20.psnr"),
    (lambda d: d["rows"][1]["published"]["20-40"].__setitem__("psnx", "1.0"), "rows[1].published.20-40.psnx"),
    (lambda d: d["rows"][1]["published"].__setitem__("10-20", {"psnr": "1"}), "rows[1].published.10-20"),
    (lambda d: d.pop("dataset"), "<top>"),
    (lambda d: d["columns"][0].pop("protocol"), "columns[0]"),
    (lambda d: d["claims"][0].__setitem__("winner", "zz"), "claims[0]"),
    (lambda d: d["claims"][0].__setitem__("kind", "wins"), "claims[0].kind"),
    (lambda d: d["rows"][2].__setitem__("components", ["MB", "XYZ"]), "rows[2].components"),
    (lambda d: d["rows"].append(dict(d["rows"][0])), "rows[7].id"),
    (lambda d: d.__setitem__("table", 3), "table"),
])
def test_bad_file_raises_one_line_naming_file_and_key(tmp_path, edit, key):
    path = _copy(tmp_path, "semnet_t2.yaml")
    _edit(path, edit)
    with pytest.raises(TableError) as e:
        load_table(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: {key}"), msg


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "evssm_t10.yaml"
    path.write_text("paper: evssm\ntable: [10\n")
    with pytest.raises(TableError, match=r"evssm_t10.yaml: line \d+: not valid YAML"):
        load_table(path)


def test_load_tables_reports_the_bad_file(tmp_path):
    for p in TABLES.glob("*.yaml"):
        shutil.copy(p, tmp_path / p.name)
    _edit(tmp_path / "evssm_t12.yaml", lambda d: d["rows"][0].pop("card"))
    with pytest.raises(TableError, match=r"evssm_t12.yaml: rows\[0\]: 'card' is a required property"):
        load_tables(tmp_path)


def test_helpers():
    assert parse_number("33.5812") == 33.5812 and parse_number("24M") == 24.0
    assert parse_number("Out of memory") is None and parse_number(None) is None
    assert printed_decimals("0.9690") == 4 and printed_decimals("126") == 0 and printed_decimals("x") is None
    assert mask_bin("0.01-20") == (0.01, 20.0) and mask_bin("gopro") is None
    assert result_stem("gopro", {"self_ensemble": True}) == "gopro+self_ensemble"
    assert result_stem("gopro", {"self_ensemble": False}) == "gopro"
    assert options_match({}, {"self_ensemble": False, "windows": True})
    assert options_match({}, None)
    assert not options_match({}, {"self_ensemble": True})
    assert options_match({"self_ensemble": True}, {"self_ensemble": True, "windows": True})
