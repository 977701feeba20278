"""Named model configs, the HSENet towers, the CLIP model and official-checkpoint import."""
