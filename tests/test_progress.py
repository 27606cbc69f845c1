"""The decode progress: a line per 10 % off a terminal, one rewritten line on a terminal."""

from __future__ import annotations

import io
import re

from hpo.data._progress import DecodeProgress
from hpo.testing import make_image_folder


def test_off_a_terminal_one_plain_line_per_tenth():
    out = io.StringIO()
    progress = DecodeProgress(200, "decoding images", stream=out, tty=False)
    for _ in range(200):
        progress.advance()
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10
    assert [int(re.search(r"\((\d+)%\)", line).group(1)) for line in lines] == \
        list(range(10, 101, 10))
    assert re.fullmatch(r"decoding images: 200/200 \(100%\), [\d,]+ images/s, 0:00 left",
                        lines[-1])


def test_on_a_terminal_one_line_rewritten_in_place():
    out = io.StringIO()
    progress = DecodeProgress(50, stream=out, tty=True)
    for _ in range(50):
        progress.advance()
    progress.close()
    text = out.getvalue()
    assert text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1
    assert "50/50 (100%)" in text.rsplit("\r", 1)[-1]


def test_building_the_cache_reports_progress(tmp_path, capsys):
    import logging

    from hpo.config import DataConfig
    from hpo.data import load_dataset

    logging.getLogger("hpo").setLevel(logging.INFO)  # as the CLI without --quiet
    folder = make_image_folder(tmp_path / "images", per_class=10)
    load_dataset(DataConfig(source=str(folder)), (24, 24), seed=0, cache_dir=tmp_path / "c")
    err = capsys.readouterr().err
    assert "decoding images into the cache (24x24): 20/20 (100%)" in err
    load_dataset(DataConfig(source=str(folder)), (24, 24), seed=0, cache_dir=tmp_path / "c")
    assert "decoding" not in capsys.readouterr().err  # built once, then reused
    logging.getLogger("hpo").setLevel(logging.WARNING)  # as --quiet: nothing shown
    load_dataset(DataConfig(source=str(folder)), (20, 20), seed=0, cache_dir=tmp_path / "c")
    assert "decoding" not in capsys.readouterr().err
    logging.getLogger("hpo").setLevel(logging.NOTSET)
