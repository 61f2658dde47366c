"""Label normalization: every source's labels -> canonical (benign_malignant, diagnosis).

Vocabulary (``DIAGNOSES``): the eight ISIC 2019 classes plus "other" (ISIC 2019 "UNK: none of
the others" — a known diagnosis outside the eight). "" means the diagnosis is unknown.
Sources: ISIC 2018 Task 3 / HAM10000 class definitions, ISIC 2019 classes, and the ISIC
archive vocabularies in github.com/ImageMarkup/isic-metadata (``fields.py`` legacy
``diagnosis``, ``diagnosis_hierarchical.py`` for diagnosis_1..5).

Every function returns a frame aligned to its input with columns ``benign_malignant``,
``diagnosis`` and ``reason``. A non-empty ``reason`` means "do not use this row" (unknown
string, bad one-hot row, no label at all); unknown strings are never guessed.
"""

from __future__ import annotations

import pandas as pd

MEL, NV, BCC, SCC = "melanoma", "nevus", "basal cell carcinoma", "squamous cell carcinoma"
AK, BKL, DF, VASC = "actinic keratosis", "benign keratosis", "dermatofibroma", "vascular lesion"
OTHER = "other"
DIAGNOSES = (MEL, NV, BCC, SCC, AK, BKL, DF, VASC, OTHER)
LABEL_COLUMNS = ["benign_malignant", "diagnosis", "reason"]

# Class -> benign_malignant when the source gives none. Actinic keratosis is left out on
# purpose: ISIC files it under "Indeterminate", so only HAM/challenge codes set it (below).
IMPLIED_BM = {MEL: "malignant", BCC: "malignant", SCC: "malignant",
              NV: "benign", BKL: "benign", DF: "benign", VASC: "benign"}

# HAM10000 dx and ISIC 2018/2019 one-hot codes. akiec/AK ("actinic keratoses and
# intraepithelial carcinoma / Bowen's disease") count as malignant, the usual convention for
# HAM10000 (mel, bcc, akiec = malignant); UNK is "none of the others", malignancy unknown.
CODES = {"mel": (MEL, "malignant"), "nv": (NV, "benign"), "bcc": (BCC, "malignant"),
         "akiec": (AK, "malignant"), "ak": (AK, "malignant"), "bkl": (BKL, "benign"),
         "df": (DF, "benign"), "vasc": (VASC, "benign"), "scc": (SCC, "malignant"),
         "unk": (OTHER, "")}
HAM_CODES = ("mel", "nv", "bcc", "akiec", "bkl", "df", "vasc")
CHALLENGE_CODES = ("MEL", "NV", "BCC", "AKIEC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")

BM_VALUES = {"benign": "benign", "malignant": "malignant", "indeterminate": "",
             "indeterminate/benign": "", "indeterminate/malignant": ""}  # legacy + diagnosis_1


def _invert(table: dict[str, list[str]]) -> dict[str, str]:
    return {term.lower(): cls for cls, terms in table.items() for term in terms}


# Legacy isic-cli ``diagnosis`` (ISIC archive enum); BKL = seborrheic keratosis, solar lentigo,
# lichen planus-like keratosis; VASC = angiomas, angiokeratomas, pyogenic granulomas, hemorrhage
# (ISIC 2018 / HAM10000 class definitions). Every canonical name maps to itself: split re-reads
# the canonical metadata.csv that download wrote.
LEGACY = _invert({
    MEL: ["melanoma", "melanoma metastasis"], NV: ["nevus", "nevus spilus"],
    BCC: ["basal cell carcinoma"], SCC: ["squamous cell carcinoma"], AK: ["actinic keratosis"],
    BKL: ["benign keratosis", "seborrheic keratosis", "solar lentigo", "lichenoid keratosis",
          "pigmented benign keratosis"],
    DF: ["dermatofibroma"], VASC: ["vascular lesion", "angioma", "angiokeratoma",
                                   "pyogenic granuloma"],
    OTHER: ["other", "AIMP", "adnexal tumor", "cafe-au-lait macule", "ephelis", "lentigo NOS",
            "lentigo simplex", "merkel cell carcinoma", "mucosal melanosis",
            "clear cell acanthoma", "atypical spitz tumor", "acrochordon",
            "angiofibroma or fibrous papule", "neurofibroma", "scar", "sebaceous adenoma",
            "sebaceous hyperplasia", "verruca", "atypical melanocytic proliferation",
            "epidermal nevus"],
    "": ["unknown"],  # SIIM-ISIC 2020: benign_malignant known, diagnosis not
})

# Hierarchical diagnosis_3 terms that decide a class on their own.
LEVEL3 = _invert({
    MEL: ["Melanoma Invasive", "Melanoma in situ", "Melanoma metastasis", "Melanoma, NOS"],
    NV: ["Nevus"], BCC: ["Basal cell carcinoma", "Baso-squamous carcinoma"],
    SCC: ["Squamous cell carcinoma in situ", "Squamous cell carcinoma, Invasive",
          "Squamous cell carcinoma, NOS", "Keratoacanthoma", "Verrucous carcinoma",
          "Bowenoid papulosis"],
    AK: ["Solar or actinic keratosis", "Solar or actinic cheilitis"],
    BKL: ["Pigmented benign keratosis", "Seborrheic keratosis", "Solar lentigo",
          "Lichen planus like keratosis"],
    DF: ["Dermatofibroma"],
    # The remaining diagnosis_3 terms of the four MIXED diagnosis_2 groups below.
    OTHER: ["Acantholytic acanthoma", "Clear cell acanthoma", "Epidermal nevus",
            "Epidermolytic acanthoma", "Large cell acanthoma", "Melanoacanthoma",
            "Porokeratosis", "Dermal melanocytosis", "Lentiginous melanocytic proliferation",
            "Lentigo simplex", "Pigmented epithelioid melanocytoma",
            "Proliferative nodule in congenital melanocytic nevi without atypia", "Angiofibroma",
            "Fibroepithelial polyp", "Fibroma", "Giant cell tumor of the tendon sheath",
            "Juvenile xanthogranuloma", "Cutaneous Myxoma", "Non-Langerhans histiocytosis",
            "Reticulohistiocytosis", "Rosai-Dorfman disease", "Scar",
            "Matrical or pilomatrical carcinoma", "Proliferating trichilemmal carcinoma"],
})
# Complete diagnosis_2 vocabulary. Every other group maps to one class whatever its
# diagnosis_3; MIXED groups hold a target class and other lesions, so their class comes from
# diagnosis_3 (which must then be known), or "" when diagnosis_3 is blank.
MIXED = "mixed"
LEVEL2 = _invert({
    MEL: ["Malignant melanocytic proliferations (Melanoma)"],
    SCC: ["Malignant epidermal proliferations"],
    AK: ["Indeterminate epidermal proliferations"],
    VASC: ["Benign soft tissue proliferations - Vascular", "Hemorrhagic lesions"],
    MIXED: ["Benign epidermal proliferations", "Benign melanocytic proliferations",
            "Benign soft tissue proliferations - Fibro-histiocytic",
            "Malignant adnexal epithelial proliferations - Follicular"],
    OTHER: ["Benign - Other", "Collision - Only benign proliferations", "Cysts", "Exogenous",
            "Flat melanotic pigmentations - not melanocytic nevus",
            "Inflammatory or infectious diseases", "Langerhans cell proliferations",
            "Mast cell proliferations", "Indeterminate melanocytic proliferations",
            "Collision - At least one malignant proliferation", "Merkel cell proliferation",
            "Lymphocytic proliferations - B-Cell", "Lymphocytic proliferations - T-Cell/NK",
            "Skin metastasis of internal solid cancer - non-hematological"]
    + [f"Benign adnexal epithelial proliferations - {t}"
       for t in ("Apocrine or Eccrine", "Follicular", "Sebaceous")]
    + [f"Malignant adnexal epithelial proliferations - {t}"
       for t in ("Apocrine or Eccrine", "Sebaceous")]
    + [f"{kind} soft tissue proliferations - {t}" for kind in ("Benign", "Malignant")
       for t in ("Adipocytic", "Cartilagenous and ossifying", "Muscle tissue or myofibroblastic",
                 "Myoepithelial", "Neural")]
    + [f"Malignant soft tissue proliferations - {t}"
       for t in ("Fibro-histiocytic", "Unknown or other histiogenesis", "Vascular")],
})


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    """Stripped string column ("" when absent or NaN)."""
    if column not in frame:
        return pd.Series("", index=frame.index, dtype=object)
    return frame[column].fillna("").astype(str).str.strip()


def _lookup(values: pd.Series, table: dict[str, str], what: str) -> tuple[pd.Series, pd.Series]:
    """Map values case-insensitively; returns (mapped, reason) with "unknown ..." reasons."""
    mapped = values.str.lower().map(table)
    unknown = mapped.isna() & (values != "")
    reason = ("unknown " + what + " '" + values + "'").where(unknown, "")
    return mapped.fillna("").astype(object), reason.astype(object)


def _finish(bm: pd.Series, dx: pd.Series, reason: pd.Series, fill: pd.Series) -> pd.DataFrame:
    """Fill a missing benign_malignant from the class where `fill`; flag rows with no label."""
    bm = bm.mask(fill & (bm == ""), dx.map(IMPLIED_BM).fillna(""))
    blank = (reason == "") & (bm == "") & (dx == "")
    reason = reason.mask(blank, "blank label (no benign_malignant, no diagnosis)")
    out = pd.DataFrame({"benign_malignant": bm, "diagnosis": dx, "reason": reason})
    out.loc[out["reason"] != "", ["benign_malignant", "diagnosis"]] = ""
    return out.astype(object)


def isic_labels(meta: pd.DataFrame) -> pd.DataFrame:
    """Labels from isic-cli metadata, legacy and/or hierarchical schema.

    diagnosis_1 (Benign/Malignant/Indeterminate) wins over legacy benign_malignant; the
    finest of diagnosis_3 / diagnosis_2 wins over legacy diagnosis (diagnosis_4/5 only refine
    diagnosis_3 and never change the class). A blank benign_malignant (not an explicit
    "indeterminate") is implied from the class for the unambiguous classes.
    """
    raw_bm, d1 = _text(meta, "benign_malignant"), _text(meta, "diagnosis_1")
    d2, d3 = _text(meta, "diagnosis_2"), _text(meta, "diagnosis_3")
    bm_legacy, r_bm = _lookup(raw_bm, BM_VALUES, "benign_malignant")
    bm_hier, r_d1 = _lookup(d1, BM_VALUES, "diagnosis_1")
    dx_legacy, r_dx = _lookup(_text(meta, "diagnosis"), LEGACY, "diagnosis")
    c2, r_d2 = _lookup(d2, LEVEL2, "diagnosis_2")
    c3 = d3.str.lower().map(LEVEL3)
    dx_hier = c3.fillna(c2.mask(c2 == MIXED, ""))
    # diagnosis_3 must be known unless its diagnosis_2 group alone decides the class
    unknown_d3 = c3.isna() & (d3 != "") & ((d2 == "") | (c2 == MIXED))
    r_d3 = ("unknown diagnosis_3 '" + d3 + "'").where(unknown_d3, "")
    use_hier = (d2 != "") | (d3 != "")
    dx = dx_hier.where(use_hier, dx_legacy).astype(object)
    bm = bm_hier.where(d1 != "", bm_legacy)
    reason = r_d1.where(d1 != "", r_bm)
    for extra in (r_d2.where(use_hier, ""), r_d3, r_dx.where(~use_hier, "")):
        reason = reason.where(reason != "", extra)
    explicit = (d1 != "") | (raw_bm != "")
    return _finish(bm, dx, reason, ~explicit)


def ham10000_labels(dx: pd.Series) -> pd.DataFrame:
    """Labels from HAM10000 ``dx`` codes (mel, nv, bcc, akiec, bkl, df, vasc)."""
    codes = dx.fillna("").astype(str).str.strip()
    cls, reason = _lookup(codes, {k: CODES[k][0] for k in HAM_CODES}, "dx code")
    bm = codes.str.lower().map({k: CODES[k][1] for k in HAM_CODES}).fillna("")
    return _finish(bm.astype(object), cls, reason, pd.Series(False, index=dx.index))


def challenge_labels(onehot: pd.DataFrame) -> pd.DataFrame:
    """Labels from ISIC 2018/2019 one-hot columns (any of ``CHALLENGE_CODES`` present).

    A row must hold exactly one 1 and 0 elsewhere; anything else is flagged, never guessed.
    """
    cols = [c for c in onehot.columns if c.upper() in CHALLENGE_CODES]
    values = onehot[cols].apply(pd.to_numeric, errors="coerce")
    ok_values = values.isin([0, 1]).all(axis=1)
    ones = (values == 1).sum(axis=1)
    winner = (values == 1).idxmax(axis=1).astype(str).str.lower()
    cls = winner.map(lambda c: CODES[c][0]).astype(object)
    bm = winner.map(lambda c: CODES[c][1]).astype(object)
    reason = pd.Series("", index=onehot.index, dtype=object)
    reason = reason.mask(ones != 1, "one-hot row has " + ones.astype(str) + " classes set")
    reason = reason.mask(~ok_values, "one-hot row has values other than 0/1")
    return _finish(bm, cls, reason, pd.Series(False, index=onehot.index))


def isic2017_labels(truth: pd.DataFrame) -> pd.DataFrame:
    """Labels from the ISIC 2017 Part 3 ground truth (``melanoma``, ``seborrheic_keratosis``:
    1/0 or 1.0/0.0; nevus when both are 0). Seborrheic keratosis is our benign keratosis
    (the ISIC 2018 class that contains it)."""
    values = truth[["melanoma", "seborrheic_keratosis"]].apply(pd.to_numeric, errors="coerce")
    mel, sk = values["melanoma"] == 1, values["seborrheic_keratosis"] == 1
    dx = pd.Series(NV, index=truth.index, dtype=object).mask(mel, MEL).mask(sk, BKL)
    reason = pd.Series("", index=truth.index, dtype=object)
    reason = reason.mask(mel & sk, "both melanoma and seborrheic_keratosis set")
    reason = reason.mask(~values.isin([0, 1]).all(axis=1),
                         "melanoma / seborrheic_keratosis values other than 0/1")
    return _finish(pd.Series("", index=truth.index, dtype=object), dx, reason,
                   pd.Series(True, index=truth.index))


def isic2016_labels(values: pd.Series) -> pd.DataFrame:
    """Labels from the ISIC 2016 Part 3 ground truth: benign|malignant, or 0/1 (0.0/1.0)."""
    text = values.fillna("").astype(str).str.strip().str.lower()
    table = {"benign": "benign", "malignant": "malignant", "0": "benign", "1": "malignant",
             "0.0": "benign", "1.0": "malignant"}
    bm, reason = _lookup(text, table, "ISIC 2016 label")
    return _finish(bm, pd.Series("", index=values.index, dtype=object), reason,
                   pd.Series(False, index=values.index))
