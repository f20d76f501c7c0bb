"""Few-shot abstract reasoning (ARC), the paper's second experiment, as a domain of the outer loop.

    grids.py      grids, tasks and their compact text
    families.py   seeded generator of small-grid task families (generated:train / generated:eval)
    tasks.py      ARC-AGI files, the paper's 1B sets, the context-budget check
    augment.py    invertible augmenters (symmetries, colour permutations, size changes, chains)
    self_edit.py  the JSON self-edit: schema, clamping, malformed = 0
    ttt.py        test-time training (inner loop) and voted inference
    domain.py     ArcDomain: the Domain contract, so run_rest_em(ArcDomain(lm), cfg, out) works
"""

from seal.domains.arc.domain import ArcDomain
from seal.domains.arc.families import FAMILIES
from seal.domains.arc.tasks import select_tasks

__all__ = ["ArcDomain", "FAMILIES", "select_tasks"]
