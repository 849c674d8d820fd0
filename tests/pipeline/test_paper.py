"""The reproduction harness: evaluate with the paper's pipeline, then compare with its results."""

from __future__ import annotations

import csv

import pytest

from conftest import DATA_DIR, requires_data
from napari_samlung.cli import main
from napari_samlung.pipeline.paper import (
    canonical_case,
    compare,
    format_comparison,
    read_our_results,
    read_paper_results,
)


def test_case_names_match_between_paper_and_our_files():
    assert canonical_case("image_coronacases_001") == "coronacases_001"
    assert canonical_case("coronacases_001.nii.gz") == "coronacases_001"
    assert canonical_case("/x/image_radiopaedia_7_85703_0.nii") == "radiopaedia_7_85703_0"


def _write_ours(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", "slice", "dice", "jaccard"])
        w.writerows(rows)


def test_compare_reports_mean_difference_and_slices_that_differ(tmp_path):
    paper = tmp_path / "raw_data_x.csv"
    paper.write_text(
        "image,slice,jaccard,dice\nimage_c1,0,,\nimage_c1,1,0.8,0.90\nimage_c1,2,0.9,0.95\n"
        "image_c1,3,,\n"
    )
    ours = tmp_path / "per_slice.csv"
    _write_ours(ours, [["c1", 1, 0.91, 0.8], ["c1", 2, 0.80, 0.7]])
    rows = compare(read_our_results(ours), read_paper_results(tmp_path))
    assert len(rows) == 1
    r = rows[0]
    assert (r.case, r.slices, r.flipped) == ("c1", 2, False)
    assert r.mean_difference == pytest.approx(((0.91 - 0.90) + (0.80 - 0.95)) / 2)
    assert [z for z, _, _ in r.differing] == [2]
    assert "slice 2: ours 0.8000 paper 0.9500" in format_comparison(rows)


def test_compare_detects_reversed_slice_order(tmp_path):
    paper = tmp_path / "raw_data_x.csv"
    lines = ["image,slice,jaccard,dice"]
    lines += [f"image_c1,{z},0.9,0.95" if z < 3 else f"image_c1,{z},," for z in range(10)]
    paper.write_text("\n".join(lines) + "\n")
    ours = tmp_path / "per_slice.csv"
    _write_ours(ours, [["c1", z, 0.95, 0.9] for z in (7, 8, 9)])  # same slices, numbered upward
    rows = compare(read_our_results(ours), read_paper_results(paper), n_slices={"c1": 10})
    assert rows[0].flipped and rows[0].slices == 3
    assert rows[0].mean_difference == pytest.approx(0.0)


def test_paper_results_folder_has_every_volume():
    folder = DATA_DIR / "paper_results" / "1-all"
    if not folder.exists():
        pytest.skip(f"real data not found at {folder}; set SAMLUNG_DATA")
    paper = read_paper_results(folder)
    assert len(paper) == 20
    # the paper's "3520 slices" are all slices; 2973 of them have lung and are scored
    assert sum(len(v) for v in paper.values()) == 2973


@requires_data("covid19_ct_slices")
@requires_data("paper_results")
def test_harness_end_to_end_on_the_real_slices(tmp_path, capsys):
    """evaluate --strategy paper --normalize per-slice --no-hu-refine (the paper's pipeline)
    on the real coronacases slices, then compare-paper against the paper's own per-slice
    Dice."""
    src = DATA_DIR / "covid19_ct_slices"
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for k in (98, 110, 122):
        (images / f"coronacases_001_image_slice_{k}.npy").symlink_to(
            src / f"coronacases_001_image_slice_{k}.npy"
        )
        (masks / f"coronacases_001_masks_slice_{k}.npy").symlink_to(
            src / f"coronacases_001_masks_slice_{k}.npy"
        )
    out = tmp_path / "run"
    code = main(
        [
            "evaluate",
            str(images),
            str(masks),
            "--strategy",
            "paper",
            "--window-preset",
            "paper",
            "--normalize",
            "per-slice",
            "--no-hu-refine",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    code = main(
        ["compare-paper", str(out / "per_slice.csv"), str(DATA_DIR / "paper_results" / "1-all")]
    )
    assert code == 0
    report = capsys.readouterr().out
    line = next(ln for ln in report.splitlines() if ln.startswith("coronacases_001"))
    fields = line.split()
    assert fields[1] == "3"  # the three slices matched by number
    paper_mean = float(fields[3])
    assert paper_mean == pytest.approx((0.973 + 0.986 + 0.992) / 3, abs=0.01)
    ours_mean = float(fields[2])
    assert 0.5 < ours_mean <= 1.0
