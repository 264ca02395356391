"""What TLS costs a remote worker: the same job over loopback, plaintext and TLS 1.3, one sitting.

    python utils/bench_tls.py [--image test_images/photo_8k.jpg] [--repeat 5] [--workers 1]

A real master (in this process) and real worker subprocesses on 127.0.0.1 with shared memory
off, so every pixel crosses the socket (the way it does to another machine): an 8K RGB image is
~100 MB to the workers and ~33 MB of gray rows back. Plaintext runs as a local worker would; TLS
is forced by giving the workers the master's fingerprint. Prints the median job time and the
wire throughput of each, and their ratio. The checks of results stay on (as by default).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distgray.imaging.load import load_image  # noqa: E402
from distgray.master.server import Master, MasterConfig  # noqa: E402
from distgray.net.tls import server_context  # noqa: E402

TOKEN = "bench-token-0123456789"


def run(pixels: object, tls: bool, workers: int, repeat: int, verify_rows: int) -> list[tuple[float, int]]:
    ctx = server_context()
    master = Master(
        MasterConfig(
            host="127.0.0.1", port=0, token=TOKEN.encode(), tls=ctx, shared_memory=False, verify_rows=verify_rows
        )
    )
    port = master.start()[1]
    extra = [f"--tls-fingerprint={ctx.fingerprint}"] if tls else []
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "worker_client.py"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                f"--token={TOKEN}",
                "--id",
                f"w{i}",
                "--no-shared-memory",
                "--log-level",
                "warning",
                *extra,
            ]
        )
        for i in range(workers)
    ]
    try:
        assert master.wait_for_workers(workers, timeout=60)
        assert all(w.secure == tls for w in master.live_workers())
        master.run(pixels, "warm-up", timeout=300)  # type: ignore[arg-type]
        out = []
        for _ in range(repeat):
            before = sum(w.bytes_in + w.bytes_out for w in master.workers.values())
            t0 = time.perf_counter()
            job = master.run(pixels, "bench", timeout=300)  # type: ignore[arg-type]
            took = time.perf_counter() - t0
            assert job.failure is None, job.failure
            moved = sum(w.bytes_in + w.bytes_out for w in master.workers.values()) - before
            out.append((took, moved))
        return out
    finally:
        master.close("bench over")
        for p in procs:
            p.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", type=Path, default=ROOT / "test_images" / "photo_8k.jpg")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--verify-rows", type=int, default=2)
    args = ap.parse_args()
    loaded = load_image(args.image)
    assert loaded.pixels is not None
    print(f"{args.image.name}: {loaded.width}x{loaded.height}, {args.workers} worker(s), median of {args.repeat}")
    medians = {}
    for name, tls in (("plaintext", False), ("TLS 1.3", True), ("plaintext ", False), ("TLS 1.3 ", True)):
        runs = run(loaded.pixels, tls, args.workers, args.repeat, args.verify_rows)
        took = statistics.median(t for t, _ in runs)
        mb = statistics.median(m for _, m in runs) / 1e6
        medians.setdefault(name.strip(), []).append(took)
        print(f"  {name:11s} job {took:.3f} s   {mb:.0f} MB on the wire   {mb / took:.0f} MB/s")
    plain, secure = min(medians["plaintext"]), min(medians["TLS 1.3"])
    print(f"TLS / plaintext job time (best of the two rounds each): {secure / plain:.2f}x")


if __name__ == "__main__":
    main()
