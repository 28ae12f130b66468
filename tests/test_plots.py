"""Maps and report figures: coastline on the coloured cells, clipped colours arrowed, units, legends."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from seacast import plots, reporting, schema  # noqa: E402
from seacast.evaluation import report  # noqa: E402
from seacast.twin.output import FORECAST_SERIES, VARIABLE_ATTRS  # noqa: E402


@pytest.fixture
def small_field() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    lat = np.linspace(51.0, 52.0, 5)
    lon = np.linspace(3.0, 4.0, 6)
    values = np.tile(np.linspace(-0.5, 0.5, 6), (5, 1))
    sea = np.ones((5, 6), bool)
    sea[:2, -2:] = False  # land in the south-east corner, touching the eastern edge
    return values, lat, lon, sea


def test_cell_edges_are_midpoints_and_half_cells_beyond_the_ends() -> None:
    np.testing.assert_allclose(plots.cell_edges(np.array([0.0, 1.0, 3.0])), [-0.5, 0.5, 2.0, 4.0])


def test_coastline_runs_along_cell_edges_up_to_the_map_edge(small_field) -> None:
    values, lat, lon, sea = small_field
    fig, ax = plt.subplots()
    plots.draw_field(ax, values, lat, lon, "zos", sea)
    (coast,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    lat_edges, lon_edges = plots.cell_edges(lat), plots.cell_edges(lon)
    points = np.concatenate(coast.get_segments())
    on_lon_edge = np.isclose(points[:, :1], lon_edges[None]).any(axis=1)
    on_lat_edge = np.isclose(points[:, 1:], lat_edges[None]).any(axis=1)
    assert (on_lon_edge | on_lat_edge).all()
    # the boundary reaches the map's eastern edge (a contour stops half a cell short of it)
    assert np.isclose(points[:, 0].max(), lon_edges[-1])
    assert ax.get_xlim() == pytest.approx((lon_edges[0], lon_edges[-1]))
    plt.close(fig)


def test_colour_bar_has_units_and_arrows_where_colours_are_clipped(small_field) -> None:
    values, lat, lon, sea = small_field
    fig, (clipped, whole) = plt.subplots(1, 2)
    plots.draw_field(clipped, values, lat, lon, "zos", sea, limits=(-0.2, 0.2))
    plots.draw_field(whole, values, lat, lon, "uo", sea, limits=(-1.0, 1.0))
    bars = [ax for ax in fig.axes if ax not in (clipped, whole)]
    assert [bar.get_ylabel() for bar in bars] == ["m", "m s-1"]  # the CF units by default
    extends = [mesh.colorbar.extend for mesh in (clipped.collections[0], whole.collections[0])]
    assert extends == ["both", "neither"]
    plt.close(fig)


def test_rmse_vs_lead_draws_one_legend_outside_the_panels(monkeypatch) -> None:
    import xarray as xr

    from seacast.evaluation.evaluate import EvaluationResults

    saved = {}

    def keep(fig, path):
        saved["fig"] = fig
        return path

    monkeypatch.setattr(report, "_save", keep)

    def scores(scale: float) -> xr.Dataset:
        rmse = xr.DataArray(
            scale * np.ones((1, 2, 2)),
            dims=("variable", "lead_time", "group"),
            coords={"variable": ["zos"], "lead_time": [6, 12], "group": ["DJF", "MAM"]},
        )
        return xr.Dataset({"rmse": rmse, "count": xr.ones_like(rmse)})

    class Run:
        name, model, trainer = "r", "3ddr_unet", "backprop"
        metrics = {"model": scores(1.0), "persistence": scores(2.0), "tide": scores(1.5)}

    results = EvaluationResults.__new__(EvaluationResults)
    results.runs, results.groups, results.split = [Run()], ["DJF", "MAM"], "test"
    report.plot_rmse_vs_lead(results, None)
    fig = saved["fig"]
    assert all(ax.get_legend() is None for ax in fig.axes)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "3ddr_unet × backprop",
        "persistence",
        "tide",
    ]
    plt.close(fig)


def test_one_markdown_table_one_cf_table() -> None:
    assert report.markdown_table is reporting.markdown_table
    assert plots.CF_ATTRS is schema.CF_ATTRS
    for name, attrs in VARIABLE_ATTRS.items():
        variable = FORECAST_SERIES.get(name, (name,))[0]  # msl_06h: a fresher msl
        cf = schema.CF_ATTRS[variable]
        if variable == name:
            assert cf.items() <= attrs.items()
        else:
            assert (attrs["units"], attrs["standard_name"]) == (cf["units"], cf["standard_name"])


def test_markdown_table_from_rows_and_from_a_frame() -> None:
    import pandas as pd

    assert reporting.markdown_table(["a", "b"], [[1, 0.123456], ["x|y", None]]) == (
        "| a | b |\n|---|---|\n| 1 | 0.1235 |\n| x\\|y |  |"
    )
    frame = pd.DataFrame({"rmse": [0.5, float("nan")]}, index=["m", "n"])
    assert reporting.markdown_table(frame) == "|  | rmse |\n|---|---:|\n| m | 0.5 |\n| n | – |"
