"""``ssmrepro erf``: effective receptive fields (EVSSM supplement Figs. 4-5) and activation maps
(Fig. 6).

ERF protocol (RepLKNet / MambaIR ``analysis/erf.py``): for each image, the gradient of the centre
output pixel (summed over output channels) with respect to the input, ReLU, summed over input
channels; averaged over the images. Saved raw as ``.npy``; the PNG shows ``(x / max) ** 0.25``.

Activation maps (Fig. 6): for the first blocks of the first encoder level, the same gradient taken
from the block's output at the query pixel (the centre: flips and transposes of a square map keep
it in place, up to one pixel for even sizes), so each map shows which input pixels the query can
use after that block.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

from .atomic import atomic_path

ERF_PROTOCOL = "erf[centre-pixel,grad-relu,sum-channels,mean-images]"


def _forward(model, x: torch.Tensor, task: str) -> torch.Tensor:
    if task == "inpainting":
        mask = torch.zeros_like(x[:, :1])
        return model(x, mask)
    return model(x)


def erf_map(model, images: list[torch.Tensor], task: str) -> np.ndarray:
    """Mean over images of ReLU(d out[centre] / d input), summed over channels. (H, W) float64."""
    model.eval()
    total = None
    for img in images:
        x = img[None].clone().requires_grad_(True)
        out = _forward(model, x, task)
        h, w = out.shape[-2:]
        (grad,) = torch.autograd.grad(out[0, :, h // 2, w // 2].sum(), x)
        g = grad[0].relu().sum(0).double()
        total = g if total is None else total + g
    return (total / len(images)).numpy()


def activation_maps(model, image: torch.Tensor, task: str, blocks: list[str]) -> dict[str, np.ndarray]:
    """Per named block: ReLU(d block_out[query] / d input) summed over channels."""
    modules = dict(model.named_modules())
    maps = {}
    for name in blocks:
        if name not in modules:
            raise ValueError(f"no module {name!r} in the model; e.g. {', '.join(list(modules)[1:6])}")
        captured = {}
        handle = modules[name].register_forward_hook(lambda m, i, o: captured.__setitem__("y", o))
        x = image[None].clone().requires_grad_(True)
        try:
            _forward(model, x, task)
        finally:
            handle.remove()
        y = captured["y"]
        h, w = y.shape[-2:]
        (grad,) = torch.autograd.grad(y[0, :, h // 2, w // 2].sum(), x)
        maps[name] = grad[0].relu().sum(0).double().numpy()
    return maps


def save_png(array: np.ndarray, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = (array / array.max()) ** 0.25 if array.max() > 0 else array
    fig, ax = plt.subplots(figsize=(3, 3), dpi=100)
    ax.imshow(shown, cmap="RdYlGn", vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)


def save_npy(array: np.ndarray, path: Path) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def _images(run_cfg: dict, data_root: str, n: int, size: int) -> list[torch.Tensor]:
    from .data.loaders import test_dataset
    from .evaluate import default_conditions
    from .train_cli import split_dataset

    dataset, res = split_dataset(run_cfg["dataset"])
    cond = default_conditions(run_cfg["task"], dataset)[0]
    items = test_dataset(dataset, cond, root=data_root, resolution=res)
    key = "image" if run_cfg["task"] == "inpainting" else "input"
    out = []
    for i in range(min(n, len(items))):
        img = items[i][key]
        h, w = img.shape[-2:]
        top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
        out.append(img[:, top:top + size, left:left + size])
    if not out:
        raise ValueError(f"no test images in {dataset} for the receptive field")
    return out


def erf_cli(args) -> int:
    from .evaluate import load_model, read_run

    if args.checkpoint and len(args.checkpoint) != len(args.cards):
        raise ValueError(f"give one --checkpoint per card ({len(args.cards)} cards, "
                         f"{len(args.checkpoint)} checkpoints)")
    single = len(args.cards) == 1 and str(args.out).endswith(".npy")
    for i, card_name in enumerate(args.cards):
        ckpt = Path(args.checkpoint[i]) if args.checkpoint else None
        run_dir = ckpt.parent if ckpt else Path("runs") / args.scale / (args.data or "") / card_name / "seed0"
        cfg = read_run(run_dir)
        card, model = load_model(run_dir, cfg)
        images = _images(cfg, args.data_root, args.images, args.size)
        erf = erf_map(model, images, cfg["task"])
        target = Path(args.out) if single else Path(args.out) / args.scale / "erf" / f"{card_name}.npy"
        save_npy(erf, target)
        save_png(erf, target.with_suffix(".png"), title=card_name)
        names = dict(model.named_modules())
        blocks = [n for k in range(4) for n in (f"encoder_level1.block{k}", f"encoder_level1.{k}")
                  if n in names]
        if blocks:
            maps = activation_maps(model, images[0], cfg["task"], blocks)
            for name, arr in maps.items():
                save_npy(arr, target.with_name(f"{target.stem}.act.{name}.npy"))
                save_png(arr, target.with_name(f"{target.stem}.act.{name}.png"), title=name)
        meta = {"card": card_name, "protocol": ERF_PROTOCOL, "images": len(images),
                "size": args.size, "run": str(run_dir), "config_hash": cfg.get("config_hash"),
                "activation_blocks": blocks}
        with atomic_path(target.with_suffix(".json")) as tmp:
            tmp.write_text(yaml.safe_dump(meta))
        print(target)
    return 0
