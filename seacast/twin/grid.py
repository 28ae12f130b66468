"""The twin's grid: cell centres of the configured box, land, bathymetry and metrics.

Offers :class:`TwinGrid` (built by :func:`build_grid`), which holds the sea mask
(real coastline from ``global-land-mask``, enclosed lakes removed), depths that
deepen with distance from the coast, the spherical C-grid metrics and the open
boundary faces, and :func:`nearest_sea_cell`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from global_land_mask import globe
from scipy import ndimage

from seacast.errors import ConfigError

EARTH_RADIUS = 6.371e6  # m
OMEGA = 7.2921e-5  # rad/s
GRAVITY = 9.81  # m/s2

DEPTH_COAST = 10.0  # m, at the coastline
DEPTH_OFFSHORE = 45.0  # m, far from any coast
DEPTH_SCALE_KM = 35.0  # e-folding distance of the shoaling towards the coast

# Rhine/Meuse mouth (Nieuwe Waterweg near Hoek van Holland)
RIVER_MOUTH = (52.0, 4.1)


# Waters that the 1 km coastline counts as sea but that are dammed off from it (IJsselmeer
# and Markermeer behind the Afsluitdijk and Houtribdijk). At the twin's 5-10 km cells the
# dams are not resolved, so the lakes would tidally connect to the Wadden Sea.
def _dammed_lakes(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    afsluitdijk = 52.93 + 0.46 * (lon - 5.03)  # line Den Oever -> Zurich
    return (lat >= 52.25) & (lat < afsluitdijk) & (lon >= 4.95) & (lon <= 6.0)


@dataclass
class OpenBoundary:
    """The open faces of the basin, as flat indices into the face arrays.

    ``sign`` is +1 where the outward normal points along +x/+y (east, north edges)
    and -1 on the west and south edges; ``perimeter_m`` is the distance along the
    box edge, anticlockwise from the south-west corner northwards (the tide's path).
    """

    u_faces: np.ndarray  # flat indices into the (ny, nx+1) u array
    u_cells: np.ndarray  # flat indices of the adjoining sea cell
    u_sign: np.ndarray
    v_faces: np.ndarray  # flat indices into the (ny+1, nx) v array
    v_cells: np.ndarray
    v_sign: np.ndarray
    perimeter_m: np.ndarray  # per boundary cell: u cells first, then v cells
    depth: np.ndarray  # rest depth of the adjoining cell, same order

    @property
    def cells(self) -> np.ndarray:
        return np.concatenate([self.u_cells, self.v_cells])

    @property
    def size(self) -> int:
        return len(self.u_cells) + len(self.v_cells)


@dataclass
class TwinGrid:
    """A regular lat/lon box on an Arakawa C-grid (eta at centres, u/v on faces)."""

    lat: np.ndarray  # (ny,) cell-centre latitudes
    lon: np.ndarray  # (nx,) cell-centre longitudes
    sea: np.ndarray  # (ny, nx) bool
    depth: np.ndarray  # (ny, nx) rest depth in m (NaN-free; land holds DEPTH_COAST)
    coast_distance_km: np.ndarray  # (ny, nx)
    dx: np.ndarray  # (ny,) zonal cell width at centres, m
    dx_v: np.ndarray  # (ny+1,) zonal width at the v faces (cell south/north edges), m
    dy: float  # meridional cell height, m
    area: np.ndarray  # (ny, nx) cell area, m2
    boundary: OpenBoundary
    river_cell: tuple[int, int] | None
    closed: bool
    wet_u: np.ndarray = field(repr=False)  # (ny, nx+1) interior faces between two sea cells
    wet_v: np.ndarray = field(repr=False)  # (ny+1, nx)

    @property
    def shape(self) -> tuple[int, int]:
        return self.sea.shape

    @property
    def lat_faces(self) -> np.ndarray:
        """Latitudes of the v faces (ny+1)."""
        half = 0.5 * (self.lat[1] - self.lat[0]) if len(self.lat) > 1 else 0.5
        return np.concatenate([self.lat - half, self.lat[-1:] + half])

    def sea_volume(self, eta: np.ndarray) -> float:
        """Water volume above the rest level (m3): sum of eta times cell area over sea."""
        return float(np.sum(np.where(self.sea, eta, 0.0) * self.area))


def nearest_sea_cell(
    grid: TwinGrid, lat: float, lon: float, coastal: bool = False
) -> tuple[int, int]:
    """Index (j, i) of the sea cell nearest to (lat, lon); with ``coastal``, only cells touching land."""
    candidates = grid.sea.copy()
    if coastal:
        land = ~grid.sea
        near_land = ndimage.binary_dilation(land, structure=np.ones((3, 3), bool)) & grid.sea
        if near_land.any():
            candidates = near_land
    lat2, lon2 = np.meshgrid(grid.lat, grid.lon, indexing="ij")
    dist2 = (lat2 - lat) ** 2 + ((lon2 - lon) * np.cos(np.deg2rad(lat))) ** 2
    dist2 = np.where(candidates, dist2, np.inf)
    j, i = np.unravel_index(int(np.argmin(dist2)), dist2.shape)
    return int(j), int(i)


def build_grid(
    lat_min: float,
    lat_max: float,
    lon_min: float,
    lon_max: float,
    shape: tuple[int, int],
    closed: bool = False,
    river: bool = True,
) -> TwinGrid:
    """Build the grid of a box: coastline, connected basin, depths, metrics, open faces."""
    ny, nx = shape
    if ny < 8 or nx < 8:
        raise ConfigError(
            f"twin.shape {shape} is too small", "use at least 8x8 cells, e.g. twin.shape=[32, 32]"
        )
    dlat = (lat_max - lat_min) / ny
    dlon = (lon_max - lon_min) / nx
    lat = lat_min + (np.arange(ny) + 0.5) * dlat
    lon = lon_min + (np.arange(nx) + 0.5) * dlon
    lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
    lon_wrapped = ((lon2 + 180.0) % 360.0) - 180.0
    sea = _connected_sea(~globe.is_land(lat2, lon_wrapped) & ~_dammed_lakes(lat2, lon_wrapped))
    if sea.sum() < 16:
        raise ConfigError(
            f"the box {lat_min}-{lat_max}N {lon_min}-{lon_max}E holds almost no sea connected to its edges",
            "move bbox so that it covers open sea, e.g. the default Dutch coast 51-55N 2.5-7.5E",
        )

    dy = EARTH_RADIUS * np.deg2rad(dlat)
    coslat = np.cos(np.deg2rad(lat))
    dx = EARTH_RADIUS * np.deg2rad(dlon) * coslat
    lat_faces = np.concatenate([lat - 0.5 * dlat, lat[-1:] + 0.5 * dlat])
    dx_v = EARTH_RADIUS * np.deg2rad(dlon) * np.cos(np.deg2rad(lat_faces))
    area = dx[:, None] * dy * np.ones((1, nx))
    coast_km, depth = _coast_distance_and_depth(sea, dx, dy)

    wet_u = np.zeros((ny, nx + 1), bool)
    wet_u[:, 1:-1] = sea[:, :-1] & sea[:, 1:]
    wet_v = np.zeros((ny + 1, nx), bool)
    wet_v[1:-1, :] = sea[:-1, :] & sea[1:, :]

    boundary = _open_boundary(sea, depth, dx, dy, closed)
    grid = TwinGrid(
        lat=lat,
        lon=lon,
        sea=sea,
        depth=depth,
        coast_distance_km=coast_km,
        dx=dx,
        dx_v=dx_v,
        dy=float(dy),
        area=area,
        boundary=boundary,
        river_cell=None,
        closed=closed,
        wet_u=wet_u,
        wet_v=wet_v,
    )
    if river and lat_min <= RIVER_MOUTH[0] <= lat_max and lon_min <= RIVER_MOUTH[1] <= lon_max:
        grid.river_cell = nearest_sea_cell(grid, *RIVER_MOUTH, coastal=True)
    return grid


def _connected_sea(sea: np.ndarray) -> np.ndarray:
    """Only the water connected to the box edges: that is the sea the tide reaches."""
    labels, _count = ndimage.label(sea)
    edge = np.zeros_like(sea)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
    connected = np.unique(labels[edge & sea])
    connected = connected[connected > 0]
    return np.isin(labels, connected)


def _coast_distance_and_depth(
    sea: np.ndarray, dx: np.ndarray, dy: float
) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the coast on the grid (km), and the depth that shoals towards it.

    Land outside the box is unknown, so only the coastline inside the box shoals the sea
    (edges of an all-sea box stay deep).
    """
    land = ~sea
    if land.any():
        coast_km = ndimage.distance_transform_edt(
            ~land, sampling=(dy / 1e3, float(dx.mean()) / 1e3)
        )
    else:
        coast_km = np.full(sea.shape, 1e3)
    depth = DEPTH_COAST + (DEPTH_OFFSHORE - DEPTH_COAST) * (
        1.0 - np.exp(-np.maximum(coast_km - 0.5 * dy / 1e3, 0.0) / DEPTH_SCALE_KM)
    )
    return coast_km, np.where(sea, depth, DEPTH_COAST)


def _open_boundary(
    sea: np.ndarray, depth: np.ndarray, dx: np.ndarray, dy: float, closed: bool
) -> OpenBoundary:
    """Every sea cell on the box edge opens outwards, unless the basin is closed."""
    ny, nx = sea.shape
    empty = np.zeros(0, int)
    if closed:
        return OpenBoundary(empty, empty, empty, empty, empty, empty, np.zeros(0), np.zeros(0))
    height = ny * dy
    width_north = nx * dx[-1]
    jj = np.arange(ny)
    ii = np.arange(nx)
    # west edge: u face i=0, perimeter runs north from the SW corner
    west = jj[sea[:, 0]]
    # east edge: u face i=nx; perimeter continues from the NE corner southwards
    east = jj[sea[:, -1]]
    # north edge: v face j=ny
    north = ii[sea[-1, :]]
    # south edge: v face j=0; it lies "before" the SW corner on the tide's path
    south = ii[sea[0, :]]
    u_faces = np.concatenate([west * (nx + 1) + 0, east * (nx + 1) + nx])
    u_cells = np.concatenate([west * nx + 0, east * nx + nx - 1])
    u_sign = np.concatenate([-np.ones(len(west)), np.ones(len(east))])
    v_faces = np.concatenate([ny * nx + north, 0 * nx + south])
    v_cells = np.concatenate([(ny - 1) * nx + north, 0 * nx + south])
    v_sign = np.concatenate([np.ones(len(north)), -np.ones(len(south))])
    s_west = (west + 0.5) * dy
    s_east = height + width_north + (ny - 0.5 - east) * dy
    s_north = height + (north + 0.5) * dx[-1]
    s_south = -(south + 0.5) * dx[0]
    perimeter = np.concatenate([s_west, s_east, s_north, s_south])
    cells = np.concatenate([u_cells, v_cells])
    return OpenBoundary(
        u_faces=u_faces.astype(int),
        u_cells=u_cells.astype(int),
        u_sign=u_sign,
        v_faces=v_faces.astype(int),
        v_cells=v_cells.astype(int),
        v_sign=v_sign,
        perimeter_m=perimeter,
        depth=depth.ravel()[cells],
    )
