"""What training and query time share about the localisation head's scores (RadFinder §1.4).

A snippet's score at depth bin ``d`` is ``cos(snippet, depth_d) / LOCALISATION_TAU``: the training loss takes
the soft cross-entropy of these logits, ``locate`` their softmax as the profile over bins.
"""

from __future__ import annotations

LOCALISATION_TAU = 0.1  # fixed, as RadFinder trains it (its learnable-τ option is off)
