#!/usr/bin/env python3
"""Download the WikiChurches dataset (Zenodo record 5166987); the same as `ssl-jax download`.

    python scripts/download_wikichurches.py --list
    python scripts/download_wikichurches.py --dest dataset            # the study's files
    python scripts/download_wikichurches.py --dest dataset --files building_parts.json,churches.json
    python scripts/download_wikichurches.py --dest dataset --verify-only

A thin wrapper: everything lives in `ssl_jax.io.dataset.download` (see `ssl_jax.cli.data`).
"""

from ssl_jax.cli.data import download

if __name__ == "__main__":
    download(prog_name="download_wikichurches.py")
