"""``ssmrepro env``: what this machine can run, and what it is missing."""

from __future__ import annotations

import platform

from .provenance import hardware, package_versions


def scan_backends() -> dict[str, dict]:
    from .ssm import scan

    if hasattr(scan, "available_backends"):
        return {k: {"available": ok, "note": why} for k, (ok, why) in scan.available_backends().items()}
    return {k: {"available": True, "note": ""} for k in scan.BACKENDS}


def gpu() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"available": False, "devices": [], "torch_cuda": torch.version.cuda}
    return {"available": True, "torch_cuda": torch.version.cuda,
            "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}


def pretrained() -> list[dict]:
    try:
        from .pretrained import weights_status
    except ImportError:
        return []
    return weights_status()


def env_report() -> dict:
    from .compat import ensure_torchvision_importable

    try:
        tv = ensure_torchvision_importable()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        tv = f"failed: {exc}"
    return {"python": platform.python_version(), "platform": platform.platform(),
            "hardware": hardware(), "packages": package_versions(), "torchvision_ops": tv,
            "gpu": gpu(), "scan_backends": scan_backends(), "pretrained_weights": pretrained()}


def format_env_report(r: dict) -> str:
    lines = [f"python     {r['python']}  ({r['platform']})", f"hardware   {r['hardware']}"]
    g = r["gpu"]
    lines.append("gpu        " + (", ".join(g["devices"]) if g["available"] else
                                  f"none (torch CUDA build: {g['torch_cuda'] or 'no'})"))
    lines.append(f"torchvision ops: {r['torchvision_ops']}")
    lines.append("packages:")
    for name, ver in r["packages"].items():
        lines.append(f"  {name:<16} {ver or 'not installed'}")
    lines.append("scan backends:")
    for name, st in r["scan_backends"].items():
        mark = "yes" if st["available"] else "no "
        lines.append(f"  {name:<10} {mark}  {st['note']}")
    lines.append("pretrained weights:")
    if not r["pretrained_weights"]:
        lines.append("  (inventory unavailable)")
    for w in r["pretrained_weights"]:
        state = "present" if w.get("present") else "MISSING"
        lines.append(f"  {w.get('file', '?'):<42} {state:<8} {w.get('path', '')}")
        if not w.get("present") and w.get("url"):
            lines.append(f"  {'':<42} get it from {w['url']}")
    return "\n".join(lines)
