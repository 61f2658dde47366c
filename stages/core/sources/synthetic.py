"""Seeded generator of dermoscopy-like images, so the pipeline runs offline.

Every lesion draws the four ABCD-rule attributes (Asymmetry, Border irregularity, Colour
variety, Diameter) from class-dependent Beta distributions that overlap on purpose, and every
image adds nuisance variation (skin tone, lighting, blur, vignette, hairs). The task is thus
learnable but not separable by any single feature. Output mimics the isic-cli layout: one JPEG
per image plus metadata.csv and attribution.txt.

Class balance: exactly round(count * malignant_fraction) malignant images, clamped to
[1, count - 1] so both classes exist. When only twice-imaged lesions are left to fill the last
slot the count misses by one: one below target, or one above when the target is a single image.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

COLUMNS = ["isic_id", "attribution", "copyright_license", "benign_malignant", "diagnosis",
           "lesion_id", "patient_id"]
ATTRIBUTION = "Synthetic (skin-lesion pipeline generator)"
LICENSE = "CC-0"
JPEG_QUALITY = 92

# Beta(a, b) for each ABCD attribute in [0, 1], by class (False = benign): overlapping tails.
_ATTRIBUTE_BETA = {False: (2.0, 3.75), True: (3.75, 2.2)}
_LIGHT_SKIN = np.array([238, 200, 178], np.float32)
_DARK_SKIN = np.array([140, 94, 66], np.float32)
# Melanoma-typical extra colours: black, blue-grey, red-ish, white regression, dark brown.
_EXTRA_COLOURS = np.array([[35, 25, 25], [100, 112, 135], [175, 72, 70], [228, 218, 212],
                           [75, 42, 28]], np.float32)


def _validate(count: int, size: int, malignant_fraction: float, seed: int,
              repeat_fraction: float) -> None:
    if count < 2:
        raise ValueError(f"count must be >= 2, got {count}")
    if size < 32:
        raise ValueError(f"size must be >= 32, got {size}")
    if not 0 < malignant_fraction < 1:
        raise ValueError(f"malignant_fraction must be in (0, 1), got {malignant_fraction}")
    if not 0 <= repeat_fraction < 1:
        raise ValueError(f"repeat_fraction must be in [0, 1), got {repeat_fraction}")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _plan(rng: np.random.Generator, count: int, malignant_fraction: float,
          repeat_fraction: float) -> dict[str, np.ndarray]:
    """Decide lesions, their class, how often each is imaged, and which patient has it."""
    n_lesions = max(round(count / (1 + repeat_fraction)), 2)  # two, so both classes fit
    shots = np.ones(n_lesions, int)
    shots[rng.choice(n_lesions, count - n_lesions, replace=False)] = 2
    # Fill the malignant image budget lesion by lesion; skipping lesions that overshoot keeps
    # the count exact whenever a once-imaged lesion is still available.
    target = min(max(round(count * malignant_fraction), 1), count - 1)
    malignant, total = np.zeros(n_lesions, bool), 0
    for i in rng.permutation(n_lesions):
        if total + shots[i] <= target:
            malignant[i], total = True, total + shots[i]
    if total == 0:  # the target was one image but every lesion is imaged twice
        malignant[0] = True
    patient = np.empty(n_lesions, int)
    order, start, n_patients = rng.permutation(n_lesions), 0, 0
    while start < n_lesions:  # patients hold 1-3 lesions
        stop = start + int(rng.integers(1, 4))
        patient[order[start:stop]], start, n_patients = n_patients, stop, n_patients + 1
    tone = rng.beta(1.6, 2.6, n_patients)  # skewed light, as in ISIC
    return {"shots": shots, "malignant": malignant, "patient": patient, "tone": tone}


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [0, 1]: a coarse random grid, bicubically upsampled."""
    coarse = Image.fromarray(rng.random((cells, cells), dtype=np.float32))
    return np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC))


def _polar_grid(size: int, cx: float = 0.0, cy: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Distance and angle of every pixel from the point (cx, cy) relative to the centre."""
    axis = np.arange(size, dtype=np.float32) - (size - 1) / 2
    y, x = axis[:, None], axis[None, :]
    return np.hypot(x - cx, y - cy), np.arctan2(y - cy, x - cx)


_centred_grid = lru_cache(maxsize=4)(_polar_grid)


def _lesion_outline(rng: np.random.Generator, asym: float, border: float) -> np.ndarray:
    """Relative radius at 720 angles: oval base, low harmonics for asymmetry, high for notches."""
    angles = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    profile = 1 + rng.uniform(0, 0.2) * np.cos(2 * (angles - rng.uniform(0, np.pi)))
    for k in (2, 3, 4):  # random-phase mix of these harmonics breaks every mirror axis
        profile += asym * rng.uniform(0.06, 0.16) * np.cos(k * angles + rng.uniform(0, 2 * np.pi))
    ks = np.arange(5, 32)[:, None]  # steep fall-off: lobes and notches rather than a star
    amps = border * 0.5 * rng.random((len(ks), 1)) / ks**1.2
    profile += (amps * np.cos(ks * angles + rng.uniform(0, 2 * np.pi, (len(ks), 1)))).sum(0)
    return profile.astype(np.float32)


def _lesion_layer(rng: np.random.Generator, malignant: bool, size: int) -> Image.Image:
    """Render one lesion as a tight RGBA tile; repeat images rotate/shift this same tile."""
    # Python floats, not numpy float64 scalars, keep every image array in float32.
    asym, border, colour, diam = rng.beta(*_ATTRIBUTE_BETA[malignant], 4).tolist()
    radius, softness = size * (0.07 + 0.18 * diam), size * rng.uniform(0.006, 0.03)
    profile = _lesion_outline(rng, asym, border)
    tile = 2 * int(radius * profile.max() + 2 * softness + 2)  # only the lesion, for speed
    dist, theta = _polar_grid(tile)
    outline = radius * profile[(theta * (360 / np.pi)).astype(int) % 720]
    alpha = np.clip((outline - dist) / softness, 0, 1) * rng.uniform(0.8, 0.97)
    # Pigment is densest around a centre that drifts off-centre with asymmetry.
    cx, cy = asym * 0.45 * radius * rng.normal(size=2) / 1.4
    rel = np.clip(_polar_grid(tile, float(cx), float(cy))[0] / np.maximum(outline, 1), 0, 1)
    base = np.array([170, 110, 72], np.float32) * rng.uniform(0.6, 1.05)
    dark = base * rng.uniform(0.5, 0.8)
    mix = (1 - rel) * rng.uniform(0.3, 1) + 0.5 * (_smooth_noise(rng, tile, 4) - 0.5)
    rgb = base + (dark - base) * np.clip(mix, 0, 1)[..., None]
    fine_cells = max(tile * 36 // size, 5)  # about 7 px per cell at 256 px, whatever the tile
    rgb *= 1 + 0.12 * (_smooth_noise(rng, tile, fine_cells)[..., None] - 0.5)
    # A pigment network: dark meshes along the contour lines of mid-frequency noise.
    mesh = np.abs(_smooth_noise(rng, tile, fine_cells) - 0.5)
    rgb *= 1 - rng.uniform(0, 0.25) * np.clip(1 - mesh / 0.1, 0, 1)[..., None]
    for extra in _EXTRA_COLOURS:  # colour variety: each extra colour as a soft-edged blotch
        if rng.random() < 0.85 * colour**2:
            patch = _smooth_noise(rng, tile, int(rng.integers(3, 7))) - rng.uniform(0.45, 0.75)
            weight = np.clip(patch * 4, 0, 1) * rng.uniform(0.4, 0.8)
            rgb += (extra - rgb) * weight[..., None]
    rgba = np.dstack([rgb, alpha[..., None] * 255])
    return Image.fromarray(np.clip(rgba, 0, 255).astype(np.uint8), "RGBA")


def _skin(rng: np.random.Generator, size: int, tone: float) -> tuple[np.ndarray, np.ndarray]:
    """Skin-toned background: slow colour drift, redness blotches, fine texture."""
    base = _LIGHT_SKIN + (_DARK_SKIN - _LIGHT_SKIN) * min(max(tone + rng.normal(0, 0.04), 0), 1)
    drift = 1 + 0.14 * (_smooth_noise(rng, size, 3) - 0.5)
    redness = (_smooth_noise(rng, size, 5) - 0.5)[..., None] * np.float32([18, -11, -11])
    grain = rng.random((size, size, 3), np.float32)  # uniform: 5x cheaper than normal, looks alike
    grain = 9 * grain[..., :1] + 4 * grain - 6.5  # mostly luminance grain, a little chroma
    return base * drift[..., None] + redness + grain, base


def _draw_hairs(rng: np.random.Generator, image: Image.Image) -> None:
    """Thin dark hairs as quadratic Bezier curves; about a third of images are hairless."""
    if rng.random() < 0.35:
        return
    size, draw = image.width, ImageDraw.Draw(image)
    t = np.linspace(0, 1, 24)[:, None]
    for _ in range(int(rng.integers(1, 25))):
        start = rng.uniform(-0.1, 1.1, 2) * size
        end = start + rng.normal(0, 0.45, 2) * size
        bend = (start + end) / 2 + rng.normal(0, 0.15, 2) * size
        points = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t**2 * end
        shade = tuple(int(v) for v in rng.uniform(20, 75) * np.array([1, 0.75, 0.6]))
        width = max(1, round(size / 256 * rng.uniform(0.6, 2.2)))
        draw.line([tuple(p) for p in points], fill=shade, width=width)


def _render(rng: np.random.Generator, lesion: Image.Image, tone: float,
            dist: np.ndarray) -> Image.Image:
    size = dist.shape[0]
    skin, base = _skin(rng, size, tone)
    tile = lesion.rotate(rng.uniform(0, 360), Image.Resampling.BILINEAR, expand=True)
    corner = (size - np.array(tile.size)) // 2 + (rng.uniform(-0.12, 0.12, 2) * size).astype(int)
    placed = Image.new("RGBA", (size, size))
    placed.paste(tile, tuple(corner.tolist()))
    layer = np.asarray(placed, np.float32)
    alpha = layer[..., 3:] / 255
    # Darker skin carries darker lesions, and skin texture shows through the pigment.
    # Blend as skin * (1 - a + a * pigment / base), i.e. skin * (1 + a * (pigment / base - 1)).
    pigment = layer[..., :3] * ((base / _LIGHT_SKIN) ** 0.7 / base) - 1
    pixels = skin * (1 + alpha * pigment)
    contrast, brightness = rng.uniform(0.8, 1.2), rng.uniform(0.85, 1.15)
    pixels = pixels * contrast + pixels.mean() * (brightness - contrast)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    _draw_hairs(rng, image)
    if rng.random() < 0.75:  # the dermoscope's circular field of view darkens the corners
        radius, soft = size * rng.uniform(0.47, 0.72), size * rng.uniform(0.01, 0.08)
        dim = rng.uniform(0.85, 1.0) / (1 + np.exp(-(dist - radius) / soft))
        image = Image.fromarray((np.asarray(image) * (1 - dim[..., None])).astype(np.uint8))
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 1.2) * size / 256))
    return image


def generate(out_dir: Path, count: int, size: int, malignant_fraction: float, seed: int,
             repeat_fraction: float = 0.1) -> pd.DataFrame:
    """Write `count` JPEGs + metadata.csv + attribution.txt into out_dir (ISIC isic-cli
    layout); return the metadata frame."""
    _validate(count, size, malignant_fraction, seed, repeat_fraction)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("SYN_*.jpg"):  # a smaller rerun must not leave old images behind
        stale.unlink()
    rng = np.random.default_rng(seed)
    plan = _plan(rng, count, malignant_fraction, repeat_fraction)
    image_ids = iter(rng.permutation(count))  # shuffle so repeats are not neighbours
    dist, _ = _centred_grid(size)
    rows = []
    for lesion_no, shots in enumerate(plan["shots"]):
        malignant, patient = bool(plan["malignant"][lesion_no]), plan["patient"][lesion_no]
        lesion = _lesion_layer(np.random.default_rng([seed, 1, lesion_no]), malignant, size)
        for _ in range(shots):
            image_no = int(next(image_ids))
            image = _render(np.random.default_rng([seed, 2, image_no]), lesion,
                            float(plan["tone"][patient]), dist)
            isic_id = f"SYN_{image_no:07d}"
            image.save(out_dir / f"{isic_id}.jpg", quality=JPEG_QUALITY)
            rows.append([isic_id, ATTRIBUTION, LICENSE, "malignant" if malignant else "benign",
                         "melanoma" if malignant else "nevus", f"SYN_L{lesion_no:06d}",
                         f"SYN_P{patient:05d}"])
    frame = pd.DataFrame(rows, columns=COLUMNS).sort_values("isic_id", ignore_index=True)
    frame.to_csv(out_dir / "metadata.csv", index=False)
    (out_dir / "attribution.txt").write_text(
        "Synthetic dermoscopy-like images generated by this project's skin-lesion pipeline"
        " generator; released under CC0 (CC-0).\n")
    return frame
