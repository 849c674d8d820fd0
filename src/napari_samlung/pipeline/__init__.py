"""Headless runs: the console script's work, without the console.

- :mod:`.segment`: segment one image from a mask, a prompts file or a seed
  slice, and score it where a ground truth exists;
- :mod:`.cases`: load, segment and score one case of a dataset;
- :mod:`.evaluate`: a resumable dataset run (one loop over a *case map*,
  local or Dask) and its summary payload;
- :mod:`.dask`: the Dask case map, with a per-process model cache;
- :mod:`.paper`: comparison of a run's per-slice CSV with the paper's.

``pipeline`` uses ``core`` and ``io``; nothing here knows napari or argparse.
Submodules are imported on use, so that ``napari-samlung --help`` stays fast.
"""
