"""The VOI vocabulary: clinical ROI names, the user's mapping file, VOI classes and region tables."""

from __future__ import annotations

import pytest

from cohort_dosimetry.vocabulary import (
    derive_vois,
    labels_attrs,
    map_roi_names,
    match_roi_name,
    read_roi_names,
    voi_regions,
    voi_type,
)

#: ROI names as planning systems, PACS exports and AAPM TG-263 write them -> the VOI they are.
SPELLINGS = {
    "kidney_left": [
        "Kidney_L",
        "Kidney_Lt",
        "Kidney_Left",
        "Kidney L",
        "kidney-l",
        "KIDNEY_L",
        "L Kidney",
        "L_Kidney",
        "Lt Kidney",
        "Lt_Kidney",
        "Left Kidney",
        "Left_Kidney",
        "KidneyL",
        "kidney_left",
        "Kidney.L",
    ],
    "kidney_right": ["Kidney_R", "Kidney_Rt", "Kidney_Right", "R Kidney", "Rt_Kidney", "Right kidney", "KIDNEY_RIGHT"],
    "kidneys": ["Kidneys", "KIDNEYS", "Kidney", "Kidneys_Both", "Both Kidneys", "Kidney_Bilat"],
    "lung_left": ["Lung_L", "Lung_Lt", "Lung Left", "L Lung", "Lt_Lung", "Left_Lung", "LUNG_L", "lung_left"],
    "lung_right": ["Lung_R", "Lung Right", "Rt Lung", "R_Lung"],
    "lungs": ["Lungs", "Lung", "Lungs_Total", "Lung_Total", "Both_Lungs", "LUNGS"],
    "liver": ["Liver", "LIVER", "liver", "Liver_Whole", "Whole Liver"],
    "liver_healthy": ["Liver-GTV", "Liver_minus_GTV", "Liver_Healthy", "Healthy Liver", "Normal_Liver"],
    "spleen": ["Spleen", "SPLEEN", "spleen"],
    "external": ["External", "EXTERNAL", "BODY", "Body", "Outline", "Skin", "SKIN", "Body_Outline", "Ext", "external"],
    "body": ["body"],  # as written, the vocabulary's own remainder (virtual patients)
    "vertebra_L2": [
        "L2",
        "l2",
        "Vertebra_L2",
        "Vertebra L2",
        "vertebra_L2",
        "L2_vertebra",
        "L2 Vertebra",
        "Bone_Vertebra_L2",
        "VB_L2",
        "Vert_L2",
        "L02",
    ],
    "vertebra_T12": ["T12", "Th12", "TH12", "Vertebra_T12", "Bone_Vertebra_Th12"],
    "vertebra_C1": ["C1", "Vertebra_C1"],
    "vertebra_C7": ["C7"],
    "vertebra_L5": ["L5"],
    "vertebra_S1": ["S1", "Vertebra_S1"],
    "lesion": [
        "GTV",
        "gtv",
        "GTVp",
        "GTVn",
        "Lesion",
        "LESION",
        "Lesions",
        "Tumor",
        "Tumour",
        "TUMOR",
        "Met",
        "met",
        "Mets",
        "Metastasis",
        "Metastases",
        "Lesion_0",
    ],  # numbered from 0: a lesion, numbered anew
    "lesion_1": [
        "GTV1",
        "GTV_1",
        "GTV 1",
        "GTV-1",
        "GTVp1",
        "Lesion_1",
        "Lesion 1",
        "lesion_1",
        "Lesion_01",
        "Tumor_1",
        "Met1",
    ],
    "lesion_2": ["Met_2", "Mets 2", "GTVp_2", "Lesion2"],
    "lesion_3": ["Lesion 3", "Tumour3"],
    None: [
        "Bowel_Bag",
        "tumour bed",
        "PTV",
        "CTV_1",
        "GTV_Liver",
        "Stomach",
        "L6",
        "C8",
        "T13",
        "S2",
        "Kidney_X",
        "Body_Fat",
        "L",
        "Heart",
    ],
}


@pytest.mark.parametrize("expected", list(SPELLINGS), ids=str)
def test_clinical_spellings_map_to_the_vocabulary(expected):
    for spelling in SPELLINGS[expected]:
        assert match_roi_name(spelling) == expected, spelling


def test_voi_classes_and_other():
    classes = {
        "external": "body",
        "body": "body",
        "lungs": "lung",
        "lung_left": "lung",
        "kidneys": "kidney",
        "kidney_right": "kidney",
        "liver": "liver",
        "liver_healthy": "liver",
        "spleen": "spleen",
        "vertebra_T12": "vertebra",
        "vertebra_S1": "vertebra",
        "lesion_14": "lesion",
        "Bowel_Bag": "other",
        "Liver": "other",
        "vertebra_T13": "other",
        "lesion_0": "other",
        "lesion": "other",
    }
    for name, cls in classes.items():
        assert voi_type(name) == cls, name


def test_lesions_keep_their_number_when_free_and_others_take_the_next_free_one():
    rois = ["GTV", "Met_2", "GTV_1", "Lesion 2", "Tumor", "Liver", "Lesion 5", "Bowel_Bag"]
    names = [m.name for m in map_roi_names(rois)]
    # 1, 2, 5 are claimed by their ROIs; GTV, the second "2" and Tumor get 3, 4, 6 in ROI order
    assert names == ["lesion_3", "lesion_2", "lesion_1", "lesion_4", "lesion_6", "liver", "lesion_5", "Bowel_Bag"]


def test_two_rois_for_one_name_keep_the_first_and_name_the_other():
    matches = map_roi_names(["Liver", "LIVER", "liver", " Bowel ", "Bowel"])
    assert [m.name for m in matches] == ["liver", "LIVER", "liver (2)", "Bowel", "Bowel (2)"]
    assert "'Liver' took" in matches[1].note and "named 'liver (2)'" in matches[2].note
    assert [voi_type(m.name) for m in matches] == ["liver"] + ["other"] * 4
    assert len({m.name for m in matches}) == len(matches)


def test_the_user_mapping_comes_first(tmp_path):
    path = tmp_path / "names.toml"
    path.write_text(
        '[roi_names]\n"Niere links" = "kidney_left"\n"Leber" = "liver"\n"Herd 1" = "lesion"\n'
        '"Herd" = "lesion"\n"Body" = "body"\n"GTV_1" = "lesion_4"\n"Wirbel L2" = "vertebra_L2"\n',
        encoding="utf-8",
    )
    user = read_roi_names(path)
    assert user["Niere links"] == "kidney_left" and len(user) == 7
    rois = ["Niere links", "LEBER", "Herd 1", "Herd", "Body", "GTV_1", "Wirbel L2", "GTV"]
    names = [m.name for m in map_roi_names(rois, user)]
    # "LEBER" by the comparison without case; "Herd 1" keeps its number; Body is the user's remainder, not External
    assert names == ["kidney_left", "liver", "lesion_1", "lesion_2", "body", "lesion_4", "vertebra_L2", "lesion_3"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[roi_names]\n"Leber" = "hepar"\n', r"names\.toml: entry 'Leber' = 'hepar': 'hepar' is not a vocabulary name"),
        ('[roi_names]\n"Leber" = 4\n', r"names\.toml: entry 'Leber' = 4: the vocabulary name must be a string"),
        ('[roi_names]\n"Leber" = "Liver"\n', r"entry 'Leber' = 'Liver': 'Liver' is not a vocabulary name"),
        ('[roi_names]\n"Leber" = "liver"\n"LEBER" = "spleen"\n', r"entry 'LEBER' = 'spleen' contradicts entry 'Leber'"),
        ('[names]\n"Leber" = "liver"\n', r"names\.toml: needs a table \[roi_names\]"),
        ('roi_names = "liver"\n', r"needs a table \[roi_names\]"),
        ("[roi_names]\nLeber = liver\n", r"names\.toml: not valid TOML"),
        ('[roi_names]\n" " = "liver"\n', r"entry ' ' = 'liver': the ROI name is empty"),
    ],
    ids=[
        "unknown-target",
        "not-a-string",
        "case-of-target",
        "contradiction",
        "no-table",
        "not-a-table",
        "bad-toml",
        "empty-name",
    ],
)
def test_a_bad_mapping_file_names_the_file_and_the_entry(tmp_path, text, message):
    path = tmp_path / "names.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_roi_names(path)


def test_a_missing_mapping_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"absent\.toml: cannot be read"):
        read_roi_names(tmp_path / "absent.toml")


def test_region_tables_in_both_forms():
    plain = {1: "body", 4: "liver", 101: "lesion_1"}
    assert voi_regions(plain) == {"body": (1,), "liver": (4,), "lesion_1": (101,)}
    assert labels_attrs(voi_regions(plain), plain) == {"names": plain}  # no overlap: exactly today's attrs
    names = {"1000": "external", "10000": "external+liver", "10001": "external+liver+lesion_1"}  # JSON keys
    vois = {"external": [1000, 10000, 10001], "liver": [10000, 10001], "lesion_1": [10001]}
    regions = voi_regions(names, vois)
    derived, how = derive_vois(regions)
    assert derived == {"liver_healthy": (10000,)} and how == {"liver_healthy": "liver minus lesion_1"}
    attrs = labels_attrs({**regions, **derived}, {int(k): v for k, v in names.items()}, {"external": "BODY"}, how)
    assert attrs["vois"]["liver_healthy"] == [10000] and attrs["source_names"] == {"external": "BODY"}
    assert derive_vois({"liver": (4,), "lesion_1": (101,)}) == ({}, {})  # a lesion outside the liver: nothing
    with pytest.raises(ValueError, match=r"lists regions \[7\]"):
        voi_regions(names, {**vois, "spleen": [7]})
    with pytest.raises(ValueError, match=r"regions \[1000\] belong to no VOI"):
        voi_regions(names, {"liver": [10000, 10001]})
