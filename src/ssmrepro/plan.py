"""``ssmrepro plan --scale paper``: the jobs of the reproduction and the GPU-hours they need,
per table and in total, from each recipe's iterations, batch and patch size and a time per step.

The time per step comes from a measurement file (``--step-seconds FILE``: JSON
``{"<card>": {"seconds_per_step": s, "device": "...", "command": "..."}}``, as written by
``bench/bench_train_step.py`` on a GPU node). A card with no measurement is estimated from its
MACs: ``3 x 2 x MACs(patch) x batch / sustained FLOP/s`` (forward + backward = 3 forwards,
2 FLOPs per MAC) at ``ASSUMED_TFLOPS`` sustained, scan excluded, MACs counted at 64x64 and scaled
by area; every such figure is marked
``estimated`` so it is never mistaken for a measurement. A shared run is counted once.
"""

from __future__ import annotations

import json
from pathlib import Path

ASSUMED_TFLOPS = 60.0  # sustained bf16/fp32-TF32 throughput assumed for an A100/H100-class GPU
EVAL_HOURS_PER_JOB = 0.05
COUNT_SIZE = 64  # MACs are counted at 64x64 and scaled by area (exact for conv/linear/scan-free
                 # layers; spatial self-attention grows faster, so SSA rows are underestimated)


def plan(scale: str = "paper", seeds: int = 1, step_seconds: str | None = None) -> dict:
    from .cards import load_card
    from .paths import project_root
    from .train.recipes import recipe_for_card
    from .workflow import Matrix, parse_data_dir

    root = project_root()
    measured = json.loads(Path(step_seconds).read_text()) if step_seconds else {}
    matrix = Matrix(root, scale, list(range(seeds)))
    runs: dict[str, dict] = {}
    for run_path in matrix.runs():
        parts = Path(run_path).parts  # runs/<scale>/<data_dir>/<card>/seed<S>/final.pt
        data_dir, card_name = parts[2], parts[3]
        card = load_card(card_name, root)
        card_map = {k: v for k, v in card.__dict__.items() if k != "path"}
        _, res = parse_data_dir(data_dir)
        recipe = recipe_for_card(card_map, scale, {"patch": res} if res else None, None)
        patch, batch, iters = int(recipe["patch"]), int(recipe["batch_size"]), int(recipe["iterations"])
        if card_name in measured:
            sps, how = float(measured[card_name]["seconds_per_step"]), "measured: " + measured[card_name].get("device", "?")
        else:
            macs = macs_at_count_size(card, scale) * (patch / COUNT_SIZE) ** 2
            sps = 6 * macs * batch / (ASSUMED_TFLOPS * 1e12)
            how = (f"estimated: MACs counted at {COUNT_SIZE}px scaled by area, "
                   f"{ASSUMED_TFLOPS:g} TFLOP/s, scan excluded")
        runs[run_path] = {"card": card_name, "data": data_dir, "iterations": iters, "batch": batch,
                          "patch": patch, "seconds_per_step": sps, "gpu_hours": iters * sps / 3600,
                          "basis": how}
    tables = {}
    for t in matrix.tables:
        t_runs = sorted({str(j.run_dir(scale, s) / "final.pt") for j in t.jobs(scale, matrix.scales)
                         for s in matrix.seeds})
        evals = len(matrix.table_results(t.id))
        tables[t.id] = {"runs": len(t_runs), "evaluations": evals,
                        "gpu_hours_if_alone": round(sum(runs[r]["gpu_hours"] for r in t_runs)
                                                    + evals * EVAL_HOURS_PER_JOB, 1)}
    total_train = sum(r["gpu_hours"] for r in runs.values())
    n_eval = len(matrix.all_results())
    out = {"scale": scale, "seeds": seeds, "runs": runs, "tables": tables,
           "total": {"training_runs": len(runs), "evaluations": n_eval,
                     "gpu_hours": round(total_train + n_eval * EVAL_HOURS_PER_JOB, 1)},
           "assumptions": {"assumed_tflops": ASSUMED_TFLOPS,
                           "eval_gpu_hours_per_job": EVAL_HOURS_PER_JOB}}
    out["text"] = _format(out)
    return out


MACS_CACHE = Path(__file__).resolve().parents[2] / "bench" / "results" / "macs_at_64.json"


def macs_at_count_size(card, scale: str) -> int:
    """MACs (incl. the delta/B/C projections, scan excluded) at 64x64, cached in
    bench/results/macs_at_64.json under a hash of the card's family and switches: tracing a
    paper-size model takes seconds to a minute on a CPU."""
    import torch

    from .atomic import write_json
    from .complexity import count_macs, example_inputs
    from .provenance import config_hash

    key = f"{card.name}:{config_hash({'family': card.family, 'switches': card.switches_at(scale)})}"
    cache = json.loads(MACS_CACHE.read_text()) if MACS_CACHE.exists() else {}
    if key not in cache:
        model = card.build(scale)
        with torch.no_grad():
            cache[key] = count_macs(model, *example_inputs(card.task, (COUNT_SIZE, COUNT_SIZE)),
                                    ssm_projections=True)
        write_json(MACS_CACHE, cache)
    return int(cache[key])


def _format(p: dict) -> str:
    lines = [f"scale {p['scale']}, {p['seeds']} seed(s): {p['total']['training_runs']} training runs, "
             f"{p['total']['evaluations']} evaluations, {p['total']['gpu_hours']} GPU-hours in total",
             "", f"{'table':<12} {'runs':>5} {'evals':>6} {'GPU-h (alone)':>14}"]
    for tid, t in p["tables"].items():
        lines.append(f"{tid:<12} {t['runs']:>5} {t['evaluations']:>6} {t['gpu_hours_if_alone']:>14}")
    lines += ["", f"{'run':<60} {'iters':>7} {'batch':>5} {'s/step':>7} {'GPU-h':>7}  basis"]
    for path, r in p["runs"].items():
        lines.append(f"{r['data'] + '/' + r['card']:<60} {r['iterations']:>7} {r['batch']:>5} "
                     f"{r['seconds_per_step']:>7.3f} {r['gpu_hours']:>7.1f}  {r['basis']}")
    return "\n".join(lines)
