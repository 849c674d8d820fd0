"""Option values, argparse's own errors, the environment and warnings (issue 13, 5 and 8).

- Every numeric option refuses a value that makes no sense with one line.
- argparse's errors (a bad value, an unknown choice, a missing argument) are one
  line ``napari-samlung: error: ... (see napari-samlung <command> --help)``, exit 2,
  without the usage block.
- ``$SAMLUNG_CACHE_DIR`` or ``--cache-dir`` that is a file, a checkpoint that is
  a folder or holds code: one line, before any work.  A cache that cannot be
  written: one warning line, the run goes on.
- The installed command keeps third-party warnings off stderr and prints ours
  as one line each.

The conventions and helpers are in ``cli_helpers.py``.
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pytest
import torch
from cli_helpers import (
    ERROR,
    TINY,
    refused,
    run_cli,
    segment_args,
    xray_fixture,  # noqa: F401 (the xray fixture)
)

from napari_samlung import cli
from napari_samlung.cli import EXIT_USAGE, build_parser, console_main, main
from napari_samlung.core import cache as cache_mod
from napari_samlung.errors import SamlungWarning

EVALUATE = ["evaluate", "x.png", "m.png"]
SEGMENT = ["segment", "x.png", "--prompts-from", "m.png", "-o", "o.png"]
COMPARE = ["compare-paper", "a.csv", "b.csv"]


def _help_hint(command: str) -> str:
    return f"(see napari-samlung {command} --help)"


# --------------------------------------------------------------------------- numeric options


BAD_VALUES = [
    (EVALUATE, "--limit", "-1", "-1 is too small; give a whole number of 1 or more"),
    (EVALUATE, "--limit", "0", "0 is too small; give a whole number of 1 or more"),
    (EVALUATE, "--limit", "x", "'x' is not a whole number; give one of 1 or more"),
    (EVALUATE, "--limit", "2.5", "'2.5' is not a whole number"),
    (EVALUATE, "--workers", "0", "0 is too small; give a whole number of 1 or more"),
    (EVALUATE, "--workers", "-1", "-1 is too small"),
    (EVALUATE, "--batch-size", "0", "0 is too small; give a whole number of 1 or more"),
    (SEGMENT, "--batch-size", "-4", "-4 is too small"),
    (SEGMENT, "--cache-limit-mb", "-5", "-5 is out of range; give a number of 0 or more"),
    (SEGMENT, "--cache-limit-mb", "nan", "nan is not a finite number; give a number of 0 or"),
    (SEGMENT, "--cache-limit-mb", "inf", "inf is not a finite number"),
    (SEGMENT, "--cache-limit-mb", "1e999", "1e999 is not a finite number"),
    (SEGMENT, "--cache-limit-mb", "lots", "'lots' is not a number; give a number of 0 or more"),
    (SEGMENT, "--seed-slice", "-1", "-1 is too small; give a whole number of 0 or more"),
    (SEGMENT, "--window-level", "nan", "nan is not a finite number; give a finite number"),
    (SEGMENT, "--window-width", "inf", "inf is not a finite number"),
    (COMPARE, "--threshold", "nan", "nan is not a finite number; give a number from 0 to 1"),
    (COMPARE, "--threshold", "-0.1", "-0.1 is out of range; give a number from 0 to 1"),
    (COMPARE, "--threshold", "2", "2 is out of range"),
    (["demo"], "--batch-size", "0", "0 is too small"),
]


@pytest.mark.parametrize(
    "base, option, value, expected",
    BAD_VALUES,
    ids=[f"{b[0]}{o}={v}" for b, o, v, _ in BAD_VALUES],
)
def test_value_that_makes_no_sense_is_one_line(capsys, base, option, value, expected):
    line = refused(capsys, [*base, option, value])
    assert line.startswith(f"{ERROR}argument {option}: ")
    assert expected in line
    assert line.endswith(_help_hint(base[0]))


def test_every_numeric_option_is_checked():
    """No option of any command parses with a bare int or float (which take -1 and nan)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():
        for action in command._actions:
            assert action.type not in (int, float), f"{name} {action.option_strings}"


def test_sensible_values_still_parse():
    args = build_parser().parse_args(
        [*EVALUATE, "--limit", "1", "--workers", "2", "--batch-size", "1"]
        + ["--cache-limit-mb", "0", "--window-level", "-600", "--window-width", "1500"]
    )
    assert (args.limit, args.workers, args.batch_size) == (1, 2, 1)
    assert args.cache_limit_mb == 0.0 and args.window_level == -600.0
    args = build_parser().parse_args([*SEGMENT, "--seed-slice", "0", "--cache-limit-mb", "0.5"])
    assert args.seed_slice == 0 and args.cache_limit_mb == 0.5
    assert build_parser().parse_args([*COMPARE, "--threshold", "0"]).threshold == 0.0
    assert build_parser().parse_args([*COMPARE, "--threshold", "1"]).threshold == 1.0


# --------------------------------------------------------------------------- argparse's errors


ARGPARSE_ERRORS = [
    ([*SEGMENT, "--strategy", "bogus"], "segment", "argument --strategy: invalid choice: 'bogus'"),
    ([*SEGMENT, "--device", "tpu"], "segment", "argument --device: invalid choice: 'tpu'"),
    (["segment", "x.png", "--auto"], "segment", "required: -o/--output"),
    (["segment", "x.png", "-o", "o.png"], "segment", "one of the arguments --prompts-from"),
    (["evaluate"], "evaluate", "the following arguments are required: images"),
    (["compare-paper", "a.csv"], "compare-paper", "required: paper"),
    ([*SEGMENT, "--bogus", "3"], "segment", "unrecognized arguments: --bogus 3"),
    ([*SEGMENT, "--auto"], "segment", "argument --auto: not allowed with argument"),
    ([*EVALUATE, "--limit"], "evaluate", "argument --limit: expected one argument"),
]


@pytest.mark.parametrize("args, command, expected", ARGPARSE_ERRORS)
def test_argparse_error_is_one_line_without_usage(capsys, args, command, expected):
    line = refused(capsys, args, check_options=False)
    assert expected in line
    assert line.endswith(_help_hint(command))
    assert "usage:" not in line


@pytest.mark.parametrize(
    "args, expected",
    [([], "required: command"), (["bogus"], "argument command: invalid choice: 'bogus'")],
)
def test_top_level_errors_point_at_the_main_help(capsys, args, expected):
    code, out, err = run_cli(capsys, args)
    assert code == EXIT_USAGE and out == ""
    assert err.splitlines() == [err.strip()] and expected in err
    assert err.strip().endswith("(see napari-samlung --help)")


def test_help_and_version_still_work(capsys):
    assert main(["segment", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: napari-samlung segment") and "--cache-limit-mb" in out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("napari-samlung ")


# --------------------------------------------------------------------------- the environment


def test_cache_dir_environment_variable_that_is_a_file(tmp_path, capsys, monkeypatch, xray):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    monkeypatch.setenv("SAMLUNG_CACHE_DIR", str(blocker))
    out = tmp_path / "pred.png"
    line = refused(capsys, segment_args(*xray, out, "--disk-cache"))
    assert f"$SAMLUNG_CACHE_DIR {blocker} is not a folder (it is a file)" in line
    assert "point it at a folder" in line and not out.exists()
    # without the disk cache the variable is not used: the run goes on
    code, _, err = run_cli(capsys, segment_args(*xray, out))
    assert code == 0 and out.exists(), err


def test_cache_dir_option_below_a_file(tmp_path, capsys, xray):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = tmp_path / "pred.png"
    line = refused(capsys, segment_args(*xray, out, "--cache-dir", blocker / "emb"))
    assert f"--cache-dir {blocker / 'emb'} is not a folder ({blocker} is a file)" in line
    assert not out.exists()


def test_checkpoint_that_is_a_folder(tmp_path, capsys, xray):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "micro.pth").write_bytes(b"w")
    line = refused(capsys, segment_args(*xray, tmp_path / "p.png", "--checkpoint", folder))
    assert f"checkpoint {folder} is a folder, not a weights file (it holds micro.pth)" in line
    assert "point --checkpoint at the .pth file itself" in line


def test_checkpoint_variable_that_is_a_folder(tmp_path, capsys, monkeypatch, xray):
    monkeypatch.setenv("SAMLUNG_CHECKPOINT_MICRO_RANDOM", str(tmp_path))
    line = refused(capsys, segment_args(*xray, tmp_path / "p.png"))
    assert "is a folder, not a weights file" in line
    assert "point $SAMLUNG_CHECKPOINT_MICRO_RANDOM at the .pth file" in line


def test_checkpoint_that_holds_code_is_refused_for_safety(tmp_path, capsys, xray):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    ckpt = tmp_path / "evil.pth"
    torch.save({"model": Payload()}, ckpt)
    line = refused(capsys, segment_args(*xray, tmp_path / "p.png", "--checkpoint", ckpt))
    assert f"{ckpt}: refused for safety" in line
    assert "holds code or objects that are not weights (posix.system)" in line
    assert "truncated or corrupt" not in line and not (tmp_path / "ran").exists()


# --------------------------------------------------------------------------- warnings


def _console(monkeypatch, capsys, args: list) -> tuple[int, list[str]]:
    """``console_main`` as the installed command runs it: exit code and stderr lines."""
    monkeypatch.setattr(sys, "argv", ["napari-samlung", *[str(a) for a in args]])
    monkeypatch.setattr(sys, "warnoptions", [])
    code = console_main()
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, [line for line in err.splitlines() if line.strip()]


def _noisy_command(args) -> int:
    """Warnings of every kind, as numpy, torch and a library emit them, then ours."""
    big = np.array([3e38], np.float32)
    _ = big * np.float32(10)  # numpy: RuntimeWarning overflow
    _ = np.array([1 + 2j]).astype(np.float64)  # numpy: ComplexWarning
    warnings.warn_explicit(
        "You are using torch.load with weights_only=False",
        FutureWarning,
        "torch/serialization.py",
        1,
    )
    warnings.warn_explicit("a library's note", UserWarning, "site-packages/lib/mod.py", 7)
    warnings.warn("the cache is not writable;\n  going on", SamlungWarning, stacklevel=1)
    return 0


def test_console_keeps_third_party_warnings_off_stderr(monkeypatch, capsys):
    monkeypatch.setattr(cli, "cmd_demo", _noisy_command)
    code, lines = _console(monkeypatch, capsys, ["demo", "--headless"])
    assert code == 0
    assert lines == ["napari-samlung: warning: the cache is not writable; going on"]


def test_python_w_brings_the_other_warnings_back(monkeypatch, capsys):
    shown: list[str] = []
    monkeypatch.setattr(cli, "_ORIGINAL_SHOWWARNING", lambda message, *rest: shown.append(message))
    monkeypatch.setattr(cli, "cmd_demo", _noisy_command)
    monkeypatch.setattr(sys, "argv", ["napari-samlung", "demo", "--headless"])
    monkeypatch.setattr(sys, "warnoptions", ["default"])
    assert console_main() == 0
    assert "napari-samlung: warning: the cache" in capsys.readouterr().err
    assert "a library's note" in [str(m) for m in shown]


def test_console_parse_error_is_one_line(monkeypatch, capsys):
    code, lines = _console(monkeypatch, capsys, [*EVALUATE, "--limit", "-1"])
    assert code == EXIT_USAGE and len(lines) == 1 and lines[0].startswith(ERROR)


def test_unwritable_cache_is_one_warning_and_the_run_goes_on(tmp_path, monkeypatch, capsys, xray):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_mod.tempfile, "mkstemp", full)
    out = tmp_path / "pred.png"
    args = segment_args(*xray, out, "--cache-dir", tmp_path / "emb")
    code, lines = _console(monkeypatch, capsys, args)
    assert code == 0 and out.exists()
    warned = [line for line in lines if line.startswith("napari-samlung: warning:")]
    assert len(warned) == 1, lines
    assert "embedding cache" in warned[0] and "cannot write (No space left on device)" in warned[0]
    assert "going on without saving embeddings" in warned[0]


def test_tiny_options_are_what_the_helpers_use():
    """The helpers' model flags parse (guards the option checks above)."""
    args = build_parser().parse_args([*SEGMENT, *TINY])
    assert args.model == "micro_random" and args.precision == "fp32"
