"""Label sets shared by the face datasets, parsers and attribute heads.

Every list below is in *index order*: position ``i`` is the name of class ``i``. Names are the package's canonical
spelling (snake_case, no abbreviations); converters and processors should rely on the indices, never on the names
used by an original repository (facer, for example, names classes after the image side; see ORIGINALS.md §3).

Left and right always mean **the subject's** left and right, as in the CelebAMask-HQ part files (``l_eye``, ``r_brow``,
...). In an unmirrored frontal photo, ``left_eye`` therefore lies on the *image-right* side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


# CelebAMask-HQ, "order A": the 19-class index order used by FaRL, facer and SegFace. The label image is painted in
# this order (later classes overwrite earlier ones). The official merged label maps and DML-CSR use a different order
# ("order B"); remap before mixing the two.
CELEBAMASK_HQ_LABELS: tuple[str, ...] = (
    "background",  # 0
    "neck",  # 1   CelebAMask-HQ file suffix `neck`
    "skin",  # 2   `skin`; facer/FaRL call it `face`
    "cloth",  # 3   `cloth`
    "left_ear",  # 4   `l_ear`
    "right_ear",  # 5   `r_ear`
    "left_eyebrow",  # 6   `l_brow`
    "right_eyebrow",  # 7   `r_brow`
    "left_eye",  # 8   `l_eye`
    "right_eye",  # 9   `r_eye`
    "nose",  # 10  `nose`
    "inner_mouth",  # 11  `mouth`: the area between the lips
    "lower_lip",  # 12  `l_lip` (l = lower, not left)
    "upper_lip",  # 13  `u_lip`
    "hair",  # 14  `hair`
    "eyeglasses",  # 15  `eye_g`
    "hat",  # 16  `hat`
    "earring",  # 17  `ear_r`
    "necklace",  # 18  `neck_l`
)

# LaPa, 11 classes, in the dataset's index order.
LAPA_LABELS: tuple[str, ...] = (
    "background",  # 0
    "skin",  # 1
    "left_eyebrow",  # 2
    "right_eyebrow",  # 3
    "left_eye",  # 4
    "right_eye",  # 5
    "nose",  # 6
    "upper_lip",  # 7
    "inner_mouth",  # 8
    "lower_lip",  # 9
    "hair",  # 10
)

# Helen as relabeled by Lin et al. (the version SegFace and DML-CSR use): the same 11 classes in the same order as
# LaPa. Kept as its own constant because the two datasets are annotated differently and may diverge in the future.
HELEN_LABELS: tuple[str, ...] = (
    "background",  # 0
    "skin",  # 1  ("face" in SegFace)
    "left_eyebrow",  # 2
    "right_eyebrow",  # 3
    "left_eye",  # 4
    "right_eye",  # 5
    "nose",  # 6
    "upper_lip",  # 7
    "inner_mouth",  # 8
    "lower_lip",  # 9
    "hair",  # 10
)


def _lookup_table(source: Sequence[str], target: Sequence[str], merges: dict[str, str]) -> np.ndarray:
    """Builds a `uint8` table of length `len(source)` mapping each source class id to a target class id.

    A source class whose name exists in `target` maps to it; every other source class must appear in `merges`, which
    names the target class it is folded into.
    """
    table = np.zeros(len(source), dtype=np.uint8)
    for source_id, name in enumerate(source):
        target_name = name if name in target else merges[name]
        table[source_id] = target.index(target_name)
    return table


# How the 8 CelebAMask-HQ classes without a LaPa/Helen counterpart are folded. LaPa and Helen annotate the face itself:
# skin, the inner facial parts and the hair; everything else is background.
_CELEBAMASK_TO_11_CLASS_MERGES: dict[str, str] = {
    # The neck is not part of the face skin in LaPa/Helen (their skin class stops at the jaw line).
    "neck": "background",
    # Clothing and the worn accessories below are not facial parts; LaPa/Helen have no accessory classes.
    "cloth": "background",
    # Ears are folded into skin: FaRL's LaPa scorer names the skin class `face_lr_rr`, i.e. face + both ears.
    "left_ear": "skin",
    "right_ear": "skin",
    # Only the frames are painted as eyeglasses by the synthetic generator and they rest on the skin around the eyes
    # and on the nose bridge, so skin is the closest part. (Real CelebAMask-HQ glasses masks also cover the lenses;
    # there the eyes under the lenses cannot be recovered by a lookup table.)
    "eyeglasses": "skin",
    # A hat covers hair or forehead, but it is neither: LaPa/Helen leave headwear unlabelled (background).
    "hat": "background",
    # Earrings hang below the ear lobe, mostly over the neck or background: background.
    "earring": "background",
    # The necklace lies on the neck or the clothes, both background here.
    "necklace": "background",
}

# Left maps to left with no mirroring. That LaPa/Helen "left" is also the subject's left is inferred, not measured:
# facer renames CelebAMask-HQ `l_eye` (verified to lie image-right) and LaPa/Helen index 4 identically (`re`), which
# only holds if both datasets put index 4 on the same side.
CELEBAMASK_TO_LAPA: np.ndarray = _lookup_table(CELEBAMASK_HQ_LABELS, LAPA_LABELS, _CELEBAMASK_TO_11_CLASS_MERGES)
CELEBAMASK_TO_HELEN: np.ndarray = _lookup_table(CELEBAMASK_HQ_LABELS, HELEN_LABELS, _CELEBAMASK_TO_11_CLASS_MERGES)

# The 40 CelebA attributes in the order of the official `list_attr_celeba.txt` header (values are 1 / -1).
CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
)

# The 5-point order used for alignment (ArcFace / FaRL templates): image-left eye first. In an unmirrored photo the
# image-left eye is the subject's *right* eye. These are the iBUG-68 reductions of each point.
LANDMARKS_5_NAMES: tuple[str, ...] = (
    "image_left_eye_centre",  # subject's right eye: mean of iBUG points 36-41
    "image_right_eye_centre",  # subject's left eye: mean of iBUG points 42-47
    "nose_tip",  # iBUG point 30
    "image_left_mouth_corner",  # iBUG point 48
    "image_right_mouth_corner",  # iBUG point 54
)


def id2label(labels: Sequence[str]) -> dict[int, str]:
    """Returns the `{class_id: name}` mapping expected by `PreTrainedConfig.id2label`.

    Example:

    ```python
    >>> id2label(LAPA_LABELS)[4]
    'left_eye'

    ```
    """
    return dict(enumerate(labels))
