import numpy as np

from stages.core.color import crop_dark_border, shades_of_gray


def test_shades_of_gray_neutralises_a_colour_cast():
    rng = np.random.default_rng(0)
    scene = rng.uniform(60, 200, (32, 32, 1)).repeat(3, axis=2)  # a grey scene
    bluish = np.clip(scene * np.array([0.7, 0.85, 1.2]), 0, 255).astype(np.uint8)
    corrected = shades_of_gray(bluish).astype(float)
    means = corrected.mean(axis=(0, 1))
    assert means.max() / means.min() < 1.05  # channels balanced again
    cast = bluish.astype(float).mean(axis=(0, 1))
    assert cast.max() / cast.min() > 1.5


def test_shades_of_gray_keeps_a_neutral_image_and_dtype():
    grey = np.full((8, 8, 3), 128, np.uint8)
    out = shades_of_gray(grey)
    assert out.dtype == np.uint8 and np.abs(out.astype(int) - 128).max() <= 1


def test_dark_ring_is_cropped_but_a_dark_lesion_is_not():
    size = 100
    y, x = np.mgrid[:size, :size]
    inside = (y - 50) ** 2 + (x - 50) ** 2 < 45**2
    ringed = np.where(inside[..., None], 180, 5).astype(np.uint8).repeat(3, axis=2)
    cropped = crop_dark_border(ringed)
    assert cropped.shape[0] < size and cropped.shape[1] < size
    assert cropped.shape[0] > 0.6 * size
    assert crop_dark_border(ringed)[..., 0].mean() > ringed[..., 0].mean()

    lesion = np.full((size, size, 3), 190, np.uint8)
    lesion[20:80, 20:80] = 10  # a large dark lesion in the middle, no ring
    assert crop_dark_border(lesion).shape == lesion.shape
