"""Named training recipes at three scales (``smoke``, ``mini``, ``paper``).

A recipe is a flat mapping of option -> value (YAML/JSON types only), resolved in this order:

1. the recipe's defaults at the scale (:func:`recipe_defaults`);
2. the ``variant`` preset, if one is named (``semnet_inpainting`` only: ``paper`` or ``code``);
3. the card's ``train:`` mapping (every key but ``recipe`` and ``scales``), then the card's
   ``train: {scales: {<scale>: {...}}}`` for the run's scale;
4. the command-line overrides (``--set key=value``), then ``--steps`` (= ``iterations``);
5. derived fields left unset: ``d_lr`` (= ``lr * d_lr_ratio``), ``perceptual_layers`` and
   ``style_layers`` (from ``vgg``), ``perceptual_backbone`` (from the scale).

An unknown key or an invalid choice is an error that lists what is allowed. The resolved recipe
goes into ``config.yaml`` and therefore into the config hash.

Where the paper and the reference code disagree the paper is the default and the code's value
is a named option (see the table in :data:`RECIPE_NOTES` and ``docs`` of each option below).

``semnet_inpainting`` (SEM-Net supplement section 2; reference ChrisChen1023/SEM-Net)
  Adam(lr 1e-4, betas 0.9/0.999); discriminator Adam(lr 1e-5 = lr * 0.1, ``D2G_LR`` in the code);
  constant learning rate (the code's MultiStepLR has gamma 1). Loss
  ``l1_weight * L1 + style_weight * style + perceptual_weight * perceptual + adv_weight * adv``
  with 1 / 250 / 0.1 / 0.001.

  - ``l1_norm``: ``mean`` (paper Eq. 1, the default) or ``mask_mean`` (the code divides the
    whole-image L1 by ``mean(mask)``).
  - ``vgg``: ``vgg16_pool`` (paper: pooling layers of VGG-16, the default; we take pool1-pool3,
    the convention of Liu et al. (PConv) where this perceptual/style formulation comes from; the
    supplement does not say how many) or ``vgg19_relu`` (code: perceptual relu1_1..relu5_1, style
    relu2_2/relu3_4/relu4_4/relu5_2 of VGG-19). ``perceptual_layers``/``style_layers`` override.
  - ``vgg_input``: ``raw`` (the code feeds [0,1] images without ImageNet normalisation; the paper
    is silent; default) or ``imagenet``.
  - ``style_region``: ``whole`` (paper Eq. 3, default) or ``hole`` (the code computes the Gram
    matrices of ``out * mask`` and ``gt * mask``).
  - ``adv_loss``: ``nsgan`` (the paper's Eq. 4 log-loss, as binary cross-entropy with the usual
    non-saturating generator term; default) or ``lsgan`` (the code: least squares on the sigmoid
    output). ``adv_weight``: 0.001 (paper, default) or 0.01 (code).
  - ``variant: code`` sets all five of the above to the code's values at once.
  - ``iterations`` at paper scale: **30000**. The only count the SEM-Net papers give is the
    supplement's "all models used in these experiments are trained for 30K iterations" (the
    ablation tables this harness reproduces); the full-model schedule is not published and the
    reference config's ``MAX_ITERS`` is 4,000,001 (train until stopped).
  - batch 6, patch 256 (supplement); the reference config ships ``BATCH_SIZE: 4``.

``deblur_l1_fft`` (EVSSM, SEM-Net deblurring, the baselines; reference kkkls/EVSSM GoPro.yml)
  AdamW(lr 1e-3, weight decay 1e-3, betas 0.9/0.9), cosine annealing over ``iterations`` to
  ``eta_min`` 1e-7 (code; the EVSSM supplement says 1e-6: set ``eta_min: 1.0e-6``), 300k
  iterations, global batch 64 (8 GPUs x 8; split over the ranks), patch 128, gradient-norm clip
  0.01. Loss ``l1_weight * L1 + fft_weight * L1(FFT)`` with ``fft_weight`` 0.1 (0 = the L1-only
  ablation of EVSSM Table 10). ``fft``: ``fft2`` (the reference ``FFTLoss``: full ``fft2``, real
  and imaginary parts stacked, L1 mean; default) or ``rfft2`` (the one-sided spectrum).
  ``micro_batches``: gradient accumulation inside one step (the reference splits each GPU's batch
  of 8 into 2 halves of 4, each loss halved: the same gradient up to rounding).

Scales: ``smoke`` runs on a CPU in seconds (batch 2, 32x32 patches, 20 steps; the perceptual and
style losses use VGG with its real architecture and seeded random weights, recorded as
``perceptual_backbone: random-init (smoke)``); ``mini`` is a short run at reduced size with the
real pretrained VGG; ``paper`` is the published recipe. At mini and paper scale missing VGG
weights are the one-line ``MissingPretrainedWeights`` error of :mod:`ssmrepro.pretrained`.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

SCALES = ("smoke", "mini", "paper")

RANDOM_INIT_BACKBONE = "random-init (smoke)"


class RecipeError(ValueError):
    """An unknown recipe, scale, option or option value (one-line message)."""


# ----------------------------------------------------------------------------------------------
# recipe tables

_SEMNET_SCALES = {
    "smoke": {"iterations": 20, "batch_size": 2, "patch": 32},
    "mini": {"iterations": 3000, "batch_size": 4, "patch": 64},
    "paper": {"iterations": 30000, "batch_size": 6, "patch": 256},
}

_DEBLUR_SCALES = {
    "smoke": {"iterations": 20, "batch_size": 2, "patch": 32},
    "mini": {"iterations": 5000, "batch_size": 8, "patch": 64},
    "paper": {"iterations": 300000, "batch_size": 64, "patch": 128},
}

_SEMNET_BASE: dict[str, Any] = {
    "recipe": "semnet_inpainting",
    "task": "inpainting",
    "variant": "paper",
    "optimizer": "adam",
    "lr": 1.0e-4,
    "betas": [0.9, 0.999],
    "weight_decay": 0.0,
    "scheduler": "constant",
    "eta_min": 0.0,
    "d_lr_ratio": 0.1,
    "d_lr": None,  # derived: lr * d_lr_ratio
    "d_betas": [0.9, 0.999],
    "discriminator": "patchgan_sn",  # ssmrepro.nn.discriminator.PatchDiscriminator (logits)
    "grad_clip": None,
    "micro_batches": 1,
    "amp": "none",
    "l1_weight": 1.0,
    "l1_norm": "mean",
    "style_weight": 250.0,
    "style_region": "whole",
    "perceptual_weight": 0.1,
    "adv_weight": 0.001,
    "adv_loss": "nsgan",
    "vgg": "vgg16_pool",
    "vgg_input": "raw",
    "perceptual_layers": None,  # derived from vgg
    "style_layers": None,  # derived from vgg
    "perceptual_backbone": None,  # derived from scale
}

_DEBLUR_BASE: dict[str, Any] = {
    "recipe": "deblur_l1_fft",
    "task": "deblurring",
    "optimizer": "adamw",
    "lr": 1.0e-3,
    "betas": [0.9, 0.9],
    "weight_decay": 1.0e-3,
    "scheduler": "cosine",
    "eta_min": 1.0e-7,
    "grad_clip": 0.01,
    "micro_batches": 1,
    "amp": "none",
    "l1_weight": 1.0,
    "fft_weight": 0.1,
    "fft": "fft2",
}

_RECIPES = {
    "semnet_inpainting": (_SEMNET_BASE, _SEMNET_SCALES),
    "deblur_l1_fft": (_DEBLUR_BASE, _DEBLUR_SCALES),
}

DEFAULT_RECIPE_FOR_TASK = {"inpainting": "semnet_inpainting", "deblurring": "deblur_l1_fft"}

VARIANTS = {
    "semnet_inpainting": {
        "paper": {
            "l1_norm": "mean",
            "style_region": "whole",
            "adv_loss": "nsgan",
            "adv_weight": 0.001,
            "vgg": "vgg16_pool",
        },
        "code": {
            "l1_norm": "mask_mean",
            "style_region": "hole",
            "adv_loss": "lsgan",
            "adv_weight": 0.01,
            "vgg": "vgg19_relu",
        },
    }
}

CHOICES: dict[str, tuple] = {
    "optimizer": ("adam", "adamw"),
    "scheduler": ("constant", "cosine"),
    "amp": ("none", "bf16"),
    "l1_norm": ("mean", "mask_mean"),
    "style_region": ("whole", "hole"),
    "adv_loss": ("nsgan", "lsgan"),
    "vgg": ("vgg16_pool", "vgg19_relu"),
    "vgg_input": ("raw", "imagenet"),
    "fft": ("fft2", "rfft2"),
    "variant": ("paper", "code"),
    "discriminator": ("patchgan_sn",),
}

VGG_LAYERS = {
    # (architecture, perceptual layers, style layers)
    "vgg16_pool": ("vgg16", ["pool1", "pool2", "pool3"], ["pool1", "pool2", "pool3"]),
    "vgg19_relu": (
        "vgg19",
        ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"],
        ["relu2_2", "relu3_4", "relu4_4", "relu5_2"],
    ),
}

PRETRAINED_BACKBONE = "pretrained {arch} (ssmrepro.pretrained.torchvision_backbone)"

RECIPE_NOTES = """\
| recipe | option | default (source) | alternative (source) |
|---|---|---|---|
| semnet_inpainting | optimizer | Adam lr 1e-4, betas (0.9, 0.999) (paper = code) | |
| semnet_inpainting | d_lr | 1e-5 = lr * d_lr_ratio 0.1 (code D2G_LR) | |
| semnet_inpainting | l1_norm | mean (paper Eq. 1) | mask_mean (code: L1 / mean(mask)) |
| semnet_inpainting | vgg | vgg16_pool: pool1-3 of VGG-16 (paper) | vgg19_relu (code) |
| semnet_inpainting | style_region | whole (paper Eq. 3) | hole (code: Gram of out*mask, gt*mask) |
| semnet_inpainting | adv_loss | nsgan: log-loss (paper Eq. 4) | lsgan (code) |
| semnet_inpainting | adv_weight | 0.001 (paper) | 0.01 (code) |
| semnet_inpainting | vgg_input | raw [0,1] (code; paper silent) | imagenet (mean/std) |
| semnet_inpainting | iterations (paper) | 30000 (supplement: ablations trained 30K) | code MAX_ITERS 4000001 |
| semnet_inpainting | batch / patch (paper) | 6 / 256 (supplement) | code BATCH_SIZE 4 |
| deblur_l1_fft | optimizer | AdamW lr 1e-3 wd 1e-3 betas (0.9, 0.9) (code) | |
| deblur_l1_fft | eta_min | 1e-7 (code) | 1e-6 (EVSSM supplement) |
| deblur_l1_fft | fft_weight | 0.1 (paper = code) | 0 (L1-only ablation) |
| deblur_l1_fft | fft | fft2 (code FFTLoss) | rfft2 |
| deblur_l1_fft | iterations / batch / patch (paper) | 300000 / 64 / 128 | |
| deblur_l1_fft | grad_clip | 0.01 (code) | |
"""


# ----------------------------------------------------------------------------------------------
# resolution


def recipe_names() -> list[str]:
    return sorted(_RECIPES)


def recipe_defaults(name: str, scale: str) -> dict[str, Any]:
    """The recipe's own values at ``scale`` (before variant, overrides and derived fields)."""
    if name not in _RECIPES:
        raise RecipeError(f"unknown recipe {name!r}; known: {', '.join(recipe_names())}")
    if scale not in SCALES:
        raise RecipeError(f"unknown scale {scale!r}; known: {', '.join(SCALES)}")
    base, scales = _RECIPES[name]
    out = copy.deepcopy(base)
    out["scale"] = scale
    out.update(copy.deepcopy(scales[scale]))
    return out


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Bring an override to the type of the default (CLI values arrive as strings)."""
    if value is None:
        return None
    if isinstance(default, bool):
        if isinstance(value, str):
            low = value.strip().lower()
            if low in ("true", "yes", "1", "on"):
                return True
            if low in ("false", "no", "0", "off"):
                return False
            raise RecipeError(f"recipe option {key!r}: expected true/false, got {value!r}")
        return bool(value)
    if isinstance(default, int) and not isinstance(default, bool):
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise RecipeError(f"recipe option {key!r}: expected an integer, got {value!r}") from None
        if f != int(f):
            raise RecipeError(f"recipe option {key!r}: expected an integer, got {value!r}")
        return int(f)
    if isinstance(default, float) or key in _FLOAT_KEYS:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise RecipeError(f"recipe option {key!r}: expected a number, got {value!r}") from None
    if isinstance(default, list) or key in _LIST_KEYS:
        if isinstance(value, str):
            import yaml

            value = yaml.safe_load(value)
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"recipe option {key!r}: expected a list, got {value!r}")
        return [float(v) if key in ("betas", "d_betas") else v for v in value]
    return value


_FLOAT_KEYS = {"grad_clip", "d_lr"}
_LIST_KEYS = {"perceptual_layers", "style_layers"}


def resolve_recipe(
    name: str,
    scale: str,
    *overrides: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Resolve ``name`` at ``scale`` with override mappings applied left to right.

    Typical call: ``resolve_recipe(card["train"]["recipe"], scale, card_train, cli_overrides)``;
    the key ``recipe`` inside an override mapping is ignored (it names the recipe).
    """
    recipe = recipe_defaults(name, scale)
    merged: dict[str, Any] = {}
    for ov in overrides:
        for k, v in (ov or {}).items():
            if k == "recipe":
                continue
            merged[k] = v
    unknown = sorted(k for k in merged if k not in recipe)
    if unknown:
        raise RecipeError(
            f"recipe {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(k for k in recipe if k not in ('recipe', 'task')))}"
        )
    for fixed in ("task", "scale"):
        if fixed in merged and merged[fixed] != recipe[fixed]:
            raise RecipeError(f"recipe option {fixed!r} cannot be overridden ({merged[fixed]!r})")
    variant = merged.pop("variant", recipe.get("variant"))
    if variant is not None:
        presets = VARIANTS.get(name, {})
        if variant not in presets:
            raise RecipeError(
                f"recipe {name!r} has no variant {variant!r}; known: {', '.join(presets) or '(none)'}"
            )
        recipe.update(copy.deepcopy(presets[variant]))
        recipe["variant"] = variant
    for k, v in merged.items():
        recipe[k] = _coerce(k, v, recipe[k])
    _derive(recipe)
    _validate(recipe)
    return recipe


def _derive(r: dict[str, Any]) -> None:
    if "d_lr" in r and r["d_lr"] is None:
        r["d_lr"] = float(r["lr"]) * float(r["d_lr_ratio"])
    if "vgg" in r:
        arch, perc, style = VGG_LAYERS[r["vgg"]] if r["vgg"] in VGG_LAYERS else (None, None, None)
        if r.get("perceptual_layers") is None:
            r["perceptual_layers"] = perc
        if r.get("style_layers") is None:
            r["style_layers"] = style
        if r.get("perceptual_backbone") is None and arch is not None:
            r["perceptual_backbone"] = (
                RANDOM_INIT_BACKBONE if r["scale"] == "smoke" else PRETRAINED_BACKBONE.format(arch=arch)
            )


def _validate(r: dict[str, Any]) -> None:
    for key, allowed in CHOICES.items():
        if key in r and r[key] not in allowed:
            raise RecipeError(f"recipe option {key!r} must be one of {', '.join(allowed)}; got {r[key]!r}")
    for key in ("iterations", "batch_size", "patch", "micro_batches"):
        if int(r[key]) < 1:
            raise RecipeError(f"recipe option {key!r} must be >= 1; got {r[key]!r}")
    if r["batch_size"] % r["micro_batches"]:
        raise RecipeError(
            f"batch_size {r['batch_size']} is not divisible by micro_batches {r['micro_batches']}"
        )
    if r["task"] == "inpainting" and r["micro_batches"] != 1:
        raise RecipeError("micro_batches > 1 is implemented for the deblurring recipe only")
    if "perceptual_backbone" in r:
        want_random = r["scale"] == "smoke"
        is_random = r["perceptual_backbone"] == RANDOM_INIT_BACKBONE
        if want_random != is_random:
            raise RecipeError(
                "perceptual_backbone is 'random-init (smoke)' at smoke scale and pretrained "
                f"weights otherwise; got {r['perceptual_backbone']!r} at scale {r['scale']!r}"
            )
        from ssmrepro.train.losses import VGG_ARCH_LAYERS  # local: avoid a cycle at import

        arch = VGG_LAYERS[r["vgg"]][0]
        for key in ("perceptual_layers", "style_layers"):
            bad = [x for x in r[key] if x not in VGG_ARCH_LAYERS[arch]]
            if bad:
                raise RecipeError(f"recipe option {key!r}: {arch} has no layer {', '.join(bad)}")


# ----------------------------------------------------------------------------------------------
# run configuration (contract 3)

RUN_CONFIG_SCHEMA = "ssmrepro.run-config/1"


def switches_at_scale(card: Mapping[str, Any], scale: str) -> dict[str, Any]:
    """The card's ``switches`` updated with ``scales[scale]`` (contract 1)."""
    out = copy.deepcopy(dict(card.get("switches") or {}))
    out.update(copy.deepcopy(dict((card.get("scales") or {}).get(scale) or {})))
    return out


def recipe_for_card(
    card: Mapping[str, Any],
    scale: str,
    overrides: Mapping[str, Any] | None = None,
    steps: int | None = None,
) -> dict[str, Any]:
    """Resolve the recipe a card names at ``scale``.

    The card's ``train:`` mapping holds ``recipe``, recipe options for every scale, and optionally
    ``scales: {smoke: {...}, mini: {...}, paper: {...}}`` with options for one scale (for example
    ``scales: {smoke: {iterations: 10}}`` for a model that is slow on a CPU). Without
    ``train.recipe`` the task's default recipe is used. ``steps`` overrides ``iterations`` (and
    with it the cosine schedule's length). Order: card, card at scale, ``overrides``, ``steps``.
    """
    train = dict(card.get("train") or {})
    per_scale = dict(train.pop("scales", None) or {})
    bad = sorted(set(per_scale) - set(SCALES))
    if bad:
        raise RecipeError(f"card {card.get('name')!r}: train.scales has unknown scale {', '.join(bad)}; "
                          f"known: {', '.join(SCALES)}")
    task = card.get("task")
    name = train.get("recipe") or DEFAULT_RECIPE_FOR_TASK.get(task or "")
    if name is None:
        raise RecipeError(f"card {card.get('name')!r} names no train.recipe and has no known task")
    extra = {"iterations": int(steps)} if steps is not None else None
    recipe = resolve_recipe(name, scale, train, per_scale.get(scale), overrides, extra)
    if task is not None and recipe["task"] != task:
        raise RecipeError(
            f"card {card.get('name')!r} is a {task} card but recipe {name!r} is for {recipe['task']}"
        )
    return recipe


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if hasattr(x, "item"):  # numpy / torch scalars
        return x.item()
    raise TypeError(f"config value {x!r} ({type(x).__name__}) is not YAML/JSON-serialisable")


def build_run_config(
    card: Mapping[str, Any],
    scale: str,
    seed: int,
    *,
    steps: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    data_version: str | None = None,
    deterministic: bool = False,
) -> dict[str, Any]:
    """The resolved run configuration written to ``config.yaml`` (contract 3)."""
    recipe = recipe_for_card(card, scale, overrides, steps)
    config = {
        "schema": RUN_CONFIG_SCHEMA,
        "card": card.get("name"),
        "family": card.get("family"),
        "task": recipe["task"],
        "switches": switches_at_scale(card, scale),
        "scale": scale,
        "seed": int(seed),
        "dataset": dataset,
        "data_version": data_version,
        "recipe": recipe,
        "deterministic": bool(deterministic),
    }
    return _jsonable(config)


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``config`` (tuples as lists, paths as strings), first 16
    hex digits (contract 3): ``provenance.config_hash``, the one hash of every config."""
    from ..provenance import config_hash as canonical_hash

    return canonical_hash(_jsonable(config))


def describe_recipes() -> str:
    """A markdown table of the recipes at every scale (for docs and ``--help``)."""
    keys = ["iterations", "batch_size", "patch"]
    lines = ["| recipe | scale | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for name in recipe_names():
        for scale in SCALES:
            r = recipe_defaults(name, scale)
            lines.append(f"| {name} | {scale} | " + " | ".join(str(r[k]) for k in keys) + " |")
    return "\n".join(lines) + "\n\n" + RECIPE_NOTES
