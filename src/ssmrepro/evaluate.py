"""``ssmrepro evaluate RUN_DIR``: score a trained run on its test conditions, one result file per
condition (contract 4 in docs/architecture.md).

Protocols per task (ids in ``ssmrepro.metrics``):
- inpainting (SEM-Net): the output is composited (``out * mask + image * (1 - mask)``) as the
  reference evaluation does, then PSNR/SSIM (scikit-image on uint8), L1 over the whole image and
  over the hole (percent), LPIPS vgg, FID (pytorch-fid over the whole condition).
- deblurring (EVSSM): RGB PSNR, 3-D Gaussian SSIM (GoPro/HIDE protocol), plus scikit-image SSIM and
  Y-channel PSNR as the common alternatives; RealBlur test sets use the ECC-aligned protocols.
A protocol whose pretrained backbone is missing is recorded with ``value: null`` and the reason;
a model that runs out of memory gives ``status: "out of memory"``, not a crash.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import yaml

from .atomic import write_json
from .errors import UserError
from .paths import project_root
from .provenance import provenance

RESULT_SCHEMA = "ssmrepro.result/1"

PROTOCOLS = {
    "inpainting": ["psnr[rgb,uint8]", "ssim[uniform7,rgb,uint8]", "l1[whole,percent]",
                   "l1[hole,percent]", "lpips[vgg,v0.1]", "fid[pytorch-fid,2048]"],
    "deblurring": ["psnr[rgb,uint8]", "ssim[gauss11x11x11,rgb,uint8]", "ssim[uniform7,rgb,uint8]",
                   "psnr[y,uint8]"],
    "realblur": ["psnr[realblur,ecc]", "ssim[realblur,ecc]", "psnr[rgb,uint8]"],
}
INPAINTING_BINS = ("0.01-20", "20-40", "40-60")
SAMPLES_SAVED = 4


def read_run(run_dir: Path) -> dict:
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.exists():
        raise UserError(f"{run_dir}: not a run folder (no config.yaml); train it first with "
                        f"`ssmrepro train CARD --data DATASET --run-dir {run_dir}`")
    return yaml.safe_load(cfg_path.read_text())


def load_model(run_dir: Path, cfg: dict, eval_switches: dict | None = None):
    from .cards import load_card
    from .train.checkpoint import load_model_weights

    final = run_dir / "final.pt"
    if not final.exists():
        raise UserError(f"{run_dir}: training is not finished (no final.pt); rerun "
                        f"`ssmrepro train {cfg['card']} ... --run-dir {run_dir}` to resume it")
    card = load_card(cfg["card"])
    switches = {**cfg["switches"], **(eval_switches or card.evaluate.get("switches", {}))}
    from .cards import builder

    model = builder(card.family)(**switches)
    model.load_state_dict(load_model_weights(final), strict=True)
    return card, model.eval()


def protocols_for(task: str, condition: str) -> list[str]:
    if condition.startswith("realblur"):
        return PROTOCOLS["realblur"]
    return PROTOCOLS[task]


def default_conditions(task: str, dataset: str) -> list[str]:
    return list(INPAINTING_BINS) if task == "inpainting" else [dataset]


def _to_uint8(t: torch.Tensor) -> np.ndarray:
    return (t.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())


def predict(model, item: dict, task: str, device) -> torch.Tensor:
    if task == "inpainting":
        image = item["image"][None].to(device)
        mask = item["mask"][None].to(device)
        masked = image * (1 - mask) + mask
        out = model(masked, mask)
        return (out * mask + image * (1 - mask))[0]
    return model(item["input"][None].to(device))[0]


def _score(preds, gts, masks, protocol_ids):
    """One pass for the plain numpy protocols; each network protocol (LPIPS, FID) on its own, so
    a missing pretrained backbone costs only its own metric."""
    from .metrics import evaluate_pairs, get_protocol
    from .pretrained import MissingPretrainedWeights

    plain = [p for p in protocol_ids if get_protocol(p).backend == "numpy"]
    groups = ([plain] if plain else []) + [[p] for p in protocol_ids if p not in plain]
    metrics = {}
    for group in groups:
        try:
            out = evaluate_pairs(preds, gts, masks, group)["metrics"]
        except MissingPretrainedWeights as exc:
            out = {pid: {"value": None, "status": f"missing pretrained weights: {exc}"} for pid in group}
        for pid in group:
            m = out[pid]
            entry = {"value": m["value"], "protocol": pid}
            entry.update({k: m[k] for k in ("better", "n_images", "status") if k in m})
            metrics[pid.split("[", 1)[0] + _variant(pid)] = entry
    return metrics


def _variant(pid: str) -> str:
    """Metric key in a result: the paper's metric names first (psnr, ssim, l1, lpips, fid); the
    alternatives carry their protocol id."""
    primary = {"psnr[rgb,uint8]", "ssim[uniform7,rgb,uint8]", "l1[whole,percent]",
               "lpips[vgg,v0.1]", "fid[pytorch-fid,2048]", "psnr[realblur,ecc]", "ssim[realblur,ecc]"}
    return "" if pid in primary else pid[pid.index("["):]


def evaluate_condition(run_dir: Path, cfg: dict, condition: str, *, self_ensemble: bool,
                       data_root: str, limit: int | None, device) -> dict:
    from .data.loaders import test_dataset
    from .train_cli import split_dataset

    dataset, resolution = split_dataset(cfg["dataset"])
    card, model = load_model(run_dir, cfg)
    model = model.to(device)
    if self_ensemble:
        from .nn.evssm import SelfEnsemble

        model = SelfEnsemble(model)
    task = cfg["task"]
    items = test_dataset(dataset, condition, root=data_root, resolution=resolution)
    n = len(items) if not limit else min(limit, len(items))
    preds, gts, masks, names = [], [], [], []
    status, seconds = "ok", 0.0
    try:
        with torch.no_grad():
            for i in range(n):
                item = items[i]
                t0 = time.perf_counter()
                out = predict(model, item, task, device)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds += time.perf_counter() - t0
                preds.append(_to_uint8(out))
                gts.append(_to_uint8(item["image"] if task == "inpainting" else item["target"]))
                masks.append(item["mask"][0].numpy() > 0.5 if task == "inpainting" else None)
                names.append(item["name"])
    except (torch.cuda.OutOfMemoryError, MemoryError) as exc:  # noqa: F841
        status = "out of memory"
    except RuntimeError as exc:
        if "out of memory" not in str(exc).lower():
            raise
        status = "out of memory"
    result = {
        "schema": RESULT_SCHEMA, "status": status,
        "run": {"card": cfg["card"], "dataset": cfg["dataset"], "scale": cfg["scale"],
                "seed": cfg["seed"], "run_dir": str(run_dir),
                "config_hash": (run_dir / "config_hash").read_text().strip()
                if (run_dir / "config_hash").exists() else None,
                "checkpoint": str(run_dir / "final.pt")},
        "condition": condition, "data_version": cfg.get("data_version"),
        "options": {"self_ensemble": bool(self_ensemble),
                    "eval_switches": card.evaluate.get("switches", {})},
        "n_images": len(preds), "metrics": {},
        "provenance": {**provenance(project_root()), "device": str(device)},
    }
    if status == "ok" and preds:
        result["metrics"] = _score(preds, gts, masks if task == "inpainting" else None,
                                   protocols_for(task, condition))
        h, w = gts[0].shape[:2]
        result["runtime_ms_per_image"] = round(1000 * seconds / len(preds), 3)
        result["runtime_size"] = [h, w]
        result.update(_macs(model, task, (h, w), device))
        result["params"] = sum(p.numel() for p in model.parameters())
        result["samples"] = _save_samples(run_dir, condition, preds[:SAMPLES_SAVED],
                                          gts[:SAMPLES_SAVED], names[:SAMPLES_SAVED])
    return result


def _macs(model, task: str, size, device) -> dict:
    """MACs of one forward pass at the test size (fvcore; scan and FFT excluded)."""
    from .complexity import COUNTER_FULL, count_macs, example_inputs

    inputs = tuple(t.to(device) for t in example_inputs(task, size))
    try:
        return {"macs_g": round(count_macs(model, *inputs, ssm_projections=True) / 1e9, 4),
                "macs_counter": COUNTER_FULL}
    except Exception as exc:  # noqa: BLE001 - a counting failure must not lose the result
        return {"macs_g": None, "macs_counter": f"failed: {str(exc).splitlines()[0][:200]}"}


def _save_samples(run_dir: Path, condition: str, preds, gts, names) -> list[str]:
    """A few outputs beside the ground truth, for the report's qualitative grids."""
    from .data.imageio import write_png

    folder = run_dir / "samples" / condition
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for pred, gt, name in zip(preds, gts, names):
        stem = Path(str(name)).stem
        write_png(folder / f"{stem}_pred.png", pred)
        write_png(folder / f"{stem}_gt.png", gt)
        out.append(str(folder / f"{stem}_pred.png"))
    return out


def evaluate_run(run_dir: Path, conditions=None, out=None, self_ensemble=False,
                 data_root="data", limit=None) -> list[Path]:
    from .train_cli import split_dataset

    cfg = read_run(run_dir)
    dataset, _ = split_dataset(cfg["dataset"])
    conditions = conditions or default_conditions(cfg["task"], dataset)
    if out and len(conditions) > 1 and str(out).endswith(".json"):
        raise UserError("--out names one file but several conditions were asked; give a folder")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    written = []
    for condition in conditions:
        result = evaluate_condition(run_dir, cfg, condition, self_ensemble=self_ensemble,
                                    data_root=data_root, limit=limit, device=device)
        if out and str(out).endswith(".json"):
            target = Path(out)
        else:
            stem = condition + ("+self_ensemble" if self_ensemble else "")
            target = Path(out or run_dir / "results") / f"{stem}.json"
        write_json(target, result)
        written.append(target)
    return written
