"""GAN balance: which trials are adversarial, and which vanilla-GAN ones left the D-loss band
the AdaptSegNet authors describe as healthy (0.2-0.5, AdaptSegNet issues #22 and #69)."""

from __future__ import annotations

import json

import pandas as pd

HEALTHY_D_LOSS = (0.2, 0.5)


def gan_outliers(trials: pd.DataFrame, evals: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(the adversarial trials' ids, one line per vanilla-GAN trial whose main D loss over the
    second half of its training left ``HEALTHY_D_LOSS``). LS-GAN's scale differs: not flagged."""
    adversarial, flagged = [], []
    for row in trials.itertuples():
        config = json.loads(row.config or "{}")
        weights = [config.get("lambda_adv_main", 0) or 0, config.get("lambda_adv_aux", 0) or 0]
        if not config.get("use_target", True) or max(weights) <= 0:
            continue
        adversarial.append(row.trial_id)
        if config.get("gan", "vanilla") != "vanilla":
            continue
        mine = evals[(evals["trial_id"] == row.trial_id) & (evals["split"] == "select")]
        d_loss = mine.sort_values("step")["loss_d_main"].dropna()
        tail = d_loss.iloc[len(d_loss) // 2 :]
        if len(tail) and not HEALTHY_D_LOSS[0] <= tail.mean() <= HEALTHY_D_LOSS[1]:
            flagged.append(
                f"{row.arm} {row.stage} {row.trial_id}: mean D loss {tail.mean():.3f} over the "
                "second half of training"
            )
    return adversarial, flagged
