"""Matrix expansion: one unit per (model, dims, seed), one cell per scorer variant, reasons for drops."""

from __future__ import annotations

from pathlib import Path

import tomllib

from brats_ad.bench.config import parse_bench_config
from brats_ad.bench.matrix import expand

CONFIGS = Path(__file__).resolve().parent / "configs"  # reduced test configs


def raw_tiny() -> dict:
    return tomllib.loads((CONFIGS / "tiny.toml").read_text())


def test_expand_drops_incompatible_pairs_with_reasons(registries):
    raw = raw_tiny()
    raw["matrix"] = {"dims": [2, 3], "seeds": [0, 1]}
    raw["models"].append({"name": "ae-2d-only"})
    raw["scorers"].append({"name": "combined", "grid": {"alpha": [0.5, 1.0], "beta": [1.0, 2.0]}})
    m = expand(parse_bench_config(raw), registries)
    # flair-threshold: model-map only; ae: residual + 4 combined; ae-2d-only: residual (2D only)
    per_seed = {("flair-threshold", 2): 1, ("flair-threshold", 3): 1, ("ae", 2): 5, ("ae", 3): 5, ("ae-2d-only", 2): 1}
    assert {(u.model, u.dims): len(u.cells) for u in m.units if u.seed == 0} == per_seed
    assert len(m.units) == 2 * len(per_seed) and len(m.cells) == 2 * sum(per_seed.values())
    reasons = {str(d) for d in m.dropped}
    assert "flair-threshold x residual (2D): scorer requires reconstruction; model provides anomaly_map, image_score" in reasons
    assert any(r.startswith("flair-threshold x combined (3D): scorer requires latent_pair, reconstruction") for r in reasons)
    assert "ae x model-map (2D): scorer requires anomaly_map; model provides latent_pair, reconstruction" in reasons
    assert "ae-2d-only (3D): model supports dims [2] only" in reasons
    assert "ae-2d-only x combined (2D): scorer requires latent_pair; model provides reconstruction" in reasons
    combined = [c for c in m.cells if c.scorer == "combined" and c.dims == 2 and c.seed == 0]
    assert sorted((c.scorer_params["alpha"], c.scorer_params["beta"]) for c in combined) == [
        (0.5, 1.0), (0.5, 2.0), (1.0, 1.0), (1.0, 2.0)]
    assert len({c.cell_id for c in m.cells}) == len(m.cells)


def test_ids_are_stable_and_data_params_filled(registries):
    a = expand(parse_bench_config(raw_tiny()), registries)
    b = expand(parse_bench_config(raw_tiny()), registries)
    assert [c.cell_id for c in a.cells] == [c.cell_id for c in b.cells]
    ae = next(u for u in a.units if u.model == "ae")
    assert ae.model_params["spatial_dims"] == 2 and ae.model_params["in_channels"] == 4
    assert ae.model_params["image_size"] == 16
    flair = next(u for u in a.units if u.model == "flair-threshold")
    assert tuple(flair.model_params["modalities"]) == ("t1", "t1ce", "t2", "flair")
    # adding a scorer keeps the existing cells' ids (and the units': checkpoints are reused)
    raw = raw_tiny()
    raw["scorers"].append({"name": "latent"})
    c = expand(parse_bench_config(raw), registries)
    assert {u.unit_id for u in c.units} == {u.unit_id for u in a.units}
    assert {x.cell_id for x in a.cells} < {x.cell_id for x in c.cells}


def test_dropped_cells_print_one_line_per_reason():
    from brats_ad.bench.matrix import Dropped
    from brats_ad.bench.runner import dropped_lines

    need = "scorer requires anomaly_map; model provides latent_pair, reconstruction"
    dropped = [Dropped("ae", "model-map", 2, need), Dropped("ae", "model-map", 3, need),
               Dropped("vae", "model-map", 2, need), Dropped("vae", "model-map", 3, need),
               Dropped("anogan", "model-map", 2, "scorer requires anomaly_map; model provides reconstruction"),
               Dropped("anogan", None, 3, "model supports 2D only")]
    assert dropped_lines(dropped) == [
        f"ae, vae x model-map (2D, 3D): {need}",
        "anogan x model-map (2D): scorer requires anomaly_map; model provides reconstruction",
        "anogan (3D): model supports 2D only",
    ]
