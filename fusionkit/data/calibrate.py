"""Linear probes on time-averaged nonverbal features: how much sentiment each channel carries."""
from __future__ import annotations

import numpy as np


def time_averaged(ds, channel: str) -> np.ndarray:
    """``(N, d)`` mean of each example's feature rows over its words (special-token rows excluded if aligned)."""
    feats = getattr(ds, channel)
    offsets = getattr(ds, f"{channel}_offsets")
    out = np.zeros((len(ds), feats.shape[1]), dtype=np.float64)
    for i in range(len(ds)):
        rows = feats[offsets[i]:offsets[i + 1]]
        if ds.aligned:
            rows = rows[1:-1]
        if len(rows):
            out[i] = rows.mean(0)
    return out


def probe(loaded, channel: str, *, seed: int = 0) -> dict:
    """Test Acc2 (negative vs positive, zero labels excluded) of a logistic and a ridge probe trained on the
    time-averaged ``channel`` of the train split."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = loaded.splits["train"], loaded.splits["test"]
    x_tr, x_te = time_averaged(train, channel), time_averaged(test, channel)
    y_tr, y_te = train.labels, test.labels
    nz_tr, nz_te = y_tr != 0, y_te != 0
    logistic = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
    logistic.fit(x_tr[nz_tr], y_tr[nz_tr] > 0)
    ridge = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    ridge.fit(x_tr, y_tr)
    truth = y_te[nz_te] > 0
    return {
        "logistic_acc2": float(100 * np.mean(logistic.predict(x_te[nz_te]) == truth)),
        "ridge_acc2": float(100 * np.mean((ridge.predict(x_te[nz_te]) > 0) == truth)),
        "n_test_nonzero": int(nz_te.sum()),
    }


def calibration(loaded) -> dict:
    return {
        "dataset": loaded.info.name,
        "simulated": loaded.info.simulated,
        # an absent channel (0 features) has nothing to probe
        "acoustic": probe(loaded, "acoustic") if loaded.info.d_acoustic else None,
        "visual": probe(loaded, "visual") if loaded.info.d_visual else None,
        "targets": {"acoustic_acc2": "60 ± 3", "visual_acc2": "57 ± 3"} if loaded.info.simulated else None,
    }
