"""Growing a finished study: which changes of its spec only add work (no Ray needed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.errors import SpecError


def flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (for naming what changed)."""
    if not isinstance(values, dict):
        return {prefix: values}
    out: dict[str, Any] = {}
    for key, value in values.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


# Where and how the study runs or reports, not what it computes: free to change on resume
# (resources and concurrency, where Ray runs, checkpoint cadence, retries of a dead worker,
# the comparisons the report shows).
OPERATIONAL = ("ray.", "resources.", "checkpoint.", "max_failures", "compare", "trackers")


def spec_changes(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Compare a study's saved spec with the one given now: ``(grown, refused)`` key paths.

    Grown: changes that only add work and leave every finished trial comparable: more search
    samples, a larger ``confirm.top_k``, confirm seeds appended, a new arm (and search-space
    ``arms:`` lists that add only new arms). Refused: any other change of what is computed.
    Where and how the study runs (``OPERATIONAL``) may change freely."""
    old_arms, new_arms = set(old.get("arms", {})), set(new.get("arms", {}))
    added = new_arms - old_arms
    grown, refused = [], []
    flat_old, flat_new = flatten(old), flatten(new)
    for key in sorted(set(flat_old) | set(flat_new)):
        before, after = flat_old.get(key), flat_new.get(key)
        if before == after or key.startswith(OPERATIONAL):
            continue
        parts = key.split(".")
        if parts[0] == "arms" and len(parts) > 1 and parts[1] in added:
            grown.append(f"arms.{parts[1]}")
        elif key in ("search.num_samples", "search.repeats", "confirm.top_k") and _more(
            before, after
        ):
            grown.append(key)
        elif key == "confirm.seeds" and _appended(before, after):
            grown.append(key)
        elif (
            parts[:2] == ["search", "space"]
            and parts[-1] == "arms"
            and _adds_only(before, after, added)
        ):
            grown.append(key)
        elif (
            parts[:2] == ["search", "space"]
            and before is None
            and _only_new_arms(flat_new, parts, added)
        ):
            grown.append(".".join(parts[:3]))
        else:
            refused.append(key)
    grown += [f"arms.{arm}" for arm in added]  # an arm of no settings ({}) has no keys
    refused += [f"arms.{arm}" for arm in sorted(old_arms - new_arms)]
    return sorted(set(grown)), sorted(set(refused))


def _more(before: Any, after: Any) -> bool:
    return isinstance(before, int) and isinstance(after, int) and after > before


def _appended(before: Any, after: Any) -> bool:
    return (
        isinstance(before, list)
        and isinstance(after, list)
        and len(after) > len(before)
        and after[: len(before)] == before
    )


def _adds_only(before: Any, after: Any, added: set[str]) -> bool:
    return (
        isinstance(before, list)
        and isinstance(after, list)
        and set(before) <= set(after)
        and set(after) - set(before) <= added
    )


def _only_new_arms(flat: dict[str, Any], parts: list[str], added: set[str]) -> bool:
    """A search-space key that is new and limited to new arms."""
    arms = flat.get(".".join([*parts[:3], "arms"]))
    return isinstance(arms, list) and bool(arms) and set(arms) <= added


@dataclass(frozen=True)
class Growth:
    """What running a spec on an existing study does: grow it (``grown``: the keys that add
    work), or start it over (``start_over``: the keys that changed in a study none of whose
    trials had finished, so nothing is lost); both empty: resume it as it is."""

    grown: list[str] = field(default_factory=list)
    start_over: list[str] = field(default_factory=list)


def decide_growth(
    saved: dict[str, Any] | None, given: dict[str, Any], finished: int, folder: Path, origin: str
) -> Growth:
    """Compare the study's saved spec (None: a new study) with the one ``given`` now.

    Raises:
        SpecError: a change that would make the ``finished`` trials incomparable.
    """
    if saved is None:
        return Growth()
    grown, refused = spec_changes(saved, given)
    if refused and not finished:
        return Growth(start_over=refused)
    if refused:
        raise SpecError(
            f"{origin}: the study in {folder} was started with other values for "
            f"{', '.join(refused)}, which would make its finished trials incomparable; "
            "rerun with --fresh to start over (the old one is kept)"
        )
    return Growth(grown=grown)
