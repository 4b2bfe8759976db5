"""Render one view of the city: RGB image and Cityscapes-trainId class map.

Order of work: place the dynamic objects, cast the walls, cast the ground in
the rows below the horizon that no wall covers, draw the billboards with a
depth test, light everything for the condition, fill the sky, then apply the
image-space weather. The class map is the frame's class buffer, untouched by
lighting and weather.
"""

from __future__ import annotations

import numpy as np

from vprdistill.data.synth import classes as C
from vprdistill.data.synth import geometry as G
from vprdistill.data.synth.camera import Camera, View
from vprdistill.data.synth.conditions import Condition
from vprdistill.data.synth.dynamic import DynamicObjects, place_dynamic
from vprdistill.data.synth.facades import shade_buildings
from vprdistill.data.synth.frame import SURFACE_GROUND, SURFACE_SKY, SURFACE_WALL, Frame
from vprdistill.data.synth.ground import sample_ground
from vprdistill.data.synth.lighting import Lighting, lamp_light, lighting_for, sun_vector
from vprdistill.data.synth.raycast import WallPixels, cast_walls, cull_segments
from vprdistill.data.synth.shadows import shadow_map
from vprdistill.data.synth.sky import sky_colour
from vprdistill.data.synth.sprites import PropContext, draw_props
from vprdistill.data.synth.surfaces import shade_static_walls, shade_vehicles
from vprdistill.data.synth.weather import add_haze, add_rain, add_reflections, add_snowfall, finish
from vprdistill.data.synth.world import World

VIEW_RANGE_M = 220.0
PROP_RANGE_M = 140.0
LAMP_RANGE_M = 70.0


def _shade_walls(
    frame: Frame,
    walls: WallPixels,
    camera: Camera,
    world: World,
    dynamic: DynamicObjects,
    condition: Condition,
    lighting: Lighting,
    lit_seed: int,
) -> None:
    seg = walls.segment
    kind = seg[:, G.SKIND].astype(np.int64)
    owner = seg[:, G.SOWNER].astype(np.int64)
    length = seg[:, G.SLEN]
    fp = walls.depth / camera.focal
    n = len(walls.pixel)
    albedo = np.zeros((n, 3), np.float32)
    emissive = np.zeros((n, 3), np.float32)
    cls = np.full(n, C.BUILDING, np.uint8)

    building = kind == G.KIND_BUILDING
    if building.any():
        albedo[building], emissive[building] = shade_buildings(
            world.buildings[owner[building]], walls.take(building), fp[building], lighting.lights, lit_seed
        )
    vehicle = kind == G.KIND_VEHICLE
    if vehicle.any():
        cls[vehicle], albedo[vehicle], emissive[vehicle] = shade_vehicles(
            dynamic.vehicles, walls.take(vehicle), fp[vehicle], lighting.lights, condition.snowy_ground
        )
    other = ~building & ~vehicle
    if other.any():
        cls[other], albedo[other] = shade_static_walls(
            kind[other], walls.u[other], walls.z[other], fp[other], condition.season
        )

    t = walls.u / np.maximum(length, 1e-6)
    hit_x = seg[:, G.SX0] + t * (seg[:, G.SX1] - seg[:, G.SX0])
    hit_y = seg[:, G.SY0] + t * (seg[:, G.SY1] - seg[:, G.SY0])
    sun = sun_vector(lighting)
    facing_sun = np.maximum(seg[:, G.SNX] * sun[0] + seg[:, G.SNY] * sun[1], 0.0)
    facing_sun = np.where(walls.front, facing_sun, max(float(sun[2]), 0.0))  # vehicle roofs face up
    index = walls.pixel
    frame.flat("albedo")[index] = albedo
    frame.flat("emissive")[index] = emissive
    frame.flat("cls")[index] = cls
    frame.flat("depth")[index] = walls.depth
    frame.flat("world")[index] = np.stack([hit_x, hit_y, walls.z], axis=1)
    frame.flat("sun")[index] = facing_sun
    frame.flat("normal")[index] = np.where(walls.front[:, None], seg[:, [G.SNX, G.SNY]], 0.0)
    frame.flat("kind")[index] = SURFACE_WALL


def _shade_ground(frame: Frame, camera: Camera, world: World, condition: Condition, lighting: Lighting) -> None:
    rows = camera.row_centres[:, None]
    open_ground = (frame.kind == SURFACE_SKY) & (rows > camera.horizon + 0.05)
    py, px = np.nonzero(open_ground)
    view = camera.view
    depth = camera.focal * view.height / (camera.row_centres[py] - camera.horizon)
    x = view.x + depth * camera.ray_x[px]
    y = view.y + depth * camera.ray_y[px]
    # A ground pixel spans much more distance along the view than across it.
    fp = depth / camera.focal * np.maximum(1.0, depth / view.height)
    ground = sample_ground(world, x, y, fp, condition.season, condition.snowy_ground)
    albedo = ground.albedo
    if condition.weather == "rain":
        albedo = albedo * (1.0 - 0.45 * ground.wet)[:, None]
    frame.albedo[py, px] = albedo
    frame.cls[py, px] = ground.cls
    frame.depth[py, px] = depth
    frame.world[py, px] = np.stack([x, y, np.zeros_like(x)], axis=1)
    frame.sun[py, px] = max(float(sun_vector(lighting)[2]), 0.0)
    frame.wet[py, px] = ground.wet
    frame.kind[py, px] = SURFACE_GROUND


def _cast_shadows(frame: Frame, world: World, lighting: Lighting) -> None:
    """Scale the direct sunlight of every surface by how much of the sun it sees."""
    lit = frame.sun > 0
    if float(lighting.sun.sum()) < 0.05 or not lit.any():
        return
    shadows = shadow_map(world, lighting.sun_azimuth_deg, lighting.sun_elevation_deg)
    # Walls sample just outside themselves, so that a building does not shade its own face.
    point = frame.world[lit] + np.concatenate(
        [frame.normal[lit] * 0.4, np.zeros((int(lit.sum()), 1), np.float32)], axis=1
    )
    frame.sun[lit] *= shadows.lit(point[:, 0], point[:, 1], point[:, 2])


def _light(frame: Frame, camera: Camera, world: World, lighting: Lighting) -> np.ndarray:
    _cast_shadows(frame, world, lighting)
    light = lighting.ambient + lighting.sun * frame.sun[..., None]
    colour = frame.albedo * light + frame.emissive
    if lighting.lamp > 0:
        solid = frame.kind != SURFACE_SKY
        lamps = world.lamps_near(camera.view.x, camera.view.y, LAMP_RANGE_M)
        if len(lamps) and solid.any():
            colour[solid] += frame.albedo[solid] * lamp_light(frame.world[solid], lamps, lighting.lamp)
    return colour


def render_view(
    world: World, view: View, size: int, fov_deg: float, condition: Condition, image_seed: int, traversal_seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Render ``view`` under ``condition``: RGB ``(H, W, 3) uint8`` and class ids ``(H, W) uint8``.

    ``image_seed`` drives everything that changes from picture to picture
    (traffic, pedestrians, clouds, lit windows, rain); ``traversal_seed``
    drives the parked cars shared along one traversal.
    """
    rng = np.random.default_rng(image_seed)
    camera = Camera(view, size, fov_deg)
    lighting = lighting_for(condition)
    dynamic = place_dynamic(world, view, traversal_seed, rng)
    segments = np.concatenate([world.segments_near(view.x, view.y, VIEW_RANGE_M), dynamic.segments])
    frame = Frame(size)
    walls = cast_walls(cull_segments(segments, camera, VIEW_RANGE_M), camera, max_depth=VIEW_RANGE_M)
    _shade_walls(frame, walls, camera, world, dynamic, condition, lighting, lit_seed=int(rng.integers(1 << 30)))
    _shade_ground(frame, camera, world, condition, lighting)
    props = np.concatenate([world.props_near(view.x, view.y, PROP_RANGE_M), dynamic.props])
    ctx = PropContext(camera, condition.season, condition.snowy_ground, lighting.lights, int(rng.integers(3)))
    draw_props(frame, props, ctx, max_depth=PROP_RANGE_M)

    colour = _light(frame, camera, world, lighting)
    sky = frame.kind == SURFACE_SKY
    sy, sx = np.nonzero(sky)
    colour[sy, sx] = sky_colour(camera, sy, sx, lighting, cloud_seed=int(rng.integers(1 << 30)))
    frame.cls[sky] = C.SKY
    if condition.weather == "rain":
        colour = add_reflections(colour, frame, camera.horizon, 1.0)
    colour = add_haze(colour, frame, lighting)
    brightness = {"day": 1.0, "dusk": 0.7, "night": 0.35}[condition.time]
    if condition.weather == "rain":
        colour = add_rain(colour, rng, brightness)
    elif condition.weather == "snow":
        colour = add_snowfall(colour, rng, brightness)
    return finish(colour, rng, lighting), frame.cls
