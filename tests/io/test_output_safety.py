"""Nothing the user made is ever overwritten, and every write failure is one line.

- :func:`napari_samlung.io.outputs.check_output` is the one rule: never an input,
  however spelt (absolute, relative, ``..``, symlink, hard link), whatever the flags;
  every writer (labels, images, text, the scores CSV, appends included) obeys it;
- a symlink loop, a name longer than the file system allows, a folder, a full or
  read-only disk: one :class:`InputFileError` line, never a traceback, and the atomic
  writer's temporary name stays short and its cleanup never hides the error;
- the run-folder lock (:class:`RunLock`): ``O_EXCL``, a pid, stale locks taken over;
- the console script with every output option pointed at every input, by every
  spelling: refused before any model work, and no input's checksum changes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_samlung.cli import EXIT_USAGE, main
from napari_samlung.core.config import RunConfig
from napari_samlung.core.metrics import SliceScore
from napari_samlung.errors import InputFileError
from napari_samlung.io import outputs
from napari_samlung.io.atomic import atomic_write, atomic_write_text, temporary_name
from napari_samlung.io.outputs import (
    LOCK_NAME,
    RunLock,
    check_folder_writable,
    check_output,
    protecting,
)
from napari_samlung.io.tables import read_scores_csv, write_scores_csv
from napari_samlung.io.writers import write_labels

TINY = ["--model", "micro_random", "--precision", "fp32"]
ERROR = "napari-samlung: error: "


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def digests(paths) -> dict:
    return {str(p): digest(p) for p in paths}


def one_error(capsys, args: list) -> str:
    """``main(args)`` must be refused with exactly one ``napari-samlung: error:`` line."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert code == EXIT_USAGE, (code, err)
    assert len(lines) == 1 and lines[0].startswith(ERROR), err
    return lines[0]


def two_lungs(size: int = 32) -> np.ndarray:
    labels = np.zeros((size, size), np.uint8)
    labels[4:28, 3:14] = 2
    labels[4:28, 18:29] = 1
    return labels


@pytest.fixture
def xray(tmp_path) -> tuple[Path, Path]:
    """A 32 x 32 X-ray-like PNG and its 0/255 mask, in ``tmp_path/data``."""
    folder = tmp_path / "data"
    folder.mkdir()
    labels = two_lungs()
    image = np.full(labels.shape, 200, np.uint8)
    image[labels > 0] = 40
    Image.fromarray(image).save(folder / "chest.png")
    Image.fromarray(np.where(labels > 0, 255, 0).astype(np.uint8)).save(folder / "chest_mask.png")
    return folder / "chest.png", folder / "chest_mask.png"


def spellings(target: Path, where: Path) -> dict[str, Path]:
    """Other names for ``target``: relative (from ``where``), with ``..``, a symlink, a hard
    link.  The relative spelling is only right with ``where`` as the working folder."""
    (where / "sub").mkdir(exist_ok=True)
    link, hard = where / f"link_{target.name}", where / f"hard_{target.name}"
    if not link.is_symlink():
        link.symlink_to(target)
    if not hard.exists():
        os.link(target, hard)
    return {
        "absolute": target,
        "relative": Path(os.path.relpath(target, where)),
        "dotdot": where / "sub" / ".." / os.path.relpath(target, where),
        "symlink": link,
        "hardlink": hard,
    }


# --------------------------------------------------------------------------- the one rule


@pytest.mark.parametrize("spelling", ["absolute", "relative", "dotdot", "symlink", "hardlink"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_every_writer_refuses_an_input_by_any_spelling(
    xray, tmp_path, monkeypatch, spelling, overwrite
):
    image, mask = xray
    monkeypatch.chdir(tmp_path)
    names = spellings(image, tmp_path)
    target = names[spelling]
    before = digests([image, mask])
    score = SliceScore("c", 0, 0.5, 0.4)
    writers = [
        lambda: check_output(target, overwrite=overwrite, inputs=[image, mask]),
        lambda: write_labels(target, two_lungs(), overwrite=overwrite, inputs=[image]),
        lambda: atomic_write_text(target, "{}", overwrite=overwrite, inputs=[mask, image]),
        lambda: write_scores_csv(target, [score], inputs=[image]),
        lambda: write_scores_csv(target, [score], append=True, inputs=[image]),
    ]
    for write in writers:
        with pytest.raises(InputFileError, match="is one of the input files") as info:
            write()
        assert "\n" not in str(info.value) and "chest.png" in str(info.value)
    assert digests([image, mask]) == before
    assert image.exists() and not image.is_symlink()


def test_a_registered_input_is_refused_only_while_the_run_lasts(xray, tmp_path):
    image, _ = xray
    hard = tmp_path / "copy.png"
    os.link(image, hard)
    before = digest(image)
    with protecting([image]):
        for target in (image, hard, tmp_path / "data" / ".." / "data" / "chest.png"):
            with pytest.raises(InputFileError, match="is one of the input files"):
                write_labels(target, two_lungs(), overwrite=True)
    assert digest(image) == before
    write_labels(hard, two_lungs(), overwrite=True)  # the run is over: an ordinary file now
    assert digest(image) == before  # os.replace gave `hard` a new inode: the image is intact


def test_a_folder_input_protects_the_files_in_it(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    (series / "0001.dcm").write_bytes(b"slice one")
    with pytest.raises(InputFileError, match="is one of the input files"):
        check_output(series / "0001.dcm", overwrite=True, inputs=[series])
    check_output(series / "new.dcm", inputs=[series])  # a new name in that folder is fine


def test_outputs_that_are_not_inputs_are_written(tmp_path, xray):
    image, _ = xray
    out = write_labels(tmp_path / "pred.png", two_lungs(), inputs=[image])
    assert np.asarray(Image.open(out)).shape == (32, 32)
    with pytest.raises(InputFileError, match="exists; pass --overwrite"):
        write_labels(out, two_lungs(), inputs=[image])


# --------------------------------------------------------------------------- one line each


def test_a_symlink_loop_as_the_output(tmp_path):
    loop = tmp_path / "loop.nii.gz"
    loop.symlink_to(loop)
    for write in (
        lambda: check_output(loop, overwrite=True),
        lambda: write_labels(loop, two_lungs(), overwrite=True),
        lambda: write_scores_csv(loop, [], append=True),
    ):
        with pytest.raises(InputFileError, match="symlink loop") as info:
            write()
        assert "\n" not in str(info.value)
    assert loop.is_symlink()


def test_a_pair_of_symlinks_pointing_at_each_other(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(InputFileError, match="symlink loop"):
        atomic_write_text(a, "x", overwrite=True)


@pytest.mark.parametrize("length", [256, 300, 1000])
def test_a_name_longer_than_the_file_system_allows(tmp_path, length):
    target = tmp_path / ("n" * (length - 7) + ".nii.gz")
    with pytest.raises(InputFileError, match="more than the file system allows") as info:
        write_labels(target, two_lungs())
    assert len(str(info.value)) < 400 and "choose a shorter name" in str(info.value)


@pytest.mark.parametrize("length", [200, 245, 255])
def test_a_long_valid_name_is_written_and_its_temporary_stays_short(tmp_path, length):
    target = tmp_path / ("n" * (length - 7) + ".nii.gz")
    assert len(temporary_name(target).name) <= 40
    out = write_labels(target, two_lungs())
    assert out.exists()
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_the_cleanup_never_hides_the_error(tmp_path, monkeypatch):
    def full(tmp):
        Path(tmp).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if ".tmp" in os.fspath(path):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(outputs.os, "unlink", unlink)
    with pytest.raises(InputFileError, match=r"cannot write \(No space left on device\); check"):
        atomic_write(tmp_path / "summary.json", full)


@pytest.mark.parametrize("append", [False, True])
def test_a_full_disk_while_writing_the_scores_csv(tmp_path, monkeypatch, append):
    from napari_samlung.io import tables

    target = tmp_path / "per_slice.csv"
    write_scores_csv(target, [SliceScore("a", 0, 0.9, 0.8)])
    before = target.read_bytes()

    def full(path, rows, mode, header):
        with open(path, mode) as fh:
            fh.write("b,0,0.9")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tables, "_write_rows", full)
    with pytest.raises(InputFileError) as info:
        write_scores_csv(target, [SliceScore("b", 0, 0.9, 0.8)], append=append)
    message = str(info.value)
    assert "per_slice.csv: cannot write (No space left on device)" in message
    assert "check the folder is writable and has free space" in message
    if not append:
        assert target.read_bytes() == before  # atomic: the old file stays whole


def test_writing_onto_a_folder_or_into_a_missing_one(tmp_path):
    (tmp_path / "per_slice.csv").mkdir()
    with pytest.raises(InputFileError, match="is a folder"):
        write_scores_csv(tmp_path / "per_slice.csv", [], append=True)
    with pytest.raises(InputFileError, match="does not exist; create it first"):
        atomic_write_text(tmp_path / "nope" / "s.json", "{}")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputFileError, match="is a file, not a folder"):
        atomic_write_text(tmp_path / "file" / "s.json", "{}")


def test_a_full_or_read_only_folder_is_found_before_any_work(tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: usage._replace(free=4096))
    with pytest.raises(InputFileError, match="the disk is full.*check the folder is writable"):
        check_output(tmp_path / "out.nii.gz", probe=True)
    monkeypatch.undo()

    real_open = os.open

    def read_only(path, *args, **kwargs):
        if "samlung-probe" in os.fspath(path):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(outputs.os, "open", read_only)
    with pytest.raises(InputFileError, match=r"cannot write \(Read-only file system\)"):
        check_folder_writable(tmp_path, tmp_path / "out.nii.gz")
    assert not [p for p in tmp_path.iterdir() if "probe" in p.name]


# --------------------------------------------------------------------------- the lock


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_lock_is_exclusive_and_released(tmp_path):
    lock = RunLock(tmp_path).acquire()
    path = tmp_path / LOCK_NAME
    assert path.read_text().split()[0] == str(os.getpid())
    with pytest.raises(FileExistsError):  # O_EXCL
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    lock.release()
    assert not path.exists()
    lock.release()  # twice is harmless


def test_a_live_owner_refuses_and_a_dead_one_is_taken_over(tmp_path):
    path = tmp_path / LOCK_NAME
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path.write_text(f"{sleeper.pid} someone\n")
        with pytest.raises(
            InputFileError, match=rf"another napari-samlung run \(pid {sleeper.pid}\)"
        ):
            RunLock(tmp_path).acquire()
        assert path.read_text() == f"{sleeper.pid} someone\n"
    finally:
        sleeper.kill()
        sleeper.wait()
    path.write_text(f"{_dead_pid()} gone\n")
    lock = RunLock(tmp_path).acquire()
    assert path.read_text().split()[0] == str(os.getpid())
    lock.release()


def test_a_lock_being_written_is_busy_and_an_old_empty_one_is_stale(tmp_path):
    path = tmp_path / LOCK_NAME
    path.write_text("")
    with pytest.raises(InputFileError, match="another napari-samlung run"):
        RunLock(tmp_path).acquire()
    os.utime(path, (1, 1))
    RunLock(tmp_path).acquire().release()
    path.write_text("garbage that is no pid")
    os.utime(path, (1, 1))
    RunLock(tmp_path).acquire().release()


def test_a_release_never_removes_another_runs_lock(tmp_path):
    first = RunLock(tmp_path).acquire()
    second = RunLock(tmp_path).acquire()  # this process again: taken over
    first.release()
    assert (tmp_path / LOCK_NAME).exists()
    second.release()
    assert not (tmp_path / LOCK_NAME).exists()


# --------------------------------------------------------------------------- the console script


def _no_model(monkeypatch) -> None:
    def refuse(self):
        raise AssertionError("the model was loaded although an output cannot be written")

    monkeypatch.setattr(RunConfig, "make_segmenter", refuse)


def test_every_output_option_at_every_input_by_every_spelling(xray, tmp_path, monkeypatch, capsys):
    """``--json``, ``-o``, ``--stats``, the ``--out`` record and the saved masks, pointed at
    the image, the mask and the prompts file, spelt five ways, with and without
    --overwrite: refused before any model work, and no input changes."""
    image, mask = xray
    prompts = tmp_path / "data" / "prompts.json"
    prompts.write_text(json.dumps({"slices": [{"slice": 0, "boxes_xyxy": [[3, 4, 28, 27]]}]}))
    inputs = [image, mask, prompts]
    before = digests(inputs)
    monkeypatch.chdir(tmp_path)
    _no_model(monkeypatch)
    segment = ["segment", image, "--prompts-from", mask, *TINY]
    propagate = ["segment", image, "--propagate-from", prompts, *TINY]
    free = tmp_path / "free.nii.gz"
    refusals = 0
    for target_input in inputs:
        for name, target in spellings(target_input, tmp_path).items():
            for flags in ([], ["--overwrite"]):
                commands = [  # (command, its inputs)
                    (["evaluate", image, mask, "--json", target, *TINY], [image, mask]),
                    ([*segment, "-o", target], [image, mask]),
                    ([*propagate, "-o", target], [image, prompts]),
                    ([*segment, "-o", free, "--stats", target], [image, mask]),
                    ([*propagate, "-o", free, "--stats", target], [image, prompts]),
                ]
                for args, used in commands:
                    if target_input not in used:
                        continue
                    line = one_error(capsys, [*args, *flags])
                    assert "is one of the input files" in line, (name, args, line)
                    refusals += 1
    assert refusals == (5 + 3 + 2) * 5 * 2  # image in 5 commands, mask in 3, prompts in 2
    assert digests(inputs) == before
    assert not free.exists()


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
@pytest.mark.parametrize("record", ["per_slice.csv", "cases.json", "summary.json"])
def test_the_run_record_never_lands_on_an_input(xray, tmp_path, monkeypatch, capsys, kind, record):
    image, mask = xray
    out = tmp_path / "run"
    out.mkdir()
    if kind == "symlink":
        (out / record).symlink_to(image)
    else:
        os.link(image, out / record)
    before = digests([image, mask])
    _no_model(monkeypatch)
    for flags in (["--overwrite"], ["--resume"]):
        line = one_error(capsys, ["evaluate", image, mask, "--out", out, *TINY, *flags])
        assert "is one of the input files" in line
    assert digests([image, mask]) == before


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_saved_masks_never_land_on_an_input(xray, tmp_path, monkeypatch, capsys, kind):
    image, mask = xray
    out = tmp_path / "run"
    out.mkdir()
    target = out / "chest_samlung.png"  # the name the case's mask gets
    if kind == "symlink":
        target.symlink_to(mask)
    else:
        os.link(mask, target)
    before = digests([image, mask])
    _no_model(monkeypatch)
    for flags in (["--overwrite"], ["--resume"]):
        line = one_error(
            capsys, ["evaluate", image, mask, "--out", out, "--save-masks", *TINY, *flags]
        )
        assert "chest_samlung.png is one of the input files" in line
    assert digests([image, mask]) == before


def test_out_on_the_dataset_itself_never_overwrites_a_case(tmp_path, monkeypatch, capsys):
    """``evaluate ROOT --out ROOT/images --save-masks --overwrite``: a case named like
    another case's output (``a_samlung.png``) is an input and is never replaced."""
    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    labels = two_lungs()
    for name in ("a", "a_samlung"):
        Image.fromarray(np.where(labels > 0, 40, 200).astype(np.uint8)).save(
            root / "images" / f"{name}.png"
        )
        Image.fromarray(np.where(labels > 0, 255, 0).astype(np.uint8)).save(
            root / "masks" / f"{name}.png"
        )
    files = sorted(root.rglob("*.png"))
    before = digests(files)
    _no_model(monkeypatch)
    line = one_error(
        capsys,
        ["evaluate", root, "--out", root / "images", "--save-masks", "--overwrite", *TINY],
    )
    assert "a_samlung.png is one of the input files" in line
    assert digests(files) == before


def test_a_second_run_on_a_folder_in_use_is_refused(xray, tmp_path, monkeypatch, capsys):
    """The running run's record is left alone: --overwrite does not delete it."""
    image, mask = xray
    out = tmp_path / "run"
    out.mkdir()
    (out / "per_slice.csv").write_text("the running run's rows\n")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_NAME).write_text(f"{sleeper.pid} running\n")
        _no_model(monkeypatch)
        for flags in (["--overwrite"], ["--resume"], []):
            line = one_error(capsys, ["evaluate", image, mask, "--out", out, *TINY, *flags])
            assert f"another napari-samlung run (pid {sleeper.pid}) is using this folder" in line
        assert (out / "per_slice.csv").read_text() == "the running run's rows\n"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_stale_lock_is_taken_over_and_the_lock_is_released(xray, tmp_path, capsys):
    image, mask = xray
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(f"{_dead_pid()} killed\n")
    assert main([str(a) for a in ["evaluate", image, mask, "--out", out, *TINY]]) == 0
    capsys.readouterr()
    assert not (out / LOCK_NAME).exists()
    assert [s.case for s in read_scores_csv(out / "per_slice.csv")] == ["chest"]


def test_ctrl_c_releases_the_lock(xray, tmp_path, monkeypatch, capsys):
    import napari_samlung.pipeline.evaluate as evaluation

    image, mask = xray
    out = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation, "evaluate_case", interrupted)
    assert main([str(a) for a in ["evaluate", image, mask, "--out", out, *TINY]]) == 130
    capsys.readouterr()
    assert not (out / LOCK_NAME).exists()


def test_output_problems_are_found_before_the_model_runs(xray, tmp_path, monkeypatch, capsys):
    image, mask = xray
    _no_model(monkeypatch)
    segment = ["segment", image, "--prompts-from", mask, *TINY]
    line = one_error(capsys, [*segment, "-o", tmp_path / "mask.txt"])
    assert "mask.txt: cannot write this file type; use one of .nii.gz, .nii, .png" in line
    line = one_error(capsys, [*segment, "-o", tmp_path / ("x" * 300 + ".png")])
    assert "more than the file system allows" in line
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    assert "symlink loop" in one_error(capsys, [*segment, "-o", loop, "--overwrite"])
    (tmp_path / "taken.png").mkdir()
    assert "is a folder" in one_error(capsys, [*segment, "-o", tmp_path / "taken.png"])

    usage = outputs.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: usage._replace(free=0))
    assert "the disk is full" in one_error(capsys, [*segment, "-o", tmp_path / "m.png"])
    evaluate = ["evaluate", image, mask, *TINY]
    assert "the disk is full" in one_error(capsys, [*evaluate, "--out", tmp_path / "run"])
    assert "the disk is full" in one_error(capsys, [*evaluate, "--json", tmp_path / "s.json"])


def test_a_png_output_for_a_volume_is_refused_before_the_model_runs(tmp_path, monkeypatch, capsys):
    from napari_samlung.io import write_image, write_labels
    from napari_samlung.io.phantom import make_phantom

    image, labels = make_phantom((6, 32, 32))
    ct = write_image(tmp_path / "ct.nii.gz", image)
    mask = write_labels(tmp_path / "ct_mask.nii.gz", labels, like=image)
    _no_model(monkeypatch)
    line = one_error(
        capsys, ["segment", ct, "--prompts-from", mask, *TINY, "-o", tmp_path / "out.png"]
    )
    assert "out.png: a PNG holds one 2D image, but the input has 6 slices" in line
    assert not (tmp_path / "out.png").exists()


def test_per_slice_csv_that_is_a_folder(xray, tmp_path, monkeypatch, capsys):
    image, mask = xray
    out = tmp_path / "run"
    (out / "per_slice.csv").mkdir(parents=True)
    _no_model(monkeypatch)
    for flags in ([], ["--overwrite"], ["--resume"]):
        line = one_error(capsys, ["evaluate", image, mask, "--out", out, *TINY, *flags])
        assert "per_slice.csv is a folder" in line
    assert (out / "per_slice.csv").is_dir()


def test_out_that_is_a_symlink_loop(xray, tmp_path, monkeypatch, capsys):
    image, mask = xray
    loop = tmp_path / "run"
    loop.symlink_to(loop)
    _no_model(monkeypatch)
    line = one_error(capsys, ["evaluate", image, mask, "--out", loop, *TINY])
    assert "cannot create the output folder (a symlink loop" in line


def test_the_embedding_cache_never_writes_or_evicts_an_input(tmp_path):
    """The cache is in the core; the I/O layer's one rule reaches it through core.write_guard."""
    import torch

    from napari_samlung.core.cache import DiskCache
    from napari_samlung.core.embedding import Embedding

    cache = DiskCache(tmp_path, limit_mb=1)
    key = "model|image-hash"
    victim = cache.path_for(key)  # an input that happens to have the entry's name
    victim.write_bytes(b"the user's file")
    before = digest(victim)
    emb = Embedding(torch.zeros(1, 4, 8, 8), (32, 32), (32, 32))
    with outputs.protecting([victim]), pytest.warns(UserWarning, match="one of the input"):
        assert cache.put(key, emb) is None
    assert digest(victim) == before
    with outputs.protecting([victim]):
        cache.limit_bytes = 0
        cache.evict()
    assert digest(victim) == before
