"""The `attack` task: worst-case perturbations, one class per search over one shared core.

`name = "attack"` runs Algorithms 1 / 2 of the paper (`search = "paper"`, the default,
tasks/paper_attack.py) or the worst case at each budget (`search = "budget"`, tasks/budget_attack.py);
`attack-reference` is the same with the unrolled reference solver as the target. Both searches write the
`attacks` table with one schema and score a perturbation the same way (tasks/attack_core.py). Importing
this module registers all four classes.
"""

from __future__ import annotations

from survey.tasks.attack_core import (ATTACK_COLUMNS, BUDGET_ONLY, SEARCHES, SUPPORTS, TARGETS, AttackTask,
                                      foreground_support, measure, same_starts)
from survey.tasks.budget_attack import BudgetAttack, BudgetAttackReference
from survey.tasks.paper_attack import (P_CHOICES, PRESETS, Attack, AttackReference, SearchResult, Snapshot, search,
                                       snapshot_plan, uniform_start)

__all__ = ["ATTACK_COLUMNS", "Attack", "AttackReference", "AttackTask", "BUDGET_ONLY", "BudgetAttack",
           "BudgetAttackReference", "P_CHOICES", "PRESETS", "SEARCHES", "SUPPORTS", "SearchResult", "Snapshot",
           "TARGETS", "foreground_support", "measure", "same_starts", "search", "snapshot_plan", "uniform_start"]
