"""CDF plot of per-host completion times against the theoretical bounds.

Why a CDF: the question a release system answers is "when does the last host (and the p50 host)
have it", and a CDF shows both for every method at once; the vertical lines at the P2P bound T*
and the client-server bound say how far each method is from the best possible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot import

import matplotlib.pyplot as plt


def plot_cdf(
    times: Mapping[str, Sequence[float]],
    t_star: float,
    t_cs: float,
    out_png: Path,
    title: str,
) -> Path:
    """Write a step CDF (fraction of hosts done vs seconds) of each series to `out_png`.

    `times` maps a series label (e.g. "shoal", "sftp") to per-host completion times in seconds.
    `t_star` is the P2P bound, `t_cs` the client-server bound; both are drawn as dashed lines.
    Returns `out_png`.
    """
    if not times or not any(times.values()):
        raise ValueError("no completion times to plot")
    fig, ax = plt.subplots(figsize=(7.0, 4.2), dpi=120)
    try:
        for label, values in times.items():
            xs = sorted(values)
            if not xs:
                continue
            n = len(xs)
            # Start at (0, 0) so the curve reads as "no host done at t = 0".
            ax.step(
                [0.0, *xs],
                [0.0, *((i + 1) / n for i in range(n))],
                where="post",
                label=f"{label} (n={n}, max {xs[-1]:.1f} s)",
            )
        ax.axvline(t_star, color="tab:green", linestyle="--", label=f"P2P bound T* {t_star:.1f} s")
        ax.axvline(t_cs, color="tab:red", linestyle=":", label=f"client-server bound {t_cs:.1f} s")
        ax.set_xlabel("time since start (s)")
        ax.set_ylabel("fraction of hosts done")
        ax.set_ylim(0.0, 1.02)
        ax.set_xlim(left=0.0)
        ax.grid(True, alpha=0.3)
        ax.set_title(title)
        ax.legend(loc="lower right", fontsize="small")
        fig.tight_layout()
        out_png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_png)
    finally:
        plt.close(fig)
    return out_png
