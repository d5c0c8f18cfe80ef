"""The conditions-of-use check at predict time: is this input like what the model was shown to work on?

A package may state its conditions of use under rdf `config.cristae_zoo.conditions` (`ConditionsOfUse`): the
range of mitochondrion widths (after rescaling) within which `cristae-zoo study limits` found the restoration
within 10 % of its quality at the training condition, the highest noise relative to the signal range, and the
least structure a plane must hold. Before predicting, `check` measures the same quantities on a sample of the
(rescaled) input planes:

- **structure**: (99.5th percentile − median) / σ_noise, with σ_noise the robust pseudo-residual noise estimate
  (`data.mask.noise_sigma`), both on a 2× subsampled grid of the plane (`structure_snr`). A plane of noise alone
  scores ~3; the package's test input scores far higher. A plane below `min_structure_snr` holds no mitochondria,
  and there DeepCristae invents tubes and cristae (docs/trust.md);
- **width**: the mean mitochondrion width (`rescale.object_widths`, the estimator `--rescale auto` uses);
- **relative noise**: σ_noise / (99.8th − 2nd percentile), the noise on the network's normalised scale.

Outside the range, `predict` warns in one line and records the measurement in the output's metadata; `--strict`
refuses instead. The thresholds are heuristics calibrated on the package's own test input (which must pass, a
test checks it) and on simulated out-of-range inputs; they flag likely trouble, they do not prove a result right.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cristae_zoo.errors import CristaeZooError

#: Planes measured per file: the `pick_planes` ones with the most signal (width, noise) and an even sample of all
#: planes (structure: are some planes empty?). Two width planes, not five: the brightest planes of one acquisition
#: show the same mitochondria (a z-stack's in-focus planes, a movie's time points), so more planes add little to
#: the estimate, while each 640² crop costs ~0.8 s (five were 12 % of a 20-plane stack's run, docs/benchmarks.md).
WIDTH_PLANES = 2
STRUCTURE_PLANES = 16
#: Width and noise are measured on the central crop of at most this edge (px): the width estimator (skeletons,
#: level sets) took 12 s on a whole 2048² plane, longer than the restoration itself.
MEASURE_EDGE = 640


class ConditionsOfUse(BaseModel):
    """What the model was shown to work on (rdf `config.cristae_zoo.conditions`)."""

    model_config = ConfigDict(extra="forbid")

    width_px: tuple[float, float] | None = Field(None, description="mean mitochondrion width after rescaling (px)")
    max_relative_noise: float | None = Field(None, gt=0, description="σ_noise / (p99.8 − p2) at most")
    min_structure_snr: float = Field(6.0, gt=0, description="(p99.5 − median) / σ_noise at least, per plane")
    source: str = Field("", description="where the ranges come from (study, date)")


@dataclass
class ConditionsReport:
    measured: dict[str, Any]
    outside: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.outside

    def message(self, name: str) -> str:
        return f"{name}: outside the model's conditions of use: " + "; ".join(self.outside)


def read_conditions(config_block: dict[str, Any]) -> ConditionsOfUse | None:
    raw = config_block.get("conditions") if isinstance(config_block, dict) else None
    if raw is None:
        return None
    try:
        return ConditionsOfUse.model_validate(raw)
    except ValueError as err:
        raise CristaeZooError(f"invalid conditions of use: {' '.join(str(err).split())[:300]}") from None


def structure_snr(plane: np.ndarray) -> float:
    """(p99.5 − median) / σ_noise on every second pixel of every second row: the percentiles over that grid, σ_noise
    from the pseudo-residuals anchored on it (each still uses its full-resolution neighbours below and to the right,
    so it is the same noise measure, sampled). A quarter of the work of the full plane: the check measures up to
    `STRUCTURE_PLANES` whole planes before the first one is restored. Mitochondria (≥ 10 px wide after rescaling)
    cover the grid as they cover the plane."""
    from cristae_zoo.data.mask import mad_sigma

    a = np.asarray(plane)
    h, w = a.shape[-2:]
    if h < 4 or w < 4:
        return _structure_snr_full(a)
    h2, w2 = (h - 1) // 2 * 2, (w - 1) // 2 * 2  # anchors whose neighbour below and right exist
    grid = np.array(a[: h2 : 2, : w2 : 2], dtype=np.float64)
    residuals = 2 * grid - a[1 : h2 + 1 : 2, : w2 : 2] - a[: h2 : 2, 1 : w2 + 1 : 2]
    residuals /= np.sqrt(6.0)
    p50, p995 = np.percentile(grid, [50.0, 99.5], overwrite_input=True)
    sigma = mad_sigma(residuals)
    return float((p995 - p50) / max(sigma, 1e-12 * max(1.0, abs(p995))))


def _structure_snr_full(plane: np.ndarray) -> float:
    from cristae_zoo.data.mask import noise_sigma

    buf = _float64(plane)
    p50, p995 = np.percentile(buf, [50.0, 99.5], overwrite_input=True)
    sigma = noise_sigma(plane, out=buf)
    return float((p995 - p50) / max(sigma, 1e-12 * max(1.0, abs(p995))))


def relative_noise(plane: np.ndarray) -> float:
    from cristae_zoo.data.mask import noise_sigma

    buf = _float64(plane)
    lo, hi = np.percentile(buf, [2.0, 99.8], overwrite_input=True)
    return float(noise_sigma(plane, out=buf) / max(hi - lo, 1e-12))


def _float64(plane: np.ndarray) -> np.ndarray:
    """A float64 copy of `plane` that the measurements may reorder (one copy, not several)."""
    return np.array(plane, dtype=np.float64, copy=True)


def check(
    conditions: ConditionsOfUse,
    structure_planes: Iterable[np.ndarray],
    width_planes: Iterable[np.ndarray],
    *,
    width_px: float | None = None,
) -> ConditionsReport:
    """Measure the (rescaled) planes and compare with `conditions`. `width_px`: the width after rescaling where it
    is already known (`--rescale auto` measured it to choose the factor); the planes' width is then not measured
    again (the estimator is scale-equivariant: the measured width times the factor is the rescaled planes')."""
    snrs = [structure_snr(p) for p in structure_planes]
    return _report(conditions, snrs, [_central_crop(p, MEASURE_EDGE) for p in width_planes], width_px)


def check_stream(
    conditions: ConditionsOfUse, planes: Iterable[tuple[np.ndarray, bool, bool]], *, width_px: float | None = None
) -> ConditionsReport:
    """`check` on (plane, structure?, width?) items read one at a time: only one full plane is held at once (the
    width and noise are measured on central crops, kept), so the check costs one plane of memory whatever the
    number of planes sampled. Same result as `check`."""
    snrs: list[float] = []
    crops: list[np.ndarray] = []
    for plane, structure, width in planes:
        if structure:
            snrs.append(structure_snr(plane))
        if width:
            crops.append(np.array(_central_crop(plane, MEASURE_EDGE)))
        del plane
    return _report(conditions, snrs, crops, width_px)


def _width(crops: list[np.ndarray]) -> float | None:
    """The mean width over the crops, measured crop by crop and stopping once it is known to within 5 % (standard
    error, at least 5 objects): one 640² crop of a typical field holds dozens of mitochondria (the stack benchmark's:
    22, standard error 3 %), and each crop costs ~0.6 s. 5 % is well inside the width ranges `study limits` finds
    (±12–22 % around the training width). None where no mitochondria are found."""
    from cristae_zoo.rescale import object_widths, summarize

    measured, estimate = [], None
    for crop in crops:
        measured.append(object_widths(crop))
        try:
            estimate = summarize(measured)
        except CristaeZooError:  # none found yet
            continue
        if estimate.n_objects >= 5 and estimate.sem <= 0.05 * estimate.mean:
            break
    return None if estimate is None else estimate.mean


def _report(
    conditions: ConditionsOfUse, snrs: list[float], crops: list[np.ndarray], known_width: float | None = None
) -> ConditionsReport:
    empty = [s for s in snrs if s < conditions.min_structure_snr]
    measured: dict[str, Any] = {
        "planes_sampled": len(snrs),
        "planes_without_structure": len(empty),
        "structure_snr_min": round(min(snrs), 2) if snrs else None,
    }
    report = ConditionsReport(measured)
    if empty:
        report.outside.append(
            f"{len(empty)} of {len(snrs)} sampled planes hold no mitochondria (structure SNR {min(snrs):.1f} <"
            f" {conditions.min_structure_snr:g}); the model may invent structure there"
        )
    full = [p for p in crops if structure_snr(p) >= conditions.min_structure_snr]
    if not full:
        return report
    noise = float(np.median([relative_noise(p) for p in full]))
    measured["relative_noise"] = round(noise, 4)
    if conditions.max_relative_noise is not None and noise > conditions.max_relative_noise:
        report.outside.append(
            f"noise {noise:.3f} of the signal range > {conditions.max_relative_noise:.3f} (noisier than the model"
            " was shown to handle)"
        )
    if conditions.width_px is not None:
        width = known_width if known_width is not None else _width(full)
        measured["width_px"] = None if width is None else round(width, 2)
        lo, hi = conditions.width_px
        if width is not None and not lo <= width <= hi:
            report.outside.append(
                f"mitochondria {width:.1f} px wide after rescaling, outside {lo:g}–{hi:g} px (rescale: --rescale"
                " auto, --pixel-size or --rescale)"
            )
    return report


def _central_crop(plane: np.ndarray, edge: int) -> np.ndarray:
    h, w = plane.shape[-2:]
    y0, x0 = max(0, (h - edge) // 2), max(0, (w - edge) // 2)
    return plane[..., y0 : y0 + edge, x0 : x0 + edge]
