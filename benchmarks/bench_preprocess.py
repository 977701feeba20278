"""Preprocessing throughput: the ``hsenet`` profile against a CT-CLIP/HSENet-style reference, side by side.

The reference is the official HSENet CT-RATE script's pipeline (specs/hsenet-official-code.md §4.1):
nibabel ``get_fdata()`` (float64), metadata slope/intercept, clamp to [-1000, 200] HU, torch trilinear
``F.interpolate`` of the whole volume to 1.5 x 0.75 x 0.75 mm, min-max to [0, 1], MONAI ``CropForeground``,
MONAI ``Resize`` to 32 x 256 x 256. Orientation is made explicit the way CT-CLIP users do it (nibabel
reorientation to LPS before the transpose) so both sides see the same voxels.

Inputs: the real example CT from ``shared/data/real-ct`` (when present) and synthetic chest-like volumes
at CT-RATE-like size (512 x 512 x ~300, v1-style int16 + rescale intercept -1024) written to a temp dir.
Both implementations run alternately on each input, ``--repeats`` times; the median times (with min–max),
their ratio and the max abs difference of the outputs go to ``benchmarks/results/preprocess_cpu.json``.
Each side's decode alone (reference: nibabel ``get_fdata()`` float64; ours: ``read_volume``, ISA-L gzip and
float32) is timed as well, so the gain splits into decoding and the chain (total minus decode).

    .venv/bin/python benchmarks/bench_preprocess.py            # full run, a few minutes on 2 cores
    .venv/bin/python benchmarks/bench_preprocess.py --quick    # one small synthetic volume + the real CT
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import CropForeground, Resize
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from hsenet_search.data.preprocess import get_profile
from hsenet_search.data.readers import read_volume
from hsenet_search.eval.provenance import run_started, spread, write_result

ROOT = Path(__file__).resolve().parents[1]
REAL_CT = ROOT.parent / "shared" / "data" / "real-ct" / "example_ct.nii.gz"
RESULT = ROOT / "benchmarks" / "results" / "preprocess_cpu.json"
INTERCEPT = -1024.0  # v1-style storage: raw = HU - INTERCEPT
# (shape, spacing mm) of the synthetic inputs: CT-RATE-like in-plane 512 x 512, 280-320 slices.
FULL_INPUTS = [
    ((512, 512, 300), (0.72, 0.72, 1.0)),
    ((512, 512, 280), (0.78, 0.78, 1.5)),
    ((512, 512, 320), (0.65, 0.65, 1.25)),
]
QUICK_INPUTS = [((256, 256, 120), (1.4, 1.4, 2.5))]


def reference_hsenet(path: Path, rescale: tuple[float, float] | None, device: str) -> np.ndarray:
    """The official HSENet CT-RATE preprocessing (float64 decode, full-resolution trilinear, crop, resize)."""
    image = nib.load(str(path))
    data = image.get_fdata()
    if rescale is not None:
        data = rescale[0] * data + rescale[1]
    data = np.clip(data, -1000, 200)
    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(image.affine), nib.orientations.axcodes2ornt("LPS")
    )
    data = nib.orientations.apply_orientation(data, ornt)
    affine = image.affine @ nib.orientations.inv_ornt_aff(ornt, image.shape)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    data = data.transpose(2, 0, 1)  # (Z, X, Y)
    current = (spacing[2], spacing[0], spacing[1])
    size = [int(n * c / t) for n, c, t in zip(data.shape, current, (1.5, 0.75, 0.75), strict=True)]
    tensor = torch.from_numpy(np.ascontiguousarray(data)).unsqueeze(0).unsqueeze(0).to(device)
    resampled = F.interpolate(tensor, size=size, mode="trilinear", align_corners=False)[0].cpu().numpy()
    low, high = resampled.min(), resampled.max()
    normalised = (resampled - low) / max(high - low, 1e-8)
    cropped = CropForeground()(normalised)
    return np.asarray(Resize([32, 256, 256], mode="bilinear")(cropped), dtype=np.float32)


def reference_decode(path: Path, rescale: tuple[float, float] | None, device: str) -> np.ndarray:
    """The reference's decode step alone."""
    return nib.load(str(path)).get_fdata()


def ours_decode(path: Path, rescale: tuple[float, float] | None, device: str) -> np.ndarray:
    """Our decode step alone (``read_volume``: header checks, ISA-L gzip when installed, float32 HU)."""
    return read_volume(path, rescale=rescale).array


def ours(path: Path, rescale: tuple[float, float] | None, device: str) -> np.ndarray:
    """This project's ``hsenet`` profile: read_volume + the MONAI chain."""
    return PROFILE(read_volume(path, rescale=rescale), device=None if device == "cpu" else device)


PROFILE = get_profile("hsenet")


def make_phantom(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """A chest-like int16 HU phantom in LPS order: air, table, body wall, lungs, mediastinum, spine, noise."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = shape
    x = np.linspace(-1, 1, nx, dtype=np.float32)[:, None]
    y = np.linspace(-1, 1, ny, dtype=np.float32)[None, :]
    hu = np.full(shape, -1000, dtype=np.int16)
    body = (x / 0.82) ** 2 + ((y + 0.05) / 0.58) ** 2 < 1
    lungs = (((np.abs(x) - 0.38) / 0.27) ** 2 + ((y + 0.05) / 0.42) ** 2) < 1
    spine = (x / 0.09) ** 2 + ((y - 0.42) / 0.09) ** 2 < 1
    heart = ((x + 0.08) / 0.22) ** 2 + ((y + 0.12) / 0.2) ** 2 < 1
    for k in range(nz):
        t = k / max(nz - 1, 1)
        plane = np.where(body, 40, -1000).astype(np.int16)
        plane[(lungs & (t > 0.1) & (t < 0.95))] = -860
        plane[heart & (t > 0.15) & (t < 0.6)] = 45
        plane[spine] = 650
        plane[:, int(ny * 0.93) : int(ny * 0.95)] = 200  # table
        hu[:, :, k] = plane
    noise = rng.normal(0.0, 15.0, size=shape).astype(np.float32)
    return np.clip(hu + noise, -1024, 3071).astype(np.int16)


def write_inputs(folder: Path, quick: bool) -> list[dict]:
    """Write the synthetic volumes (v1-style raw + rescale) and list every input of the run."""
    inputs = []
    if REAL_CT.is_file():
        inputs.append({"name": "real example CT (RAS, 3 mm)", "path": REAL_CT, "rescale": None})
    for i, (shape, spacing) in enumerate(QUICK_INPUTS if quick else FULL_INPUTS):
        raw = (make_phantom(shape, seed=i).astype(np.int32) - int(INTERCEPT)).astype(np.int16)
        affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS voxel order, like CT-RATE
        path = folder / f"synthetic_{i}.nii.gz"
        nib.save(nib.Nifti1Image(raw, affine), str(path))
        inputs.append(
            {
                "name": f"synthetic {shape[0]}x{shape[1]}x{shape[2]} LPS",
                "path": path,
                "rescale": (1.0, INTERCEPT),
            }
        )
    return inputs


def gzip_decoder() -> str:
    """The gzip decoder our reader uses here (ISA-L when installed, else zlib)."""
    try:
        import isal  # noqa: F401

        return "isal"
    except ImportError:
        return "zlib"


def run(args: argparse.Namespace) -> dict:
    console = Console()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as tmp:
        console.print("writing synthetic inputs ...")
        inputs = write_inputs(Path(tmp), args.quick)
        rows = []
        with Progress(console=console) as progress:
            sides = (
                ("reference", reference_hsenet),
                ("ours", ours),
                ("reference_decode", reference_decode),
                ("ours_decode", ours_decode),
            )
            task = progress.add_task("preprocessing", total=len(inputs) * args.repeats * len(sides))
            for item in inputs:
                item["path"].read_bytes()  # warm the page cache for both sides alike
                times: dict[str, list[float]] = {name: [] for name, _ in sides}
                outputs = {}
                for _ in range(args.repeats):
                    for name, fn in sides:
                        start = time.perf_counter()
                        outputs[name] = fn(item["path"], item["rescale"], args.device)
                        if args.device.startswith("cuda"):
                            torch.cuda.synchronize()
                        times[name].append(time.perf_counter() - start)
                        progress.advance(task)
                ref_s, our_s = statistics.median(times["reference"]), statistics.median(times["ours"])
                ref_dec, our_dec = statistics.median(times["reference_decode"]), statistics.median(times["ours_decode"])
                volume = read_volume(item["path"])
                rows.append(
                    {
                        "input": item["name"],
                        "shape": list(volume.array.shape),
                        "spacing_mm": [round(s, 4) for s in volume.spacing],
                        "file_mb": round(item["path"].stat().st_size / 2**20, 1),
                        "reference_s": round(ref_s, 3),
                        "hsenet_profile_s": round(our_s, 3),
                        "ratio": round(ref_s / our_s, 2),
                        "seconds": {name: spread(values, 3) for name, values in times.items()},
                        "decode_s": {"reference": round(ref_dec, 3), "ours": round(our_dec, 3)},
                        "chain_s": {"reference": round(ref_s - ref_dec, 3), "ours": round(our_s - our_dec, 3)},
                        "decode_ratio": round(ref_dec / our_dec, 2),
                        "chain_ratio": round((ref_s - ref_dec) / max(our_s - our_dec, 1e-6), 2),
                        "max_abs_diff": float(np.abs(outputs["reference"] - outputs["ours"]).max()),
                        "output_shape": list(outputs["ours"].shape),
                    }
                )
    ctrate_like = [r for r in rows if r["input"].startswith("synthetic")]
    ref_total = sum(r["reference_s"] for r in ctrate_like)
    our_total = sum(r["hsenet_profile_s"] for r in ctrate_like)
    ref_decode = sum(r["decode_s"]["reference"] for r in ctrate_like)
    our_decode = sum(r["decode_s"]["ours"] for r in ctrate_like)
    result = {
        "benchmark": "preprocessing throughput, hsenet profile vs CT-CLIP/HSENet-style reference",
        "profile": PROFILE.name,
        "profile_hash": PROFILE.hash,
        "settings": {"quick": args.quick, "repeats": args.repeats, "device": args.device},
        "gzip_decoder_ours": gzip_decoder(),
        "cases": rows,
        "summary": {
            "synthetic_reference_total_s": round(ref_total, 3),
            "synthetic_hsenet_profile_total_s": round(our_total, 3),
            "ratio": round(ref_total / our_total, 2),
            "decode_s": {"reference": round(ref_decode, 3), "ours": round(our_decode, 3)},
            "chain_s": {"reference": round(ref_total - ref_decode, 3), "ours": round(our_total - our_decode, 3)},
            "decode_ratio": round(ref_decode / our_decode, 2),
            "chain_ratio": round((ref_total - ref_decode) / (our_total - our_decode), 2),
            "max_abs_diff": max(r["max_abs_diff"] for r in rows),
            "target_ratio": 2.0,
            "meets_target": ref_total / our_total >= 2.0,
        },
    }
    table = Table(title=f"hsenet profile vs reference ({args.device}, {torch.get_num_threads()} threads)")
    for column in ("input", "reference s", "hsenet s", "ratio", "decode ref/ours s", "chain ref/ours s", "max |diff|"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["input"],
            f"{r['reference_s']:.2f}",
            f"{r['hsenet_profile_s']:.2f}",
            f"{r['ratio']:.2f}x",
            f"{r['decode_s']['reference']:.2f} / {r['decode_s']['ours']:.2f}",
            f"{r['chain_s']['reference']:.2f} / {r['chain_s']['ours']:.2f}",
            f"{r['max_abs_diff']:.2e}",
        )
    console.print(table)
    console.print(
        f"CT-RATE-like volumes: {result['summary']['ratio']:.2f}x faster "
        f"(target 2x), max abs diff {result['summary']['max_abs_diff']:.2e}"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small synthetic volume (a smoke run)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per implementation and input (median)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both sides (0: torch default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the interpolation runs there)")
    parser.add_argument("--out", type=Path, default=RESULT, help="result JSON path")
    args = parser.parse_args(argv)
    started = run_started()
    result = run(args)
    write_result(args.out, result, started, device=args.device, repeats=args.repeats)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
