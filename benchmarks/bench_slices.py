"""``data slice-features`` throughput against the official two-script path, side by side on the same inputs.

Reference (specs/hsenet-official-code.md §4.2-4.3, re-implemented straight): script 1 reads each NIfTI
with nibabel ``get_fdata()``, applies the metadata rescale, transposes, clamps to [-1000, 1000] / 1000,
resamples with ``F.interpolate`` to 1.5 x 0.75 x 0.75 mm, picks 32 slices with ``torch.linspace``,
min-max scales each to uint8, rotates -90 degrees with PIL and *writes 32 JPEG files*; script 2 *reads
them back*, converts to RGB, applies the BiomedCLIP preprocess, runs the 32 slices through the trunk as
one batch and saves the (32, C) ``.npy``. Ours: :func:`hsenet_search.slice_jobs.write_slice_features`
(JPEGs encoded and decoded in memory).

Inputs: synthetic CT-RATE v1 volumes (int16 + intercept -1024, metadata spacing) in a temporary CT-RATE
layout. The trunk is a randomly initialised timm ViT in a BiomedCLIP-format open_clip folder (no
download): ``test_vit`` by default (CPU-sized), ``--trunk vit_base_patch16_224`` for BiomedCLIP's size.

    .venv/bin/python benchmarks/bench_slices.py --quick
    .venv/bin/python benchmarks/bench_slices.py --device cuda --trunk vit_base_patch16_224 \
        --out benchmarks/results/slice_features_cuda.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hsenet_search.data import ctrate
from hsenet_search.data.dataset import open_dataset
from hsenet_search.slice_jobs import BiomedCLIPEncoder, write_slice_features

ROOT = Path(__file__).resolve().parents[1]
FULL_SHAPES = [(512, 512, 300), (512, 512, 240)]
QUICK_SHAPES = [(256, 256, 120)]
SPACING = (0.75, 1.5)  # metadata XY, Z


def write_dataset(root: Path, shapes, count: int) -> Path:
    rng = np.random.default_rng(0)
    reports, metadata = [], []
    for i in range(count):
        shape = shapes[i % len(shapes)]
        x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
        body = np.where(x**2 / 0.8 + y**2 / 0.6 < 1, 40.0, -1000.0)[:, :, None]
        hu = body + rng.normal(0, 20, (1, 1, shape[2])) + rng.normal(0, 5, shape)
        name = f"valid_{i + 1}_a_1.nii.gz"
        path = root / "valid" / ctrate.volume_relpath(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        affine = np.diag([-SPACING[0], -SPACING[0], SPACING[1], 1.0])
        nib.save(nib.Nifti1Image((hu + 1024).round().astype(np.int16), affine), str(path))
        reports.append({"VolumeName": name, "Findings_EN": "x.", "Impressions_EN": "y."})
        metadata.append(
            {
                "VolumeName": name,
                "RescaleSlope": 1,
                "RescaleIntercept": -1024,
                "XYSpacing": f"[{SPACING[0]}, {SPACING[0]}]",
                "ZSpacing": SPACING[1],
            }
        )
    ctrate.write_reports_csv(ctrate.reports_csv(root, "valid"), reports)
    ctrate.write_metadata_csv(ctrate.metadata_csv(root, "valid"), metadata)
    return root


def write_trunk(folder: Path, name: str) -> Path:
    from open_clip.timm_model import TimmModel

    torch.manual_seed(0)
    visual = TimmModel(name, embed_dim=512, image_size=224, pool="", proj="linear")
    folder.mkdir(parents=True)
    torch.save({"visual." + k: v for k, v in visual.state_dict().items()}, folder / "open_clip_pytorch_model.bin")
    (folder / "open_clip_config.json").write_text(
        json.dumps(
            {
                "model_cfg": {
                    "embed_dim": 512,
                    "vision_cfg": {
                        "timm_model_name": name,
                        "timm_pool": "",
                        "timm_proj": "linear",
                        "image_size": 224,
                    },
                },
                "preprocess_cfg": {
                    "mean": [0.48145466, 0.4578275, 0.40821073],
                    "std": [0.26862954, 0.26130258, 0.27577711],
                },
            }
        )
    )
    return folder


def official_two_scripts(cases, encoder: BiomedCLIPEncoder, work: Path) -> dict[str, np.ndarray]:
    """Script 1 (NIfTI -> 32 JPEG files) for every volume, then script 2 (JPEG files -> features)."""
    for case in cases:
        data = nib.load(str(case.path)).get_fdata()
        slope, intercept = case.rescale
        data = slope * data + intercept
        if data.shape[2] < data.shape[0]:
            data = data.transpose(2, 0, 1)
        t = torch.tensor(data).clamp(-1000, 1000) / 1000
        xy, z = case.spacing[1], case.spacing[2]
        size = [int(n * c / g) for n, c, g in zip(t.shape, (z, xy, xy), (1.5, 0.75, 0.75), strict=True)]
        t = F.interpolate(t[None, None], size=size, mode="trilinear", align_corners=False)[0, 0]
        t = (
            t[torch.linspace(0, t.shape[0] - 1, 32).long()]
            if t.shape[0] >= 32
            else F.interpolate(t[None, None], size=(32, *t.shape[1:]), mode="trilinear", align_corners=False)[0, 0]
        )
        folder = work / Path(case.path).name.split(".")[0] / "slices"
        folder.mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(t):
            u8 = ((s - s.min()) / (s.max() - s.min()) * 255).to(torch.uint8).numpy()
            Image.fromarray(u8).rotate(-90, expand=True).save(folder / f"slice_{i:03d}.jpg", quality=95)
    out = {}
    for case in cases:
        folder = work / Path(case.path).name.split(".")[0] / "slices"
        batch = torch.stack([encoder.transform(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.jpg"))])
        feats = encoder(batch)
        np.save(folder.parent / "features.npy", feats)
        out[case.volume_name] = feats
    return out


def machine(device: str) -> dict:
    info = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small volumes (256 x 256 x 120)")
    ap.add_argument("--volumes", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0, help="decode/slice workers on our side")
    ap.add_argument("--trunk", default="test_vit", help="timm model name of the random BiomedCLIP-format trunk")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "slice_features_cpu.json")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_dataset(tmp / "data", QUICK_SHAPES if args.quick else FULL_SHAPES, args.volumes)
        encoder = BiomedCLIPEncoder.load(write_trunk(tmp / "biomedclip", args.trunk), args.device)
        cases = open_dataset(data)
        times = {"ours": [], "official_two_scripts": []}
        max_diff = 0.0
        for r in range(args.repeats):
            t0 = time.perf_counter()
            summary = write_slice_features(cases, encoder, tmp / f"ours{r}", workers=args.workers)
            times["ours"].append(time.perf_counter() - t0)
            assert not summary.failures, summary.failures
            t0 = time.perf_counter()
            ref = official_two_scripts(cases, encoder, tmp / f"ref{r}")
            times["official_two_scripts"].append(time.perf_counter() - t0)
            for case in cases:
                ours = np.load(tmp / f"ours{r}" / (Path(case.path).name[:-7] + "_biomedclip_features.npy"))
                max_diff = max(max_diff, float(np.abs(ours - ref[case.volume_name]).max()))
    stats = {}
    for name, values in times.items():
        rates = [args.volumes / t for t in values]
        stats[name] = {
            "volumes_per_second_median": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            "seconds": values,
        }
    result = {
        "benchmark": "data slice-features throughput vs the official two-script path (JPEG files on disk)",
        "machine": machine(args.device),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "volumes": args.volumes,
        "shapes": QUICK_SHAPES if args.quick else FULL_SHAPES,
        "trunk": args.trunk,
        "repeats": args.repeats,
        "workers": args.workers,
        "results": stats,
        "speedup_median": stats["ours"]["volumes_per_second_median"]
        / stats["official_two_scripts"]["volumes_per_second_median"],
        "max_abs_feature_diff": max_diff,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {k: result[k] for k in ("speedup_median", "max_abs_feature_diff")}
            | {k: round(v["volumes_per_second_median"], 3) for k, v in stats.items()},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
