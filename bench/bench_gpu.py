"""GPU benchmarks: the selective scan, EVSSM inference at 1280x720, the kernel-size and
self-ensemble costs of the EVSSM supplement, training throughput, peak memory.

    python bench/bench_gpu.py [--quick] [--all-cards] [--out BENCHMARKS.md]

Without a CUDA device it prints "no CUDA device: GPU benchmarks not run" and exits with status 3,
touching nothing. With one (the first visible device), it measures, each as the median of
``--repeats`` timed runs after ``--warmup`` runs, timed with CUDA events:

1. selective scan, forward and forward + backward: our ``chunked`` backend against mamba-ssm's
   fused kernel (backend ``cuda``, when mamba-ssm imports), ratio side by side;
2. EVSSM (card ``evssm``, paper scale) inference on one 1280x720 image (the paper: 89 ms), with
   the scan backend ``auto`` resolves to, and with ``chunked`` when that is another one;
3. EVSSM Table 11: cards ``evssm-k3``, ``evssm-k5``, ``evssm`` (k7), ``evssm-k9`` at 1280x720, as
   ratios to k7 beside the paper's 83/85/89/97 ms;
4. EVSSM Table 12: ``ssmrepro.nn.evssm.SelfEnsemble`` (four flips) over the plain model (paper 4x);
5. training throughput (images/s) of one recipe step on synthetic batches: EVSSM 128x128 batch 8
   (``deblur_l1_fft``: L1 + FFT loss, AdamW, gradient clipping) and SEM-Net 256x256 batch 6
   (``semnet_inpainting``: generator, PatchGAN discriminator, VGG-16 perceptual and style losses
   with randomly initialised VGG weights, the same cost as the pretrained ones);
6. peak memory of each (``torch.cuda.max_memory_allocated``).

It writes the section "## GPU" of BENCHMARKS.md (the GPU named) and ``bench/step_times.json``
in the format ``ssmrepro plan --step-seconds`` reads: per card, ``seconds_per_step`` = GPU-seconds
of one step of the recipe's global batch (measured at the per-GPU batch, scaled by
``batch_size / measured batch``), ``device`` and ``command``. ``--all-cards`` measures every card
of the paper-scale matrix (default: ``semnet`` and ``evssm``).

``--cpu-selftest`` runs every code path on the CPU at smoke scale and tiny sizes (it checks the
script, it measures nothing) and writes nothing unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_all import NO_CUDA_EXIT, load_avg, machine, replace_section  # noqa: E402

SECTION = "## GPU"
NO_CUDA = "no CUDA device: GPU benchmarks not run"
PAPER_EVSSM_MS = 89.0
PAPER_T11_MS = {"evssm-k3": 83.0, "evssm-k5": 85.0, "evssm": 89.0, "evssm-k9": 97.0}
PAPER_T12_RATIO = 4.0
PER_GPU_BATCH = {"deblurring": 8, "inpainting": 6}  # EVSSM: 8 GPUs x 8; SEM-Net: batch 6


class Bench:
    def __init__(self, torch, device, warmup: int, repeats: int):
        self.torch, self.device, self.warmup, self.repeats = torch, device, warmup, repeats
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def time_ms(self, fn, warmup: int | None = None, repeats: int | None = None) -> dict:
        """Median milliseconds of fn() (CUDA events on a GPU), and peak memory of one call."""
        torch = self.torch
        for _ in range(self.warmup if warmup is None else warmup):
            fn()
        self.sync()
        ms = []
        for _ in range(self.repeats if repeats is None else repeats):
            if self.cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                ms.append(a.elapsed_time(b))
            else:
                t = time.perf_counter()
                fn()
                ms.append(1e3 * (time.perf_counter() - t))
        peak = None
        if self.cuda:
            self.sync()
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
            fn()
            self.sync()
            peak = torch.cuda.max_memory_allocated(self.device)
            peak = {"peak_mib": round(peak / 2**20, 1), "peak_above_start_mib": round((peak - base) / 2**20, 1)}
        out = {"ms": round(statistics.median(ms), 3), "all_ms": [round(x, 2) for x in ms],
               "repeats": len(ms)}
        if peak:
            out.update(peak)
        return out


# --- 1. the scan -----------------------------------------------------------------------------
def bench_scan(B: Bench, shapes) -> dict:
    torch = B.torch
    from ssmrepro.ssm.scan import available_backends, selective_scan

    ok, why = available_backends()["cuda"]
    backends = ["chunked"] + (["cuda"] if ok and B.cuda else [])
    res = {"cuda_backend": why, "cases": []}
    for (b, d, n, L) in shapes:
        g = torch.Generator().manual_seed(0)
        def r(*s, g=g):
            return torch.randn(*s, generator=g).to(B.device)

        inp = {"u": r(b, d, L), "delta": 0.5 * r(b, d, L), "A": -torch.exp(0.5 * r(d, n)),
               "B": r(b, n, L), "C": r(b, n, L), "D": r(d), "z": r(b, d, L), "delta_bias": 0.5 * r(d)}
        case = {"shape": {"b": b, "d": d, "n": n, "L": L}, "backends": {}}
        outs = {}
        for name in backends:
            def fwd(inp=inp, name=name):
                with torch.no_grad():
                    return selective_scan(**inp, delta_softplus=True, backend=name)

            leaves = {k: v.clone().requires_grad_() for k, v in inp.items()}

            def fwd_bwd(leaves=leaves, name=name):
                for v in leaves.values():
                    v.grad = None
                selective_scan(**leaves, delta_softplus=True, backend=name).sum().backward()

            outs[name] = fwd()
            case["backends"][name] = {"forward": B.time_ms(fwd), "forward_backward": B.time_ms(fwd_bwd)}
        if "cuda" in outs:
            ref = outs["chunked"].float()
            case["max_rel_diff_cuda_vs_chunked"] = float((outs["cuda"].float() - ref).abs().max()
                                                        / ref.abs().max())
            for k in ("forward", "forward_backward"):
                case[f"ratio_{k}_chunked_over_cuda"] = round(
                    case["backends"]["chunked"][k]["ms"] / case["backends"]["cuda"][k]["ms"], 2)
        res["cases"].append(case)
    return res


# --- 2-4. EVSSM inference ----------------------------------------------------------------------
def _model(card_name: str, scale: str, device):
    from ssmrepro.cards import load_card

    card = load_card(card_name)
    return card, card.build(scale).to(device).eval()


def bench_inference(B: Bench, cards, size, scale: str, backends=("auto",)) -> dict:
    torch = B.torch
    from ssmrepro.ssm.scan import resolve_backend, scan_backend

    h, w = size
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)).to(B.device)
    out = {}
    for name in cards:
        _, model = _model(name, scale, B.device)
        out[name] = {}
        for backend in backends:
            resolved = resolve_backend(backend, x)

            def fwd(model=model, backend=backend):
                with torch.no_grad(), scan_backend(backend):
                    return model(x)

            out[name][backend] = {"resolved_backend": resolved, **B.time_ms(fwd)}
        model = None
        if B.cuda:
            torch.cuda.empty_cache()
    return out


def bench_self_ensemble(B: Bench, size, scale: str) -> dict:
    torch = B.torch
    from ssmrepro.nn.evssm import SelfEnsemble

    h, w = size
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)).to(B.device)
    _, model = _model("evssm", scale, B.device)
    ens = SelfEnsemble(model).eval()
    res = {}
    for label, m in (("plain", model), ("self_ensemble_flips4", ens)):
        def fwd(m=m):
            with torch.no_grad():
                return m(x)

        res[label] = B.time_ms(fwd)
    res["ratio"] = round(res["self_ensemble_flips4"]["ms"] / res["plain"]["ms"], 2)
    return res


# --- 5. training ------------------------------------------------------------------------------
def train_step_fn(B: Bench, card_name: str, scale: str, batch: int, patch: int | None = None):
    """(step function, recipe, batch, patch): one step of the card's recipe on a synthetic batch,
    with the training loop's own step functions."""
    import contextlib

    torch = B.torch
    from ssmrepro.train import loop as L
    from ssmrepro.train.losses import PerceptualStyle, VGGFeatures
    from ssmrepro.train.recipes import recipe_for_card

    card, model = _model(card_name, scale, B.device)
    model.train()
    recipe = recipe_for_card({k: v for k, v in card.__dict__.items() if k != "path"}, scale)
    patch = int(patch or recipe["patch"])
    g = torch.Generator().manual_seed(0)
    opt = L._optimizer(recipe["optimizer"], model.parameters(), float(recipe["lr"]), recipe["betas"],
                       float(recipe["weight_decay"]))
    autocast = ((lambda: torch.autocast(B.device.type, dtype=torch.bfloat16)) if recipe["amp"] == "bf16"
                else contextlib.nullcontext)

    def no_check(step, **losses):
        return None

    if recipe["task"] == "deblurring":
        data = {"input": torch.rand(batch, 3, patch, patch, generator=g).to(B.device),
                "target": torch.rand(batch, 3, patch, patch, generator=g).to(B.device)}

        def step():
            return L._deblur_step(model, opt, data, recipe, B.device, autocast, 1, no_check, False)
    else:
        disc = d_opt = percep = None
        if float(recipe["adv_weight"]) > 0:
            disc = L._default_discriminator().to(B.device).train()
            d_opt = L._optimizer(recipe["optimizer"], disc.parameters(), float(recipe["d_lr"]),
                                 recipe["d_betas"], float(recipe["weight_decay"]))
        if L._needs_vgg(recipe):
            arch = L.VGG_LAYERS[recipe["vgg"]][0]
            vgg = VGGFeatures(arch, list(recipe["perceptual_layers"]) + list(recipe["style_layers"]),
                              pretrained=False, seed=0, input_norm=recipe["vgg_input"]).to(B.device)
            percep = PerceptualStyle(vgg, recipe["perceptual_layers"], recipe["style_layers"]).to(B.device)
        mask = (torch.rand(batch, 1, patch, patch, generator=g) > 0.7).float().to(B.device)
        data = {"image": torch.rand(batch, 3, patch, patch, generator=g).to(B.device), "mask": mask}

        def step():
            return L._inpaint_step(model, disc, percep, opt, d_opt, data, recipe, B.device, autocast, 1,
                                   no_check)
    return step, recipe, patch


def bench_training(B: Bench, cards, scale: str, steps: int) -> dict:
    from ssmrepro.cards import load_card

    out = {}
    for name in cards:
        card = load_card(name)
        from ssmrepro.train.recipes import recipe_for_card

        recipe_batch = int(recipe_for_card({k: v for k, v in card.__dict__.items() if k != "path"},
                                           scale)["batch_size"])
        task = card.task
        batch = min(PER_GPU_BATCH[task], recipe_batch)
        try:
            step, _, patch = train_step_fn(B, name, scale, batch)
            t = B.time_ms(step, warmup=2, repeats=steps)
        except RuntimeError as exc:  # out of memory on a small GPU, a missing kernel: say so
            out[name] = {"status": f"failed: {str(exc).splitlines()[0][:200]}"}
            continue
        finally:
            if B.cuda:
                B.torch.cuda.empty_cache()
        out[name] = {"status": "ok", "task": task, "patch": patch, "batch": batch,
                     "recipe_batch": recipe_batch, "step_ms": t["ms"], "all_ms": t["all_ms"],
                     "images_per_s": round(batch / (t["ms"] / 1e3), 2),
                     "gpu_seconds_per_recipe_step": round(t["ms"] / 1e3 * recipe_batch / batch, 4),
                     **{k: t[k] for k in ("peak_mib", "peak_above_start_mib") if k in t}}
    return out


def matrix_cards() -> list[str]:
    from ssmrepro.paths import project_root
    from ssmrepro.workflow import Matrix

    m = Matrix(project_root(), "paper", [0])
    return sorted({Path(r).parts[3] for r in m.runs()})


# --- output -----------------------------------------------------------------------------------
def write_step_times(r: dict, path: Path) -> None:
    out = {}
    for card, t in r["training"].items():
        if t.get("status") != "ok":
            continue
        out[card] = {"seconds_per_step": t["gpu_seconds_per_recipe_step"], "device": r["device"],
                     "command": r["command"], "measured_batch": t["batch"],
                     "recipe_batch": t["recipe_batch"], "patch": t["patch"],
                     "seconds_per_measured_step": round(t["step_ms"] / 1e3, 4), "date": r["date"]}
    path.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")


def write_section(r: dict, path: Path) -> None:
    m = r["machine"]
    L = [SECTION, "",
         f"- GPU: **{r['device']}** ({r['gpu_memory_gib']} GiB), CUDA {r['cuda']}, torch {m['torch']}, "
         f"mamba-ssm {m.get('mamba-ssm') or 'not installed'}; host CPU {m['cpu']}",
         f"- command: `{r['command']}`; every time is the median of the timed runs (CUDA events) "
         f"after warm-up; 1-minute host load average {r['load_before']} before, {r['load_after']} after",
         f"- date: {r['date']}", "",
         "### Selective scan", "",
         f"`cuda` backend: {r['scan']['cuda_backend']}.", "",
         "| b, d, n, L | backend | forward ms | forward + backward ms | peak MiB (fwd+bwd) |",
         "|---|---|---|---|---|"]
    for c in r["scan"]["cases"]:
        s = c["shape"]
        for name, t in c["backends"].items():
            L.append(f"| {s['b']}, {s['d']}, {s['n']}, {s['L']} | `{name}` | {t['forward']['ms']} | "
                     f"{t['forward_backward']['ms']} | {t['forward_backward'].get('peak_mib', 'n/a')} |")
        if "ratio_forward_chunked_over_cuda" in c:
            L.append(f"| | `chunked` / `cuda` | {c['ratio_forward_chunked_over_cuda']}x | "
                     f"{c['ratio_forward_backward_chunked_over_cuda']}x | max rel diff "
                     f"{c['max_rel_diff_cuda_vs_chunked']:.1e} |")
    inf = r["inference"]
    L += ["", "### EVSSM inference, 1280x720, batch 1, float32, paper scale", "",
          "| card | scan backend | ms (median) | paper ms | ratio to `evssm` (k7) | paper ratio | peak MiB |",
          "|---|---|---|---|---|---|---|"]
    base = {bk: v["ms"] for bk, v in inf.get("evssm", {}).items()}
    for card, per in inf.items():
        for bk, t in per.items():
            paper = PAPER_T11_MS.get(card)
            paper_ratio = f"{paper / PAPER_T11_MS['evssm']:.3f}" if paper else ""
            L.append(f"| `{card}` | `{bk}` -> `{t['resolved_backend']}` | {t['ms']} | {paper or ''} | "
                     f"{t['ms'] / base[bk]:.3f} | {paper_ratio} | {t.get('peak_mib', 'n/a')} |")
    se = r.get("self_ensemble")
    if se:
        L += ["", f"Self-ensemble (EVSSM Table 12; `SelfEnsemble`, four flips), 1280x720: "
              f"{se['self_ensemble_flips4']['ms']} ms over {se['plain']['ms']} ms = **{se['ratio']}x** "
              f"(paper: {PAPER_T12_RATIO:g}x)."]
    L += ["", "### Training throughput (one recipe step, synthetic batch)", "",
          "| card | patch | batch | step ms | images/s | GPU-s per recipe step (batch) | peak MiB |",
          "|---|---|---|---|---|---|---|"]
    for card, t in r["training"].items():
        if t.get("status") == "ok":
            L.append(f"| `{card}` | {t['patch']} | {t['batch']} | {t['step_ms']} | {t['images_per_s']} | "
                     f"{t['gpu_seconds_per_recipe_step']} ({t['recipe_batch']}) | {t.get('peak_mib', 'n/a')} |")
        else:
            L.append(f"| `{card}` | | | {t['status']} | | | |")
    L += ["", f"Step times for `ssmrepro plan --step-seconds bench/step_times.json`: "
          f"`bench/step_times.json` ({len([t for t in r['training'].values() if t.get('status') == 'ok'])} cards)."]
    replace_section(path, SECTION, "\n".join(L) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats; Table 11 and training at "
                                                         "fewer steps")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--all-cards", action="store_true", help="step times of every paper-scale card")
    ap.add_argument("--out", default=None, help="default: BENCHMARKS.md at the repository root")
    ap.add_argument("--step-times", default=str(REPO / "bench" / "step_times.json"))
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--cpu-selftest", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    import torch

    selftest = args.cpu_selftest
    if not selftest and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return NO_CUDA_EXIT
    device = torch.device("cpu") if selftest else torch.device("cuda", torch.cuda.current_device())
    if selftest:
        torch.set_num_threads(1)
    warmup = args.warmup if args.warmup is not None else (0 if selftest else (2 if args.quick else 5))
    repeats = args.repeats if args.repeats is not None else (1 if selftest else (5 if args.quick else 20))
    B = Bench(torch, device, warmup, repeats)
    scale = "smoke" if selftest else "paper"
    size = (24, 32) if selftest else (720, 1280)
    cmd = "python bench/bench_gpu.py" + (" " + " ".join(sys.argv[1:]) if argv is None and sys.argv[1:] else "")
    r = {"bench": "gpu", "command": cmd, "machine": machine(), "load_before": load_avg(),
         "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
         "device": "CPU self-test (not a measurement)" if selftest else torch.cuda.get_device_name(device),
         "gpu_memory_gib": None if selftest else round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1),
         "cuda": torch.version.cuda}
    scan_shapes = [(1, 8, 4, 64)] if selftest else [(1, 192, 16, 4096), (8, 384, 16, 16384)]
    r["scan"] = bench_scan(B, scan_shapes)
    backends = ("auto", "chunked") if (not selftest and r["scan"]["cuda_backend"].startswith("mamba-ssm")
                                       and "selective_scan_fn" in r["scan"]["cuda_backend"]) else ("auto",)
    t11 = list(PAPER_T11_MS)
    r["inference"] = bench_inference(B, t11, size, scale, backends=backends)
    r["self_ensemble"] = bench_self_ensemble(B, size, scale)
    train_cards = matrix_cards() if args.all_cards else ["evssm", "semnet"]
    r["training"] = bench_training(B, train_cards, scale, steps=2 if selftest else (5 if args.quick else 20))
    r["load_after"] = load_avg()
    print(json.dumps(r))
    out = args.out or (None if selftest else str(REPO / "BENCHMARKS.md"))
    if not args.no_write and out:
        write_section(r, Path(out))
        write_step_times(r, Path(args.step_times) if not selftest else Path(out).with_suffix(".step_times.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
