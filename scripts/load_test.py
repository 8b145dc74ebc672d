"""Load test: many browser sessions on one app process at once, each with its own settings.

    python scripts/load_test.py --sessions 20

Starts the app on a free loopback port (127.0.0.1 only), opens N sessions at once (one headless
chromium, one context per session) on the GRPO and RLVR pages by URL, each with a distinct seed
and iteration count, and waits for each page's summary. Every session's "final true reward" must
equal the same configs trained alone in this process with grpo_core. Prints the errors (must be
0), the peak resident memory of the server's process tree and the p50/p95 time to a result.
Exits non-zero on any error or mismatch. Bounded: at most 50 sessions, and --timeout seconds.
Not part of `make test`: it measures, and its timings depend on the machine.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from tests.browser.util import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, free_port, start_app, stop_app  # noqa: E402

MAX_SESSIONS = 50
SEEDS = 4   # runs per session (the page's seeds slider)


@dataclass
class Session:
    index: int
    page: str           # "GRPO" or "RLVR"
    seed: int
    iterations: int
    shown: str = ""     # the final true reward the page shows
    expected: str = ""  # the same configs trained alone, formatted as the page does
    seconds: float = float("nan")
    error: str = ""

    @property
    def prefix(self) -> str:
        return self.page.lower()

    @property
    def url_query(self) -> str:
        p = self.prefix
        return f"{p}_seed={self.seed}&{p}_iterations={self.iterations}&{p}_seeds={SEEDS}"

    def configs(self):
        from grpo_core import GRPOConfig, RLVRConfig, seed_configs
        cls = GRPOConfig if self.page == "GRPO" else RLVRConfig
        return seed_configs(cls(seed=self.seed, iterations=self.iterations), SEEDS)


def plan(n: int) -> list[Session]:
    """Distinct settings per session: GRPO and RLVR alternately, seeds 100, 101, ..., 100-200 iterations."""
    return [Session(i, ("GRPO", "RLVR")[i % 2], 100 + i * SEEDS, 100 + (i * 37) % 101) for i in range(n)]


def expected_rewards(sessions: list[Session]) -> None:
    """Each session's configs trained alone, in this process, from the default upstream."""
    import torch

    from grpo_core import build_upstream, run_many
    torch.set_num_threads(1)
    up = build_upstream()
    for s in sessions:
        results = run_many(up, s.configs())
        s.expected = f"{sum(r.history.true_reward.iloc[-1] for r in results) / len(results):.3f}"


class RssSampler(threading.Thread):
    """Peak resident memory of a process and its children, sampled every `every` seconds."""

    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.proc, self.every, self.done = psutil.Process(pid), every, threading.Event()
        self.peak, self.cpu_seconds = 0, 0.0

    def run(self):
        while not self.done.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs if p.is_running()))
                self.cpu_seconds = sum(sum(p.cpu_times()[:2]) for p in procs if p.is_running())
            except psutil.Error:
                pass
            self.done.wait(self.every)


async def visit(browser, base: str, s: Session, timeout: float) -> None:
    context = await browser.new_context(viewport=VIEWPORT)
    try:
        page = await context.new_page()
        page.on("pageerror", lambda exc: setattr(s, "error", s.error or f"JavaScript: {exc}"))
        start = time.monotonic()
        await page.goto(f"{base}/{s.page}?{s.url_query}", wait_until="domcontentloaded",
                        timeout=timeout * 1000)
        # The summary's first metric is the final exact true reward (mean over seeds).
        value = page.locator('[data-testid="stMetricValue"]').first
        await value.wait_for(timeout=timeout * 1000)
        s.seconds = time.monotonic() - start
        s.shown = (await value.inner_text()).strip()
        problems = await page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]').count()
        if problems:
            s.error = s.error or f"{problems} error element(s) on the page"
    except Exception as exc:  # a timeout or a crash is this session's error, not the run's
        s.error = s.error or f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    finally:
        await context.close()


async def drive(base: str, sessions: list[Session], timeout: float) -> None:
    from playwright.async_api import async_playwright
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            await asyncio.wait_for(asyncio.gather(*(visit(browser, base, s, timeout) for s in sessions)),
                                   timeout + 30)
        finally:
            await browser.close()


def _busy_fraction(before, after) -> float:
    idle = (after.idle + getattr(after, "iowait", 0)) - (before.idle + getattr(before, "iowait", 0))
    total = sum(after) - sum(before)
    return 1 - idle / total if total > 0 else float("nan")


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20, help=f"concurrent sessions (1 to {MAX_SESSIONS})")
    parser.add_argument("--timeout", type=float, default=300, help="seconds each session may take")
    args = parser.parse_args(argv)
    sessions = plan(min(max(args.sessions, 1), MAX_SESSIONS))

    print(f"Training the {len(sessions)} sessions' configs alone, for reference…", flush=True)
    expected_rewards(sessions)
    port = free_port()
    log = ROOT / "test-output" / "load_test_server.log"
    log.parent.mkdir(exist_ok=True)
    server = start_app(port, log_path=log)
    sampler = RssSampler(server.pid)
    idle_rss = psutil.Process(server.pid).memory_info().rss
    sampler.start()
    try:
        print(f"Opening {len(sessions)} sessions at once on http://127.0.0.1:{port} …", flush=True)
        wall, busy = time.monotonic(), psutil.cpu_times()
        asyncio.run(drive(f"http://127.0.0.1:{port}", sessions, args.timeout))
        wall, busy = time.monotonic() - wall, _busy_fraction(busy, psutil.cpu_times())
    finally:
        sampler.done.set()
        sampler.join()
        stop_app(server)

    for s in sessions:
        if not s.error and s.shown != s.expected:
            s.error = f"shows {s.shown}, trained alone gives {s.expected}"
    if "Traceback" in log.read_text(errors="replace"):
        sessions[0].error = sessions[0].error or f"a traceback in the server log {log}"
    errors = [s for s in sessions if s.error]
    times = [s.seconds for s in sessions if s.seconds == s.seconds]
    for s in sessions:
        print(f"  {s.index:2d} {s.page:4s} seed={s.seed:3d} iterations={s.iterations:3d}: "
              f"{s.shown or '-':>6s} (alone {s.expected})  {s.seconds:5.1f} s  {s.error}")
    print(f"sessions {len(sessions)}, errors {len(errors)}, wall {wall:.1f} s")
    if times:
        print(f"time to result: p50 {percentile(times, 0.5):.1f} s, p95 {percentile(times, 0.95):.1f} s, "
              f"max {max(times):.1f} s, mean {statistics.mean(times):.1f} s")
    print(f"server RSS: idle {idle_rss / 2**20:.0f} MiB, peak {sampler.peak / 2**20:.0f} MiB "
          f"(process tree, sampled every 0.2 s); server CPU {sampler.cpu_seconds:.0f} s over {wall:.0f} s "
          f"on {psutil.cpu_count()} cores; the machine was {busy:.0%} busy (the browser takes the rest)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
