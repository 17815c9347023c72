"""Many simultaneous app sessions: every one renders, and the server's memory stays bounded.

    python -m bench.app_sessions --sessions 10 --rounds 2

Starts `streamlit run studio/app.py` headless (one torch thread, as `synthstudio app`), then in
each round opens `--sessions` browser pages at once (Debian chromium through Playwright, one
context each: separate Streamlit sessions), and in every page waits for its first sound (each
session renders its point on load), then clicks render and waits until the rerun is over and
the player is back. A session fails on a timeout,
a Streamlit exception box or an inline error. The server's resident memory (VmRSS of the
streamlit process) is read before the first round, after each round and at its peak (sampled
every 0.2 s); bounded means the rounds after the first add little: the models are loaded once
(st.cache_resource) and a closed session's state is freed. JSON in bench/results/app_sessions.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from bench.common import write_result

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def start_server(port: int) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE",
               STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "studio" / "app.py"),
         "--server.headless", "true", "--server.port", str(port), "--server.address",
         "127.0.0.1", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as r:
                if r.read().strip() == b"ok":
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("streamlit did not become healthy")


async def one_session(browser, url: str, index: int, timeout_ms: int) -> dict:
    start = time.perf_counter()
    context = await browser.new_context(viewport={"width": 1300, "height": 1500})
    page = await context.new_page()
    try:
        await page.goto(url)
        await page.wait_for_selector("audio", timeout=timeout_ms)
        first = time.perf_counter() - start
        await page.get_by_role("button", name="render", exact=True).click()
        # The click reruns the script: wait until the server is done (no running indicator)
        # and the player is back.
        await page.wait_for_timeout(500)
        await page.wait_for_function(
            "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
            " && document.querySelector('audio')", timeout=timeout_ms)
        errors = await page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]').count()
        return {"ok": errors == 0, "first_sound_s": first,
                "total_s": time.perf_counter() - start, "errors": errors}
    except Exception as err:  # a timeout or a closed page: this session failed
        return {"ok": False, "error": f"{type(err).__name__}: {str(err)[:200]}",
                "total_s": time.perf_counter() - start}
    finally:
        await context.close()


async def run_round(url: str, sessions: int, timeout_ms: int) -> list[dict]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                           args=["--no-sandbox", "--disable-dev-shm-usage",
                                                 "--disable-gpu", "--disable-background-networking"])
        try:
            return await asyncio.gather(*[one_session(browser, url, i, timeout_ms)
                                          for i in range(sessions)])
        finally:
            await browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds per session")
    args = ap.parse_args()
    port = free_port()
    proc = start_server(port)
    url = f"http://127.0.0.1:{port}"
    peak = [0.0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], rss_mb(proc.pid))
            except OSError:
                return
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rounds = []
    try:
        idle = rss_mb(proc.pid)
        for r in range(args.rounds):
            t = time.perf_counter()
            results = asyncio.run(run_round(url, args.sessions, int(args.timeout * 1000)))
            time.sleep(2.0)  # let the server drop the closed sessions
            rounds.append({"round": r + 1, "seconds": time.perf_counter() - t,
                           "ok": sum(x["ok"] for x in results), "sessions": results,
                           "rss_after_mb": rss_mb(proc.pid), "peak_rss_mb": peak[0]})
            print(f"round {r + 1}: {rounds[-1]['ok']}/{args.sessions} sessions rendered in "
                  f"{rounds[-1]['seconds']:.1f} s; server RSS {rounds[-1]['rss_after_mb']:.0f} MB "
                  f"(peak so far {peak[0]:.0f} MB)")
            for x in results:
                if not x["ok"]:
                    print("  failed:", x.get("error") or f"{x.get('errors')} error boxes")
    finally:
        stop.set()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    growth = rounds[-1]["rss_after_mb"] - rounds[0]["rss_after_mb"] if rounds else None
    payload = {"sessions": args.sessions, "rounds": rounds, "idle_rss_mb": idle,
               "peak_rss_mb": peak[0], "growth_after_first_round_mb": growth,
               "all_ok": all(r["ok"] == args.sessions for r in rounds)}
    print(f"idle {idle:.0f} MB, peak {peak[0]:.0f} MB, growth after round 1: {growth:+.0f} MB")
    print(f"wrote {write_result('app_sessions', payload)}")


if __name__ == "__main__":
    main()
