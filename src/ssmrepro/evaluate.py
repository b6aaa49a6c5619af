"""``ssmrepro evaluate RUN_DIR``: score a trained run on its test conditions, one result file per
condition (contract 4 in docs/architecture.md). ``ssmrepro evaluate-weights CARD --weights FILE``:
the same for a weights file (the authors' released checkpoints), without a run.

Both go through one code path: a :class:`Subject` (the model, its card, where it came from: the
result's ``run`` entry) is scored by :func:`score` and written by :func:`write_results`; only how
the subject is made differs (:func:`subject_from_run`, :func:`subject_from_weights`).

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
from dataclasses import dataclass, field
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


@dataclass
class Subject:
    """What is scored: a model, its card and task, the dataset it is scored on, and where it came
    from (the result's ``run`` entry; released weights add a ``weights`` entry)."""

    card: object  # ssmrepro.cards.Card
    model: torch.nn.Module
    task: str
    dataset: str  # "name" or "name@resolution"
    run: dict
    data_version: str | None = None  # None: the test set's own
    extra: dict = field(default_factory=dict)  # more top-level result fields
    samples_dir: Path | None = None  # where sample images go (per condition below it)


def subject_from_run(run_dir: Path, cfg: dict | None = None) -> Subject:
    cfg = cfg if cfg is not None else read_run(run_dir)
    card, model = load_model(run_dir, cfg)
    chash = run_dir / "config_hash"
    return Subject(card=card, model=model, task=cfg["task"], dataset=cfg["dataset"],
                   run={"card": cfg["card"], "dataset": cfg["dataset"], "scale": cfg["scale"],
                        "seed": cfg["seed"], "run_dir": str(run_dir),
                        "config_hash": chash.read_text().strip() if chash.exists() else None,
                        "checkpoint": str(run_dir / "final.pt")},
                   data_version=cfg.get("data_version"), samples_dir=run_dir / "samples")


def subject_from_weights(card_name: str, weights: str | Path | None, dataset: str, *,
                         scale: str = "paper", model_scale: str = "paper") -> Subject:
    """A card with weights from a file: the card's released checkpoint (``weights`` None: its
    default place, see ``ssmrepro.authors``), or any file ``ssmrepro.convert.read_weights`` reads.
    The model is the card's ``model_scale`` configuration (released weights: paper)."""
    from . import authors
    from .cards import load_card
    from .convert import read_weights
    from .provenance import config_hash

    card = load_card(card_name)
    rel = authors.released(card)
    if rel is not None:
        path = authors.require_file(rel, weights)
    elif weights is None:
        raise UserError(f"card {card_name!r} describes no released checkpoint (no `checkpoint:`); "
                        f"pass --weights FILE, or use one of: "
                        f"{', '.join(sorted(authors.released_cards())) or '(none)'}")
    else:
        path = Path(weights)
    digest = authors.check_sha256(rel, path) if path.is_file() else None
    switches = card.switches_at(model_scale)
    eval_switches = card.evaluate.get("switches", {})
    model = card.build(model_scale, **eval_switches)
    sd, info = read_weights(path, card_name, model_scale, model=model)
    model.load_state_dict(sd, strict=True)
    for_card = rel.for_card if rel else card_name
    weights_entry = {
        "card": card_name, "for_card": for_card, "file": str(path), "sha256": digest,
        "released": rel is not None, "kind": info["kind"], "model_scale": model_scale,
        "dropped_reference_keys": len(info["dropped_reference_keys"]),
        "url": rel.url if rel else None, "expected_sha256": rel.sha256 if rel else None,
    }
    return Subject(
        card=card, model=model.eval(), task=card.task, dataset=dataset,
        run={"card": card_name, "dataset": dataset, "scale": scale, "seed": None, "run_dir": None,
             "config_hash": config_hash({"card": card_name, "switches": switches,
                                         "eval_switches": eval_switches, "weights_sha256": digest}),
             "checkpoint": str(path), "for_card": for_card},
        extra={"weights": weights_entry})


def score(subject: Subject, condition: str, *, self_ensemble: bool, data_root: str,
          limit: int | None, device, samples_dir: Path | None = None) -> dict:
    """Score one subject on one test condition: the result document (contract 4)."""
    from .data.loaders import test_dataset
    from .train_cli import split_dataset

    dataset, resolution = split_dataset(subject.dataset)
    model = subject.model.to(device)
    if self_ensemble:
        from .nn.evssm import SelfEnsemble

        model = SelfEnsemble(model)
    task = subject.task
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
    data_version = subject.data_version or getattr(items, "data_version", None)
    result = {
        "schema": RESULT_SCHEMA, "status": status, "run": dict(subject.run),
        "condition": condition, "data_version": data_version,
        "options": {"self_ensemble": bool(self_ensemble),
                    "eval_switches": subject.card.evaluate.get("switches", {})},
        "n_images": len(preds), "metrics": {},
        "provenance": {**provenance(project_root()), "device": str(device)},
        **subject.extra,
    }
    if status == "ok" and preds:
        result["metrics"] = _score(preds, gts, masks if task == "inpainting" else None,
                                   protocols_for(task, condition))
        h, w = gts[0].shape[:2]
        result["runtime_ms_per_image"] = round(1000 * seconds / len(preds), 3)
        result["runtime_size"] = [h, w]
        result.update(_macs(model, task, (h, w), device))
        result["params"] = sum(p.numel() for p in model.parameters())
        folder = samples_dir or subject.samples_dir
        if folder is not None:
            result["samples"] = _save_samples(folder / condition, preds[:SAMPLES_SAVED],
                                              gts[:SAMPLES_SAVED], names[:SAMPLES_SAVED])
    return result


def evaluate_condition(run_dir: Path, cfg: dict, condition: str, *, self_ensemble: bool,
                       data_root: str, limit: int | None, device) -> dict:
    """One condition of a run (kept for callers of the former API)."""
    return score(subject_from_run(run_dir, cfg), condition, self_ensemble=self_ensemble,
                 data_root=data_root, limit=limit, device=device)


def _macs(model, task: str, size, device) -> dict:
    """MACs of one forward pass at the test size (fvcore; scan and FFT excluded)."""
    from .complexity import COUNTER_FULL, count_macs, example_inputs

    inputs = tuple(t.to(device) for t in example_inputs(task, size))
    try:
        return {"macs_g": round(count_macs(model, *inputs, ssm_projections=True) / 1e9, 4),
                "macs_counter": COUNTER_FULL}
    except Exception as exc:  # noqa: BLE001 - a counting failure must not lose the result
        return {"macs_g": None, "macs_counter": f"failed: {str(exc).splitlines()[0][:200]}"}


def _save_samples(folder: Path, preds, gts, names) -> list[str]:
    """A few outputs beside the ground truth, for the report's qualitative grids."""
    from .data.imageio import write_png

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for pred, gt, name in zip(preds, gts, names):
        stem = Path(str(name)).stem
        write_png(folder / f"{stem}_pred.png", pred)
        write_png(folder / f"{stem}_gt.png", gt)
        out.append(str(folder / f"{stem}_pred.png"))
    return out


def _device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def write_results(subject: Subject, conditions: list[str], out, default_path, *, self_ensemble: bool,
                  data_root: str, limit: int | None, samples_dir=None) -> list[Path]:
    """Score ``subject`` on each condition and write one result file per condition: ``out`` (one
    ``.json`` for one condition, or a folder), else ``default_path(stem)``. ``samples_dir(target)``
    (optional): where a result's sample images go."""
    if out and len(conditions) > 1 and str(out).endswith(".json"):
        raise UserError("--out names one file but several conditions were asked; give a folder")
    device = _device()
    written = []
    for condition in conditions:
        stem = condition + ("+self_ensemble" if self_ensemble else "")
        if out and str(out).endswith(".json"):
            target = Path(out)
        elif out:
            target = Path(out) / f"{stem}.json"
        else:
            target = default_path(stem)
        result = score(subject, condition, self_ensemble=self_ensemble, data_root=data_root,
                       limit=limit, device=device,
                       samples_dir=samples_dir(target) if samples_dir else None)
        write_json(target, result)
        written.append(target)
    return written


def evaluate_run(run_dir: Path, conditions=None, out=None, self_ensemble=False,
                 data_root="data", limit=None) -> list[Path]:
    from .train_cli import split_dataset

    cfg = read_run(run_dir)
    dataset, _ = split_dataset(cfg["dataset"])
    conditions = conditions or default_conditions(cfg["task"], dataset)
    subject = subject_from_run(run_dir, cfg)
    return write_results(subject, conditions, out, lambda stem: run_dir / "results" / f"{stem}.json",
                         self_ensemble=self_ensemble, data_root=data_root, limit=limit)


def evaluate_weights(card: str, weights=None, data: str | None = None, conditions=None, out=None,
                     self_ensemble=False, data_root="data", limit=None, scale: str = "paper",
                     model_scale: str = "paper", resolution: int | None = None,
                     results_root: str | Path = "results") -> list[Path]:
    """``ssmrepro evaluate-weights``: score a card's weights file (by default its released
    checkpoint) without a run. Default result file:
    ``results/<scale>/<dataset>[-<resolution>]/<trained card>/authors/<stem>.json``."""
    from . import authors
    from .cards import load_card

    c = load_card(card)
    rel = authors.released(c)
    if data is None:
        if rel is None or not rel.evaluates:
            raise UserError(f"card {card!r}: give --data DATASET (the test set to score on)")
        data = rel.evaluates[0]
    dataset = f"{data}@{resolution}" if resolution else data
    data_dir = f"{data}-{resolution}" if resolution else data
    conditions = conditions or default_conditions(c.task, data)
    subject = subject_from_weights(card, weights, dataset, scale=scale, model_scale=model_scale)
    for_card = subject.extra["weights"]["for_card"]
    return write_results(
        subject, conditions, out,
        lambda stem: authors.result_path(scale, data_dir, for_card, stem, root=results_root),
        self_ensemble=self_ensemble, data_root=data_root, limit=limit,
        samples_dir=lambda target: target.parent / "samples")
