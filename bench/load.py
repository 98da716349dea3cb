"""Load run: many concurrent gradio_client clients against the real app on 127.0.0.1.

    python -m bench.load [--clients 32] [--requests 4] [--method fast|artfusion] [--timeout 120] [--device cpu]

Starts ``demo.py`` in a subprocess (tiny random ArtFusion weights for ``--method artfusion``), then every client
sends its requests one after another, each with its own content picture (a numbered patch in one corner) and its
own seed. Checks that every request gets its own result (the content's pixel digest, the strength and, for
methods that take one, the seed in the returned PNG's metadata) or an explicit "queue is full" answer, that none
is lost or hangs past ``--timeout``, and samples the server's RSS. Prints p50/p95 latency and throughput; writes
bench/results/load_<method>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(method: str, port: int, device: str = "cpu") -> subprocess.Popen:
    command = [
        sys.executable,
        "demo.py",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        device,
        "--backend",
        "local",
        "--method",
        method,
    ]
    if method == "artfusion":
        sys.path.insert(0, str(ROOT / "tests"))
        from artfusion_tiny import tiny_pipeline

        folder = Path(tempfile.mkdtemp(prefix="load-artfusion-"))
        tiny_pipeline().save_pretrained(folder)
        command += ["--weights", f"artfusion={folder}"]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/gradio_api/info", timeout=2)  # noqa: S310 (loopback)
            return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("the app did not start within 120 s")


MAX_SIDE = 256


def numbered_contents(count: int, folder: Path) -> list[tuple[Path, str]]:
    """``count`` different content pictures (the test photo at working size, a numbered patch in one corner), each
    with the pixel digest the studio will record for it."""
    from pipelines import image_digest, load_image

    photo = load_image(ROOT / "assets" / "content" / "chelsea.jpg", max_side=MAX_SIDE)  # no further resizing
    pictures = []
    for number in range(count):
        picture = photo.copy()
        picture.paste((number % 256, number // 256 % 256, 7), (0, 0, 4, 4))
        path = folder / f"content-{number}.png"
        picture.save(path)
        pictures.append((path, image_digest(load_image(path, role="content", max_side=MAX_SIDE))))
    return pictures


def run_load(method: str, clients: int, requests: int, timeout: float, device: str = "cpu") -> dict:
    """Start the app, let ``clients`` clients send ``requests`` requests each, and return the figures."""
    from gradio_client import Client, handle_file

    from pipelines import get_method, read_png_metadata

    uses_seed = get_method(method).uses_seed  # the fast method is deterministic: its results record no seed
    contents = numbered_contents(clients * requests, Path(tempfile.mkdtemp(prefix="load-contents-")))
    port = free_port()
    server = start_server(method, port, device)
    url = f"http://127.0.0.1:{port}/"
    style = str(ROOT / "assets" / "style" / "van-gogh-starry-night.jpg")
    extra = {"steps": 2} if method == "artfusion" else {}
    outcomes: list[dict] = []
    lock = threading.Lock()
    rss_samples = [rss_mb(server.pid)]
    stop = threading.Event()

    def sample_rss() -> None:
        while not stop.is_set():
            rss_samples.append(rss_mb(server.pid))
            time.sleep(0.5)

    def client_run(index: int) -> None:
        client = Client(url, verbose=False)
        for number in range(requests):
            seed = index * 1000 + number  # unique per request: the result must carry this very seed
            strength = round(0.3 + 0.1 * (number % 5), 2)
            content, digest = contents[index * requests + number]  # unique per request, too
            began = time.perf_counter()
            outcome = {"client": index, "seed": seed}
            try:
                job = client.submit(
                    content=handle_file(str(content)),
                    style=handle_file(style),
                    method=method,
                    strength=strength,
                    seed=seed,
                    max_side=MAX_SIDE,
                    api_name="/stylize",
                    **extra,
                )
                path = job.result(timeout=timeout)
                meta = read_png_metadata(path)
                expected = (digest, strength, seed if uses_seed else None)
                got = (meta["content_digest"], meta["strength"], meta["seed"])
                outcome["status"] = "ok" if got == expected else "mixed-up"
            except TimeoutError:
                outcome["status"] = "timeout"
            except Exception as exc:  # "Queue is full" is an explicit, acceptable answer; anything else is not
                outcome["status"] = "queue-full" if "queue is full" in str(exc).lower() else f"error: {exc}"
            outcome["latency_s"] = time.perf_counter() - began
            with lock:
                outcomes.append(outcome)

    threading.Thread(target=sample_rss, daemon=True).start()
    began = time.perf_counter()
    threads = [threading.Thread(target=client_run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    stop.set()
    rss_after = rss_mb(server.pid)
    server.terminate()
    server.wait(timeout=30)

    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome["status"]] = counts.get(outcome["status"], 0) + 1
    latencies = sorted(o["latency_s"] for o in outcomes if o["status"] == "ok")
    expected = clients * requests
    result = {
        "benchmark": "load",
        "method": method,
        "clients": clients,
        "requests_per_client": requests,
        "requests": expected,
        "answered": len(outcomes),
        "outcomes": counts,
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3) if latencies else None,
        "throughput_per_s": round(counts.get("ok", 0) / elapsed, 2),
        "wall_s": round(elapsed, 1),
        "rss_mb": {"start": round(rss_samples[0]), "peak": round(max(rss_samples)), "end": round(rss_after)},
        "device": device,
        "cpu_cores": os.cpu_count(),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--method", default="fast", choices=["fast", "artfusion"])
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one request may take, queue included")
    parser.add_argument("--device", default="cpu", help="the app's --device")
    args = parser.parse_args()
    result = run_load(args.method, args.clients, args.requests, args.timeout, args.device)
    print(json.dumps(result, indent=2))
    (ROOT / "bench" / "results" / f"load_{result['method']}.json").write_text(json.dumps(result, indent=2) + "\n")
    bad = {k: v for k, v in result["outcomes"].items() if k not in ("ok", "queue-full")}
    if result["answered"] != result["requests"] or bad:
        raise SystemExit(f"FAILED: {result['requests'] - result['answered']} lost, problems: {bad}")


if __name__ == "__main__":
    main()
