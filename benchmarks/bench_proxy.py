"""The wake proxy's added latency on a warm instance (issue 15): p50 and p99 through the proxy, against the instance directly.

    python benchmarks/bench_proxy.py [--quick | --full]

`vastops sim` (no rate limits), `vastops watchdog` and `vastops proxy` run as processes;
the instance is started and healthy before anything is timed. One keep-alive session
per path sends the same chat completion (3 words, the simulator's time per token set to
0 with its ``x-sim-token-s`` header), in alternating batches of 50 so that both paths
see the same machine load; a streamed completion (time to its last byte) is measured
the same way. The direct path is the baseline of the same run. Figures only, never
pass or fail.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    AUTH,
    CONTROL_KEY,
    VASTOPS,
    Figure,
    Processes,
    Workdir,
    clean_env,
    free_port,
    median,
    ms,
    percentile,
    print_table,
    progress,
    start_sim,
    watchdog_env,
)

BATCH = 50
BODY = {"model": "sim-model", "messages": [{"role": "user", "content": "one two three"}]}
NO_WAIT = {"x-sim-token-s": "0"}


def _time(session: requests.Session, url: str, body: dict) -> float:
    t0 = time.perf_counter()
    answer = session.post(url, json=body, headers=NO_WAIT, timeout=30)
    answer.content  # noqa: B018  # the whole answer, a stream's too
    took = time.perf_counter() - t0
    if answer.status_code != 200:
        raise RuntimeError(f"{url} answered {answer.status_code}: {answer.text[:200]}")
    return took


def run(quick: bool = False, full: bool = False) -> dict:
    n = 200 if quick else 2000 if full else 600
    with Workdir() as work:
        procs = Processes(work)
        try:
            sim = start_sim(procs)
            port = free_port()
            api = f"http://127.0.0.1:{port}/infra/vast"
            procs.start(
                [VASTOPS, "watchdog", "--port", str(port)],
                env=watchdog_env(work, sim),
                name="watchdog",
                ready_url=api[: -len("/infra/vast")] + "/healthz",
            )
            answer = requests.post(api + "/power/on", headers=AUTH, json={"wait_for_health": True}, timeout=60)
            answer.raise_for_status()
            direct = answer.json()["endpoint_base_url"]
            proxy_port = free_port()
            proxy = f"http://127.0.0.1:{proxy_port}"
            env = clean_env(CONTROL_API_KEY=CONTROL_KEY, VASTOPS_WATCHDOG_URL=api)
            procs.start([VASTOPS, "proxy", "--port", str(proxy_port)], env=env, name="proxy", ready_url=proxy + "/healthz")
            figures, raw = [], {}
            for case, body in (("chat completion", BODY), ("streamed chat completion", {**BODY, "stream": True})):
                progress(f"proxy: {n} x {case}, direct and through the proxy")
                times: dict[str, list[float]] = {"direct": [], "proxy": []}
                sessions = {"direct": requests.Session(), "proxy": requests.Session()}
                urls = {"direct": direct + "/v1/chat/completions", "proxy": proxy + "/v1/chat/completions"}
                for path in times:  # warm-up: connections, the proxy's first status read
                    _time(sessions[path], urls[path], body)
                while len(times["proxy"]) < n:
                    for path in times:
                        times[path] += [_time(sessions[path], urls[path], body) for _ in range(BATCH)]
                d, p = times["direct"], times["proxy"]
                for q, name in ((50, "p50"), (99, "p99")):
                    added = percentile(p, q) - percentile(d, q)
                    figures.append(
                        Figure(
                            "proxy", case, f"{name} latency", ms(percentile(p, q)), f"direct {ms(percentile(d, q))}; added {ms(added)}", ""
                        )
                    )
                raw[case] = {"direct_median_s": median(d), "proxy_median_s": median(p), "n": len(p)}
            figures[0].note = "warm instance, keep-alive; alternating batches of 50"
            return {"figures": figures, "raw": raw}
        finally:
            procs.stop_all()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--full", action="store_true")
    args = p.parse_args(argv)
    print_table(run(quick=args.quick, full=args.full)["figures"], "the wake proxy's added latency")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
