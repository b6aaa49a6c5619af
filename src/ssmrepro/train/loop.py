"""The training loop: one function, :func:`train`, for every card, scale and launcher.

Run folder (contract 3)::

    run_dir/config.yaml          resolved config (card, switches at scale, recipe, dataset, seed)
    run_dir/config_hash          sha256 of the config's canonical JSON, first 16 hex digits
    run_dir/log.jsonl            one JSON line per logged step (losses, lr, epoch, seconds)
    run_dir/dvclive/             the same curves through dvclive (plots/metrics/*.tsv, metrics.json)
    run_dir/checkpoints/last.pt  atomic, every ``checkpoint_every`` steps, on SIGTERM/SIGUSR1, at the end
    run_dir/final.pt             model weights when all iterations are done

Resuming is running the same command on the same folder: a ``last.pt`` is loaded (model,
optimizers, schedulers, step, RNG states of every rank, data position) and training continues;
on CPU the continuation is bit-exact (same losses, same final weights as an uninterrupted run).
A folder whose config hash differs from the command's is refused; a finished run returns at once.

Signals and exit codes (:func:`main`, and :func:`exit_code` for the ``ssmrepro train`` command):

- SIGTERM or SIGUSR1 sets a flag; at the next step boundary the loop writes ``last.pt`` and
  exits with **75** (``EXIT_PREEMPTED``, sysexits ``EX_TEMPFAIL``: "temporary failure, run me
  again"). SLURM sends SIGTERM to every process of a job at its time limit (then SIGKILL after
  ``KillWait``, 30 s by default); ``sbatch --signal=USR1@300`` sends SIGUSR1 to the job-step
  processes 300 s earlier (``B:USR1@300`` signals only the batch shell: use it only when the
  batch script ``exec``s the training or forwards the signal). 75 and not 0, so that neither
  SLURM, Snakemake nor a person takes an unfinished run for a finished one (Snakemake
  ``--retries``, a requeue or a person reruns the same command, which resumes); not 143
  (128 + SIGTERM), which is what a run killed by the signal *without* saving reports. With
  ``requeue=True`` and ``SLURM_JOB_ID`` set, rank 0 also runs ``scontrol requeue $SLURM_JOB_ID``
  after saving (the job must be requeueable, ``sbatch --requeue``); the requeued job resumes.
- 0: finished (or already finished). 2: an error the user can fix, one line on stderr, as for
  every ``ssmrepro`` command (``UserError``/``ValueError``: a bad recipe option, missing
  pretrained weights or data, a config mismatch, a corrupted or unsafe checkpoint, a failed
  checkpoint write). 1: any other failure, notably a non-finite loss (:class:`NonFiniteLoss`,
  whose message names the step and the last good checkpoint). Don't resubmit on 1 or 2.
- A run killed outright (SIGKILL, node failure) loses only the steps since the last checkpoint.

Multi-GPU: launched under torchrun (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``) or srun
(``SLURM_PROCID``/``SLURM_NTASKS``), the loop initialises the process group (NCCL, gloo on CPU),
wraps the model(s) in DDP, shards data with a DistributedSampler and splits the recipe's global
``batch_size`` over the ranks; only rank 0 writes files. The preemption flag and the loss check
are agreed between ranks every step so that all ranks stop at the same step.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn

from . import distributed as D
from .checkpoint import (
    CheckpointError,
    CheckpointWriteError,
    atomic_write_bytes,
    capture_rng_state,
    derive_seed,
    load_checkpoint,
    remove_stale_temporaries,
    restore_rng_state,
    save_checkpoint,
    seed_everything,
)
from .data import make_feed
from .losses import PerceptualStyle, VGGFeatures, adversarial_loss, d_output, fft_l1_loss, l1_loss
from .recipes import RANDOM_INIT_BACKBONE, VGG_LAYERS, build_run_config, config_hash, recipe_for_card

try:
    from ssmrepro.errors import UserError
except ImportError:  # pragma: no cover
    UserError = RuntimeError  # type: ignore[misc,assignment]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USER_ERROR = 2  # as ``ssmrepro``: bad option, missing weights/data, config mismatch, bad checkpoint
EXIT_PREEMPTED = 75

PREEMPT_SIGNALS = ("SIGTERM", "SIGUSR1")

CHECKPOINT_EVERY = {"smoke": 10, "mini": 250, "paper": 1000}


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN/inf; the message names the step and the last good checkpoint."""


class RunConfigMismatch(UserError):
    """The run folder was created by a different configuration."""


@dataclass
class TrainResult:
    status: str  # "complete", "already complete" or "preempted"
    step: int
    iterations: int
    run_dir: Path
    config_hash: str
    checkpoint: Path | None = None
    final: Path | None = None
    signal: str | None = None
    resumed_from: int | None = None
    last_values: dict = field(default_factory=dict)  # losses of the last step run by this call

    @property
    def exit_code(self) -> int:
        return EXIT_PREEMPTED if self.status == "preempted" else EXIT_OK


# ----------------------------------------------------------------------------------------------
# signals


class PreemptionFlag:
    """Handlers for SIGTERM/SIGUSR1 that only record the signal; restored by :meth:`restore`."""

    def __init__(self, names: Sequence[str] = PREEMPT_SIGNALS):
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread
        for name in names:
            sig = getattr(signal, name, None)
            if sig is not None:
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):  # noqa: ARG002
        if self.requested is None:
            self.requested = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


# ----------------------------------------------------------------------------------------------
# helpers


def _unwrap(m: nn.Module | None) -> nn.Module | None:
    return getattr(m, "module", m) if isinstance(m, nn.parallel.DistributedDataParallel) else m


def _scalar(x) -> float:
    return float(x.detach().float().item()) if isinstance(x, torch.Tensor) else float(x)


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))


def _dump_yaml(config: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=None, width=100)


def _config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += _config_diff(old.get(k, "<absent>"), new.get(k, "<absent>"), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def _truncate_jsonl(path: Path, last_step: int) -> None:
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line)["step"]) <= last_step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
    _write_text(path, "".join(k + "\n" for k in keep))


def _truncate_dvclive(folder: Path, last_step: int) -> None:
    """Drop dvclive rows logged after the checkpoint a run resumes from (tsv: timestamp, step, value)."""
    for tsv in (folder / "plots" / "metrics").rglob("*.tsv") if folder.exists() else []:
        lines = tsv.read_text(encoding="utf-8").splitlines()
        if not lines:
            continue
        header, rows = lines[0], lines[1:]
        cols = header.split("\t")
        si = cols.index("step") if "step" in cols else 1
        keep = []
        for r in rows:
            parts = r.split("\t")
            try:
                if int(parts[si]) <= last_step:
                    keep.append(r)
            except (ValueError, IndexError):
                continue
        _write_text(tsv, "\n".join([header] + keep) + "\n")


def _curves(folder: Path, resume: bool):
    """A dvclive logger that only writes curves under ``folder``.

    Plain ``dvclive.Live()`` looks for a DVC repository and, finding none, runs ``dvc init`` in the
    git repository of the current directory (and stages the files); it may also post to DVC
    Studio. Neither belongs in a training job, so both are switched off here.
    """
    from dvclive import Live

    class LocalLive(Live):
        def _init_dvc(self):
            self._save_dvc_exp = False

        def _init_studio(self):
            self._dvc_studio_config = {}
            self._studio_events_to_skip.update({"start", "data", "done"})

    return LocalLive(dir=str(folder), resume=resume, report=None, save_dvc_exp=False, dvcyaml=None)


class _Logger:
    """log.jsonl + dvclive + tqdm on rank 0; nothing elsewhere."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int | None, iterations: int,
                 progress: bool, desc: str):
        self.enabled = enabled
        self.live = None
        self.bar = None
        self.file = None
        if not enabled:
            return
        log = run_dir / "log.jsonl"
        live_dir = run_dir / "dvclive"
        if resume_step is None:
            if log.exists():
                log.unlink()
        else:
            _truncate_jsonl(log, resume_step)
            _truncate_dvclive(live_dir, resume_step)
        self.file = open(log, "a", encoding="utf-8")
        try:
            self.live = _curves(live_dir, resume_step is not None)
        except Exception as e:  # noqa: BLE001 - curves are a convenience; log.jsonl is the record
            print(f"warning: dvclive disabled ({type(e).__name__}: {e})", file=sys.stderr)
            self.live = None
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=iterations, initial=resume_step or 0, desc=desc,
                            disable=not progress, dynamic_ncols=True, file=sys.stderr)
        except ImportError:  # pragma: no cover
            self.bar = None

    def log(self, step: int, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": step, **values}) + "\n")
        self.file.flush()
        if self.live is not None:
            self.live.step = step
            for k, v in values.items():
                if k not in ("step", "epoch", "time_s") and math.isfinite(v):
                    self.live.log_metric(k, v, plot=True)
            self.live.next_step()
        if self.bar is not None:
            main = values.get("loss", values.get("loss_g"))
            if main is not None:
                self.bar.set_postfix(loss=f"{main:.4g}", refresh=False)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.live is not None:
            with contextlib.suppress(Exception):
                self.live.end()
        if self.file is not None:
            self.file.close()


def _default_discriminator() -> nn.Module:
    """SEM-Net's spectral-norm PatchGAN (:class:`ssmrepro.nn.discriminator.PatchDiscriminator`),
    returning logits: the sigmoid the reference applies inside D is applied in the loss instead
    (the same function; binary cross-entropy on logits is the numerically stable form)."""
    from ssmrepro.nn.discriminator import PatchDiscriminator

    return PatchDiscriminator(in_channels=3, use_sigmoid=False)


def _optimizer(kind: str, params, lr: float, betas, weight_decay: float):
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind]
    return cls(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


def _scheduler(recipe: Mapping[str, Any], opt):
    if recipe["scheduler"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(recipe["iterations"]),
                                                          eta_min=float(recipe["eta_min"]))
    return None


def _needs_vgg(recipe: Mapping[str, Any]) -> bool:
    return recipe["task"] == "inpainting" and bool(recipe.get("perceptual_weight") or recipe.get("style_weight"))


def _require_backbone(recipe: Mapping[str, Any]) -> None:
    """Raise the one-line MissingPretrainedWeights now if the run will need absent VGG weights."""
    if not _needs_vgg(recipe) or recipe["perceptual_backbone"] == RANDOM_INIT_BACKBONE:
        return
    try:
        from ssmrepro.pretrained import require
    except ImportError:  # pragma: no cover - the loss module reports it when building the VGG
        return
    require(VGG_LAYERS[recipe["vgg"]][0])


def _build_vgg(recipe: Mapping[str, Any], seed: int) -> PerceptualStyle | None:
    if not _needs_vgg(recipe):
        return None
    arch = VGG_LAYERS[recipe["vgg"]][0]
    layers = list(recipe["perceptual_layers"]) + list(recipe["style_layers"])
    vgg = VGGFeatures(arch, layers, pretrained=recipe["perceptual_backbone"] != RANDOM_INIT_BACKBONE,
                      seed=derive_seed(seed, "vgg"), input_norm=recipe["vgg_input"])
    return PerceptualStyle(vgg, recipe["perceptual_layers"], recipe["style_layers"])


def _requeue(job_id: str) -> None:
    try:
        done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
        if done.returncode:
            print(f"warning: scontrol requeue {job_id} failed: {done.stderr.strip()}", file=sys.stderr)
    except (OSError, subprocess.SubprocessError) as e:
        print(f"warning: scontrol requeue {job_id} failed: {e}", file=sys.stderr)


def _to(batch, device):
    return batch.to(device, non_blocking=True) if isinstance(batch, torch.Tensor) else batch


# ----------------------------------------------------------------------------------------------
# the loop


def train(
    card_config: Mapping[str, Any],
    model_builder: Callable[[], nn.Module],
    dataset: Any,
    run_dir: str | os.PathLike,
    scale: str,
    seed: int,
    steps: int | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    dataset_name: str | None = None,
    data_version: str | None = None,
    discriminator_builder: Callable[[], nn.Module] | None = None,
    amp: str | None = None,
    deterministic: bool = False,
    checkpoint_every: int | None = None,
    log_every: int = 1,
    num_workers: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    requeue: bool = False,
    callbacks: Sequence[Callable[[int, dict], None]] = (),
) -> TrainResult:
    """Train (or resume training) the model of a card in ``run_dir``.

    Args:
        card_config: the card mapping (contract 1): ``name``, ``family``, ``task``, ``switches``,
            ``scales``, ``train: {recipe: ..., <option>: <value>}``.
        model_builder: ``() -> nn.Module``, the card's model at ``scale`` (called once, after the
            run seed is set, so the initial weights are a function of the seed). A model with a
            ``set_mode`` method (EVSSM) is switched to ``set_mode("train")``, the reference's
            training layout; ``final.pt`` holds the same parameters for either mode.
        dataset: a map-style dataset of dicts (``image``/``mask`` or ``input``/``target``,
            contract 2), an iterable dataset (single process), or a callable
            ``(patch=..., seed=...) -> dataset`` called with the recipe's patch size.
        run_dir: the run folder (created if needed; resumed if it holds a checkpoint).
        scale: ``smoke``, ``mini`` or ``paper`` (recipe sizes; VGG random-init at smoke only).
        seed: the run seed; seeds python, numpy, torch (CPU/CUDA), the sampler, every sample's
            augmentation and mask draw, and the smoke-scale VGG.
        steps: replaces the recipe's ``iterations`` (recorded in the config; the cosine schedule
            follows it).
        overrides: recipe options (``--set key=value``), applied after the card's ``train:``.
        dataset_name, data_version: recorded in the config (default: the dataset's ``name`` /
            ``data_version`` attributes).
        discriminator_builder: ``() -> nn.Module`` for recipes with an adversarial loss; default
            ``ssmrepro.nn.discriminator.PatchDiscriminator(use_sigmoid=False)`` (the recipe's
            ``discriminator: patchgan_sn``). Its output may be a tensor or ``(scores, features)``;
            an attribute ``use_sigmoid = True`` says the scores are probabilities, else logits.
        amp: ``"bf16"`` for bfloat16 autocast (``--amp bf16``), ``"none"``; a recipe option.
        deterministic: ``torch.use_deterministic_algorithms(True, warn_only=True)`` plus cuDNN
            deterministic mode and ``CUBLAS_WORKSPACE_CONFIG`` (recorded in the config; ops without
            a deterministic CUDA kernel, e.g. bilinear-upsampling backward, warn). CPU runs are
            deterministic without it.
        checkpoint_every: steps between checkpoints (default 10 / 250 / 1000 by scale).
        log_every: steps between log lines (log.jsonl, dvclive, progress bar).
        num_workers: data loader workers per rank (default 0 at smoke, else min(8, cpus/ranks)).
        device: default ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``.
        progress: show a tqdm bar on rank 0.
        requeue: after saving on a signal, ``scontrol requeue $SLURM_JOB_ID`` (rank 0).
        callbacks: ``fn(step, values)`` called on every rank after each step.

    Returns a :class:`TrainResult` (``status`` complete / already complete / preempted;
    ``exit_code`` 0 or 75). Raises :class:`NonFiniteLoss`, :class:`RunConfigMismatch`,
    :class:`~ssmrepro.train.checkpoint.CheckpointError`, and the pretrained-weights error.
    """
    run_dir = Path(run_dir)
    env = D.detect()
    dev = torch.device(device) if device is not None else D.device_for(env)
    created_group = D.init(env, dev)
    if env.enabled and dev.type == "cuda":
        torch.cuda.set_device(dev)
    is_main = env.is_main
    prev_det = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    flag = None
    logger = None
    feed = None
    try:
        # ---- configuration ------------------------------------------------------------------
        ov = dict(overrides or {})
        if amp is not None:
            ov["amp"] = amp
        early = recipe_for_card(card_config, scale, ov, steps)
        _require_backbone(early)  # missing pretrained weights: fail before touching data or folder
        if callable(dataset) and not hasattr(dataset, "__getitem__") and not hasattr(dataset, "__iter__"):
            dataset = dataset(patch=int(early["patch"]), seed=int(seed))
        ds_name = dataset_name or (getattr(dataset, "name", None) if isinstance(getattr(dataset, "name", None), str) else None)
        ds_version = data_version or getattr(dataset, "data_version", None) or None
        config = build_run_config(card_config, scale, seed, steps=steps, overrides=ov, dataset=ds_name,
                                  data_version=ds_version, deterministic=deterministic)
        recipe = config["recipe"]
        chash = config_hash(config)
        iterations = int(recipe["iterations"])
        every = int(checkpoint_every or CHECKPOINT_EVERY[scale])
        if recipe["batch_size"] % env.world_size:
            raise ValueError(f"batch_size {recipe['batch_size']} is not divisible by {env.world_size} ranks")
        per_rank_batch = recipe["batch_size"] // env.world_size
        if per_rank_batch % recipe["micro_batches"]:
            raise ValueError(f"per-rank batch {per_rank_batch} is not divisible by micro_batches {recipe['micro_batches']}")

        ckpt_dir = run_dir / "checkpoints"
        last_path, final_path = ckpt_dir / "last.pt", run_dir / "final.pt"
        if is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(ckpt_dir)
            remove_stale_temporaries(run_dir)
        D.barrier()

        hash_file = run_dir / "config_hash"
        if hash_file.exists():
            old = hash_file.read_text().strip()
            if old != chash:
                diff = []
                with contextlib.suppress(Exception):
                    import yaml

                    diff = _config_diff(yaml.safe_load((run_dir / "config.yaml").read_text()), config)
                raise RunConfigMismatch(
                    f"{run_dir} holds a run with config hash {old}, this command resolves to {chash}"
                    + (f" ({'; '.join(diff[:6])})" if diff else "")
                    + "; use another run folder or delete this one"
                )

        # ---- finished already? ----------------------------------------------------------------
        if final_path.exists() and hash_file.exists():
            fin = load_checkpoint(final_path)
            if fin.get("config_hash") == chash and int(fin.get("step", -1)) >= iterations:
                return TrainResult("already complete", int(fin["step"]), iterations, run_dir, chash,
                                   last_path if last_path.exists() else None, final_path)

        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            # warn_only: ops without a deterministic kernel (CUDA bilinear-upsampling backward,
            # which EVSSM uses) warn instead of stopping the run
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True

        # ---- models, losses, optimisers (initial weights are a function of the seed) ----------
        seed_everything(seed)
        model = model_builder().to(dev)
        if callable(getattr(model, "set_mode", None)):
            model.set_mode("train")  # EVSSM: the reference's training layout (no test-time windows)
        task = recipe["task"]
        if getattr(model, "task", task) != task:
            raise ValueError(f"the model is a {model.task} model but the recipe {recipe['recipe']} is for {task}")
        disc = None
        if task == "inpainting" and float(recipe["adv_weight"]) > 0:
            seed_everything(derive_seed(seed, "discriminator"))
            disc = (discriminator_builder or _default_discriminator)().to(dev)
        percep = _build_vgg(recipe, seed) if task == "inpainting" else None
        if percep is not None:
            percep = percep.to(dev)
        opt = _optimizer(recipe["optimizer"], model.parameters(), float(recipe["lr"]), recipe["betas"],
                         float(recipe["weight_decay"]))
        sched = _scheduler(recipe, opt)
        d_opt = d_sched = None
        if disc is not None:
            d_opt = _optimizer(recipe["optimizer"], disc.parameters(), float(recipe["d_lr"]),
                               recipe["d_betas"], float(recipe["weight_decay"]))
            d_sched = _scheduler(recipe, d_opt)

        if num_workers is None:
            num_workers = 0 if scale == "smoke" else min(8, max(1, (os.cpu_count() or 1) // env.world_size))
        feed = make_feed(dataset, seed=seed, rank=env.rank, world_size=env.world_size,
                         batch_size=per_rank_batch, num_workers=num_workers, pin_memory=dev.type == "cuda")

        # ---- resume or start ------------------------------------------------------------------
        start_step, last_good = 0, None
        if last_path.exists():
            state = load_checkpoint(last_path)
            if state.get("config_hash") != chash:
                raise RunConfigMismatch(
                    f"{last_path} was written by config {state.get('config_hash')}, not {chash}; "
                    "use another run folder or delete this one"
                )
            _unwrap(model).load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            if sched is not None:
                sched.load_state_dict(state["scheduler"])
            if disc is not None:
                disc.load_state_dict(state["discriminator"])
                d_opt.load_state_dict(state["d_optimizer"])
                if d_sched is not None:
                    d_sched.load_state_dict(state["d_scheduler"])
            feed.load_state_dict(state["data"])
            rngs = state.get("rng") or []
            if len(rngs) == env.world_size:
                restore_rng_state(rngs[env.rank])
            else:  # a different number of ranks: fresh per-rank streams, data order unchanged
                seed_everything(derive_seed(seed, "resume", state["step"], env.rank))
            start_step = last_good = int(state["step"])
            del state
        else:
            seed_everything(derive_seed(seed, "train", env.rank))
            if is_main:
                _write_text(run_dir / "config.yaml", _dump_yaml(config))
                _write_text(hash_file, chash + "\n")
        D.barrier()

        if env.enabled:
            ddp_kw = {"device_ids": [dev.index]} if dev.type == "cuda" else {}
            model = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True, **ddp_kw)
            if disc is not None:
                disc = nn.parallel.DistributedDataParallel(disc, **ddp_kw)

        logger = _Logger(run_dir, is_main, start_step if last_good is not None else None, iterations,
                         progress, str(card_config.get("name") or "train"))
        flag = PreemptionFlag()
        autocast = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if recipe["amp"] == "bf16" \
            else contextlib.nullcontext
        model.train()
        if disc is not None:
            disc.train()

        def save(step: int) -> Path:
            rngs = D.all_gather_objects(capture_rng_state())
            err = None
            if is_main:
                state = {
                    "format": "ssmrepro.train-state/1", "step": step, "iterations": iterations,
                    "config_hash": chash, "model": _unwrap(model).state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "rng": rngs, "data": feed.state_dict(), "world_size": env.world_size,
                    "torch": torch.__version__,
                }
                if disc is not None:
                    state.update(discriminator=_unwrap(disc).state_dict(), d_optimizer=d_opt.state_dict(),
                                 d_scheduler=d_sched.state_dict() if d_sched is not None else None)
                try:
                    save_checkpoint(last_path, state)
                except CheckpointError as e:
                    err = str(e)
            err = D.broadcast_object(err)
            if err:
                raise CheckpointWriteError(err)
            return last_path

        def check_finite(step: int, **losses) -> None:
            bad = {k: v for k, v in losses.items() if not math.isfinite(_scalar(v))}
            flagged = D.all_reduce_max([1.0 if bad else 0.0], dev)[0]
            if flagged:
                what = ", ".join(f"{k}={_scalar(v)}" for k, v in bad.items()) or "on another rank"
                where = (f"last good checkpoint: {last_path} (step {last_good})" if last_good is not None
                         else "no checkpoint was written yet")
                raise NonFiniteLoss(f"non-finite loss at step {step} ({what}); {where}")

        # ---- steps ----------------------------------------------------------------------------
        step = start_step
        t0 = time.monotonic()
        values: dict[str, float] = {}
        while True:
            if step >= iterations:
                break
            stop = D.all_reduce_max([1.0 if flag.requested else 0.0], dev)[0]
            if stop:
                sig = flag.requested or "signal on another rank"
                if step != last_good:
                    save(step)
                    last_good = step
                if is_main and requeue and os.environ.get("SLURM_JOB_ID"):
                    _requeue(os.environ["SLURM_JOB_ID"])
                return TrainResult("preempted", step, iterations, run_dir, chash, last_path, None, sig,
                                   start_step if start_step else None, values)
            batch = feed.next()
            lr = opt.param_groups[0]["lr"]
            if task == "deblurring":
                values = _deblur_step(model, opt, batch, recipe, dev, autocast, step + 1, check_finite,
                                      env.enabled)
            else:
                values = _inpaint_step(model, disc, percep, opt, d_opt, batch, recipe, dev, autocast,
                                       step + 1, check_finite)
            if sched is not None:
                sched.step()
            if d_sched is not None:
                d_sched.step()
            step += 1
            values = {**values, "lr": lr, "epoch": feed.epoch, "time_s": round(time.monotonic() - t0, 3)}
            if step % max(1, log_every) == 0 or step == iterations:
                logger.log(step, values)
            logger.advance()
            for cb in callbacks:
                cb(step, values)
            if step % every == 0 or step == iterations:
                save(step)
                last_good = step

        err = None
        if is_main:
            try:
                save_checkpoint(final_path, {"format": "ssmrepro.final/1", "step": step, "config_hash": chash,
                                             "card": config["card"], "scale": scale, "seed": int(seed),
                                             "model": _unwrap(model).state_dict()})
            except CheckpointError as e:
                err = str(e)
        err = D.broadcast_object(err)  # every rank raises, none waits for a rank that failed
        if err:
            raise CheckpointWriteError(err)
        return TrainResult("complete", step, iterations, run_dir, chash, last_path, final_path, None,
                           start_step if start_step else None, values)
    finally:
        if flag is not None:
            flag.restore()
        if logger is not None:
            logger.close()
        if feed is not None:
            feed.close()
        if deterministic:
            torch.use_deterministic_algorithms(prev_det[0], warn_only=prev_det[1])
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = prev_det[2:]
        if created_group:
            with contextlib.suppress(Exception):
                torch.distributed.destroy_process_group()


def _split(x, k: int):
    return x.chunk(k) if isinstance(x, torch.Tensor) else [x] * k


def _deblur_step(model, opt, batch, recipe, dev, autocast, step, check_finite, ddp) -> dict:
    k = int(recipe["micro_batches"])
    inputs, targets = _to(batch["input"], dev), _to(batch["target"], dev)
    l1_w, fft_w = float(recipe["l1_weight"]), float(recipe["fft_weight"])
    opt.zero_grad(set_to_none=True)
    totals = {"loss": 0.0, "l1": 0.0, "fft": 0.0}
    for i, (inp, tgt) in enumerate(zip(inputs.chunk(k), targets.chunk(k))):
        sync = contextlib.nullcontext() if (not ddp or i == k - 1) else model.no_sync()
        with sync:
            with autocast():
                out = model(inp)
            out = out.float()
            l1 = l1_loss(out, tgt)
            fft = fft_l1_loss(out, tgt, recipe["fft"]) if fft_w else torch.zeros((), device=dev)
            loss = l1_w * l1 + fft_w * fft
            check_finite(step, loss=loss)
            (loss / k).backward()
        totals["loss"] += _scalar(loss) / k
        totals["l1"] += _scalar(l1) / k
        totals["fft"] += _scalar(fft) / k
    if recipe["grad_clip"]:
        totals["grad_norm"] = _scalar(torch.nn.utils.clip_grad_norm_(model.parameters(), float(recipe["grad_clip"])))
    opt.step()
    return totals


def _inpaint_step(model, disc, percep, opt, d_opt, batch, recipe, dev, autocast, step, check_finite) -> dict:
    """One SEM-Net step. Both losses use the discriminator as it was before this step (as the
    reference); unlike the reference, the generator's adversarial term sends no gradient into
    the discriminator (the reference's ``gen_loss.backward()`` also accumulates into D's grads)."""
    image, mask = _to(batch["image"], dev), _to(batch["mask"], dev)
    masked = image * (1 - mask) + mask
    with autocast():
        out = model(masked, mask)
    outf = out.float()
    values: dict[str, float] = {}
    kind = recipe["adv_loss"]
    d_loss = None
    g_adv = torch.zeros((), device=dev)
    if disc is not None:
        raw_d = _unwrap(disc)
        probs = bool(getattr(raw_d, "use_sigmoid", False))
        with autocast():
            scores = d_output(disc(torch.cat([image, out.detach()], 0)))
        s_real, s_fake = scores.float().chunk(2)
        d_loss = (adversarial_loss(s_real, True, kind, probs) + adversarial_loss(s_fake, False, kind, probs)) / 2
        raw_d.requires_grad_(False)
        try:
            with autocast():
                g_score = d_output(raw_d(out))
        finally:
            raw_d.requires_grad_(True)
        g_adv = adversarial_loss(g_score.float(), True, kind, probs)
    l1 = l1_loss(outf, image, mask, recipe["l1_norm"])
    perc = style = torch.zeros((), device=dev)
    if percep is not None:
        with autocast():
            f_out = percep.vgg(outf)
            with torch.no_grad():
                f_gt = percep.vgg(image)
        f_out = {n: v.float() for n, v in f_out.items()}
        f_gt = {n: v.float() for n, v in f_gt.items()}
        perc = percep.perceptual(f_out, f_gt)
        if recipe["style_region"] == "hole":
            with autocast():
                s_out = percep.vgg(outf * mask)
                with torch.no_grad():
                    s_gt = percep.vgg(image * mask)
            s_out = {n: v.float() for n, v in s_out.items()}
            s_gt = {n: v.float() for n, v in s_gt.items()}
            style = percep.style(s_out, s_gt)
        else:
            style = percep.style(f_out, f_gt)
    g_loss = (float(recipe["l1_weight"]) * l1 + float(recipe["perceptual_weight"]) * perc
              + float(recipe["style_weight"]) * style + float(recipe["adv_weight"]) * g_adv)
    check_finite(step, loss_g=g_loss, **({"loss_d": d_loss} if d_loss is not None else {}))
    if d_loss is not None:
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
    opt.zero_grad(set_to_none=True)
    g_loss.backward()
    if recipe["grad_clip"]:
        values["grad_norm"] = _scalar(torch.nn.utils.clip_grad_norm_(model.parameters(), float(recipe["grad_clip"])))
    if d_loss is not None:
        d_opt.step()
    opt.step()
    values.update(loss_g=_scalar(g_loss), l1=_scalar(l1), perceptual=_scalar(perc), style=_scalar(style),
                  adv_g=_scalar(g_adv))
    if d_loss is not None:
        values["loss_d"] = _scalar(d_loss)
    return values


# ----------------------------------------------------------------------------------------------
# command line (toy runs for tests and smoke checks; ``ssmrepro train`` is wired by the CLI)


def exit_code(fn: Callable[[], TrainResult]) -> int:
    """Run ``fn`` (a call of :func:`train`) and map the outcome to the process exit code:
    0 done, 75 preempted (checkpoint saved: rerun the same command), 2 an error the user can fix
    (as ``ssmrepro``: bad option, missing weights or data, config mismatch, bad checkpoint,
    failed checkpoint write), 1 any other failure (a non-finite loss); one line on stderr."""
    try:
        result = fn()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every failure is one clear line for SLURM logs
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        msg = str(msg).strip().splitlines()[0] if str(msg).strip() else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR if isinstance(e, (UserError, ValueError, KeyError, FileNotFoundError)) \
            else EXIT_FAILED
    if result.status == "preempted":
        print(f"preempted by {result.signal} at step {result.step}; checkpoint {result.checkpoint}; "
              f"rerun the same command to resume (exit {EXIT_PREEMPTED})", file=sys.stderr)
    return result.exit_code


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["lr=2e-4", "vgg=vgg19_relu"]`` -> mapping (values parsed as YAML, strings otherwise)."""
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError:
            out[k.strip()] = v
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from .recipes import describe_recipes

    p = argparse.ArgumentParser(
        prog="python -m ssmrepro.train.loop",
        description="Train a toy model through the real loop (tests, smoke checks). "
        "Exit codes: 0 done, 75 preempted (checkpoint saved; rerun to resume), 1 error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=describe_recipes(),
    )
    p.add_argument("--toy", choices=["deblurring", "inpainting"], required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--scale", default="smoke", choices=["smoke", "mini", "paper"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    p.add_argument("--amp", choices=["none", "bf16"], default=None)
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--step-delay", type=float, default=0.0, help="sleep after each step (tests)")
    p.add_argument("--requeue", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)

    from . import toy

    def run() -> TrainResult:
        callbacks = [lambda s, v: time.sleep(a.step_delay)] if a.step_delay > 0 else []
        return train(toy.TOY_CARDS[a.toy], lambda: toy.build_toy(a.toy), toy.toy_dataset(a.toy),
                     a.run_dir, a.scale, a.seed, a.steps, overrides=parse_overrides(a.set),
                     discriminator_builder=toy.TinyDiscriminator, amp=a.amp,
                     deterministic=a.deterministic, checkpoint_every=a.checkpoint_every,
                     num_workers=a.num_workers, progress=not a.no_progress, requeue=a.requeue,
                     callbacks=callbacks)

    return exit_code(run)


if __name__ == "__main__":
    sys.exit(main())
