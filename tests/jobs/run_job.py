"""Runs one indexing job in a child process (the kill tests SIGKILL it): ``python -m tests.jobs.run_job``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mm.index.jobs import build_job

from tests.jobs.conftest import encoder, index_target


def main() -> None:
    corpus, index, delay, workers = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    report = build_job(corpus, index_target(index), encoder=encoder(delay_s=delay), workers=workers,
                       docs_per_unit=8, segment_docs=16, progress=False, resume=True)
    print(json.dumps(report.to_dict()))


if __name__ == "__main__":
    main()
