"""Vertical wall segments and billboard props: the two primitives the renderer draws.

A wall segment is one face of a box standing on the ground (a building, a car,
a hedge); it stores its outward normal so that faces turned away from the
camera can be skipped, and a top profile (flat, gable, spire, car cabin) so
that roofs and car silhouettes need no extra primitive. A prop is a billboard
(tree, pole, sign, person) that always faces the camera.
"""

from __future__ import annotations

import numpy as np

# Columns of a segment row.
SX0, SY0, SX1, SY1, SNX, SNY, SLEN, SHEIGHT, SOWNER, SKIND, SROLE, SPROFILE, SPA, SPB, SPEXTRA = range(15)
SEGMENT_COLUMNS = 15

# What a segment belongs to (its material and class).
KIND_BUILDING, KIND_WALL, KIND_FENCE, KIND_HEDGE, KIND_VEHICLE = range(5)
# Which face of its owner: the front carries doors, shops and headlights.
ROLE_FRONT, ROLE_SIDE, ROLE_BACK = range(3)
# Top profiles: flat; gable (peak at mid-face); spire (narrow peak); cabin (vehicle body + cabin).
PROFILE_FLAT, PROFILE_GABLE, PROFILE_SPIRE, PROFILE_CABIN = range(4)

# Columns of a prop row.
PX, PY, PKIND, PWIDTH, PHEIGHT, PVARIANT, PFACING, PEXTRA = range(8)
PROP_COLUMNS = 8
PROP_TREE, PROP_LAMP, PROP_SIGN, PROP_TRAFFIC_LIGHT, PROP_PERSON = range(5)

# Outward normal of each face direction: south, north, west, east.
FACE_NORMALS = {"S": (0.0, -1.0), "N": (0.0, 1.0), "W": (-1.0, 0.0), "E": (1.0, 0.0)}


FACE_ORDER = ("S", "N", "W", "E")  # the opposite of face i is face i ^ 1


def box_segments(
    rects,
    fronts,
    heights,
    owners,
    kind: int,
    profile=PROFILE_FLAT,
    pa=0.0,
    pb=1.0,
    extra=0.0,
    side_profile: int | None = None,
) -> np.ndarray:
    """The four faces of each axis-aligned box: ``(4·V, 15)``, faces S, N, W, E per box.

    ``rects`` is ``(V, 4)`` (x0, y0, x1, y1) or one rectangle; ``fronts`` names
    the street-facing face of each box (S/N/W/E). The other arguments are
    scalars or ``(V,)`` arrays. Faces run left to right as seen from outside.
    """
    rects = np.atleast_2d(np.asarray(rects, np.float64))
    count = len(rects)
    x0, y0, x1, y1 = rects.T
    front = np.array([FACE_ORDER.index(f) for f in ([fronts] if isinstance(fronts, str) else fronts)])
    ends = np.stack(
        [
            np.stack([x0, y0, x1, y0], 1),
            np.stack([x1, y1, x0, y1], 1),
            np.stack([x0, y1, x0, y0], 1),
            np.stack([x1, y0, x1, y1], 1),
        ],
        1,
    )  # (V, 4 faces, 4)
    normals = np.array([FACE_NORMALS[f] for f in FACE_ORDER])
    face = np.arange(4)[None, :]
    role = np.where(face == front[:, None], ROLE_FRONT, np.where(face == (front[:, None] ^ 1), ROLE_BACK, ROLE_SIDE))
    out = np.empty((count, 4, SEGMENT_COLUMNS), np.float64)
    out[..., SX0 : SY1 + 1] = ends
    out[..., SNX : SNY + 1] = normals[None]
    out[..., SLEN] = np.abs(ends[..., 2] - ends[..., 0]) + np.abs(ends[..., 3] - ends[..., 1])
    out[..., SHEIGHT] = np.broadcast_to(np.asarray(heights, np.float64), (count,))[:, None]
    out[..., SOWNER] = np.broadcast_to(np.asarray(owners, np.float64), (count,))[:, None]
    out[..., SKIND] = kind
    out[..., SROLE] = role
    out[..., SPROFILE] = np.broadcast_to(np.asarray(profile, np.float64), (count,))[:, None]
    if side_profile is not None:
        out[..., SPROFILE] = np.where(role == ROLE_SIDE, side_profile, out[..., SPROFILE])
    for column, value in ((SPA, pa), (SPB, pb), (SPEXTRA, extra)):
        out[..., column] = np.broadcast_to(np.asarray(value, np.float64), (count,))[:, None]
    return out.reshape(count * 4, SEGMENT_COLUMNS)


def prop_row(
    x: float,
    y: float,
    kind: int,
    width: float,
    height: float,
    variant: int,
    facing_deg: float = 0.0,
    extra: float = 0.0,
) -> np.ndarray:
    """A billboard prop row ``(8,)``; ``facing_deg`` is the compass heading its front looks to."""
    return np.array([x, y, kind, width, height, variant, facing_deg, extra], dtype=np.float64)
