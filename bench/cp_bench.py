"""``berth cp`` archives of many entries: check, extract, pack, and the memory it takes.

    .venv/bin/python -m bench.cp_bench                     # 480,801 entries (~235 MiB)
    .venv/bin/python -m bench.cp_bench --dirs 100          # 60,101 entries
    .venv/bin/python -m bench.cp_bench --dir /mnt/tmpfs    # extract there (disk left out)

The archive is the worst case MAX_COPY allows: empty files (one 512-byte header
each) in directories of 600. What the worker does with a copy in is timed step by
step: ``check_archive`` (done before the intent is recorded), then ``unpack``; a
copy out is ``pack`` of the tree made. The peak RSS after each step is printed: the
archive itself is held (as the worker holds it), anything above is the copy's own.
On a shared two-core machine the times move with the load; file creation costs
most, so ``--dir`` on a tmpfs shows the CPU share alone.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import tempfile
import time

from engine.containers import copying
from engine.containers import tarstream as ts
from engine.inroot import Root


def archive(dirs: int, files: int) -> bytes:
    out = io.BytesIO()  # written as it is made: the peak is the archive, once
    out.write(ts.header("top", ts.DIRECTORY, mode=0o755, uid=0, gid=0, mtime=1))
    for d in range(dirs):
        out.write(ts.header(f"top/d{d}", ts.DIRECTORY, mode=0o755, uid=0, gid=0, mtime=1))
        for f in range(files):
            out.write(ts.header(f"top/d{d}/f{f}", ts.REGULAR, mode=0o644, uid=0, gid=0,
                                mtime=1))
    out.write(ts.end_of_archive(out.tell()))
    return out.getvalue()


def peak_mib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dirs", type=int, default=800)
    parser.add_argument("--files", type=int, default=600)
    parser.add_argument("--dir", default=None, help="where to extract (default: a temp dir)")
    args = parser.parse_args()
    data = archive(args.dirs, args.files)
    entries = 1 + args.dirs * (args.files + 1)
    print(f"{entries} entries, {len(data) / 2**20:.0f} MiB; peak RSS {peak_mib()} MiB "
          "with the archive held")
    where = tempfile.mkdtemp(prefix="berth-cp-bench-", dir=args.dir)
    try:
        os.mkdir(os.path.join(where, "data"))
        with Root.open(where) as root:
            for step, run in (
                    ("check_archive", lambda: copying.check_archive(data)),
                    ("unpack", lambda: copying.unpack(root, "/data/", data)),
                    ("pack", lambda: len(copying.pack(root, "/data/top"))),
            ):
                started = time.monotonic()
                result = run()
                print(f"{step:14} {time.monotonic() - started:7.1f} s  ({result})  "
                      f"peak RSS {peak_mib()} MiB")
    finally:
        shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    main()
