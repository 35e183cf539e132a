"""The development secrets file (devsecrets.py): one file per folder, readable by its owner only, the same for
every process that starts in that folder, even two nodes started at the same moment."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from blocks_rt.devsecrets import DEV_FILE, with_dev_secrets
from blocks_rt.settings import Settings


def secrets_made_in(folder: Path) -> tuple[str | None, str | None]:
    settings, _ = with_dev_secrets(Settings(), folder)
    return settings.jwt_secret, settings.api_key


def test_processes_starting_at_once_in_one_folder_share_one_secret(tmp_path: Path) -> None:
    with ProcessPoolExecutor(8) as pool:
        made = set(pool.map(secrets_made_in, [tmp_path] * 16))
    assert len(made) == 1 and None not in next(iter(made))
    assert os.listdir(tmp_path) == [DEV_FILE]  # no draft left behind
    assert stat.S_IMODE((tmp_path / DEV_FILE).stat().st_mode) == 0o600
    assert secrets_made_in(tmp_path) in made  # and a later start reads the same
