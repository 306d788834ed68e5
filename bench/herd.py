"""Herd behaviour of a fleet against one CA: a virtual-time simulation of N join-agents.

Every decision a node takes is made by the real renewal policy of this checkout
(``join_agent.core.renewal.RenewalPolicy``, the object the daemon itself holds): its first
look at an unjoined node draws the splay, ``next_attempt`` says when to ask, ``begin``,
``succeeded`` and ``failed`` move it. Only the I/O is modelled. Time is virtual: the
clock and every random draw are injected, nothing sleeps, so the whole run takes seconds.

The CA model: it signs at most ``capacity`` certificates per 1-second bin; a request beyond
that in the same bin fails (and is wasted), as does every request while the CA is down.
A request takes no time. Offered load is the number of requests per 1-second bin, shown
relative to the capacity.

Scenarios (one config for all of them, printed first):

- cold boot of 1,000 and 5,000 nodes that power on at the same instant, none joined;
- steady state over one certificate lifetime (certificates of random age, as a fleet that
  has been running for a while has);
- CA outages of 5, 10, 15, 20 and 25 % of the lifetime, and of 1 hour and 1 day, starting
  from the steady state at t = 0.

Run from the repository root (it puts ``agent/`` first on the path, so the checkout's
policy is what runs):

    .venv/bin/python bench/herd.py --write     # also docs/herd.png

``--write`` needs matplotlib (the ``bench`` extra; not a runtime dependency).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import heapq
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The checkout's policy, not whatever join_agent an interpreter has installed; and the
# bench harness from the checkout, without PYTHONPATH.
sys.path[:0] = [str(REPO / "agent"), str(REPO)]

from bench.harness import Report, finish, parser, table  # noqa: E402 - after the path tweak

from join_agent.core.durations import format_duration, parse_duration  # noqa: E402
from join_agent.core.protocol import ErrorKind  # noqa: E402
from join_agent.core.renewal import RenewalPolicy  # noqa: E402
from join_agent.core.schedule import Held, renew_at  # noqa: E402

EPOCH = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
SECOND = dt.timedelta(seconds=1)
# Targets of issue 7.
LOAD_LIMIT = 1.5  # offered load never above 1.5x capacity (cold boot; after an outage)
COLD_TARGET_NODES = 1000
COLD_TIME_FACTOR = 1.5  # cold boot done within 1.5x the ideal nodes / capacity


def go_duration(value: dt.timedelta) -> str:
    """The config file's spelling ("10s", "5m", "24h", "1m30s"), so it can be pasted."""
    total = value / SECOND
    out = ""
    for unit, size in (("h", 3600), ("m", 60)):
        if total >= size:
            count, total = divmod(total, size)
            out += f"{int(count)}{unit}"
    if total or not out:
        out += f"{total:g}s"
    return out


@dataclass(frozen=True)
class FleetConfig:
    """The one configuration every scenario runs with."""

    capacity: int  # certificates the CA signs per second
    lifetime: dt.timedelta  # of every certificate the CA issues
    splay: dt.timedelta  # [renewal] splay
    retry_min: dt.timedelta  # [renewal] retry_min
    retry_max: dt.timedelta  # [renewal] retry_max
    join_retry_max: dt.timedelta  # [renewal] join_retry_max
    seed: int

    def lines(self) -> list[str]:
        return [
            f"CA capacity: {self.capacity} certificates/s (requests beyond it in a 1 s bin fail)",
            f"certificate lifetime: {go_duration(self.lifetime)}",
            f'[renewal] splay = "{go_duration(self.splay)}", '
            f'retry_min = "{go_duration(self.retry_min)}", '
            f'retry_max = "{go_duration(self.retry_max)}", '
            f'join_retry_max = "{go_duration(self.join_retry_max)}"',
            f"random seed: {self.seed}",
        ]


@dataclass
class Node:
    """One daemon: its renewal policy and the certificate it holds."""

    rng: random.Random
    policy: RenewalPolicy
    name: str
    held: Held | None = None
    issued: int = 0  # certificates so far: each gets its own serial, hence its own deadline
    expired_for: float = 0.0  # longest time this node spent with an expired certificate


@dataclass
class Run:
    """What the CA saw and what happened to the fleet, in virtual seconds from t = 0."""

    offered: dict[int, int] = field(default_factory=dict)  # 1 s bin -> requests
    rejected: dict[int, int] = field(default_factory=dict)  # 1 s bin -> failed requests
    first_success: dict[int, float] = field(default_factory=dict)  # node -> time
    successes: int = 0
    end: float = 0.0

    def load(self, start: int, stop: int) -> list[int]:
        """Requests in every bin of [start, stop), idle bins included."""
        return [self.offered.get(b, 0) for b in range(start, stop)]

    def wasted(self, start: float = -math.inf, stop: float = math.inf) -> int:
        return sum(n for b, n in self.rejected.items() if start <= b < stop)


class Fleet:
    """N nodes and one CA in virtual time; ``run`` drives them from an event queue."""

    def __init__(self, cfg: FleetConfig, n: int, seed: int) -> None:
        self.cfg = cfg
        # Seeded, so a run is reproducible; these draws are jitter, not secrets.
        master = random.Random(seed)  # noqa: S311
        self.nodes = []
        for i in range(n):
            rng = random.Random(master.random())  # noqa: S311
            policy = RenewalPolicy(
                cfg.retry_min, cfg.retry_max, join_retry_max=cfg.join_retry_max, salt=rng.random()
            )
            self.nodes.append(Node(rng=rng, policy=policy, name=f"{seed}-{i}"))
        self.queue: list[tuple[float, int]] = []
        self.down: tuple[float, float] | None = None  # CA outage [start, end)
        self.served: dict[int, int] = {}
        self.log = Run()
        self.failing = 0  # nodes whose last attempt failed

    # -- set-up ----------------------------------------------------------------------

    def cold_boot(self) -> None:
        """Every node powers on at t = 0 without credentials: the daemon's first look."""
        now = EPOCH
        for i, node in enumerate(self.nodes):
            draw = node.rng.random()
            node.policy.first_look(now, joined=False, splay=self.cfg.splay, draw=draw)
            self._push(i, self._due(node, now))

    def steady_state(self) -> None:
        """Certificates of random age: each node is somewhere between its last renewal and
        its next deadline, uniformly (a renewal process that has run for a long time)."""
        for i, node in enumerate(self.nodes):
            # The deadline as a share of the lifetime depends on the serial alone.
            probe = renew_at(self._certificate(node, EPOCH)) - EPOCH
            node.issued -= 1  # the probe's serial is the one installed below
            self._install(node, EPOCH - probe * node.rng.random())
            self._push(i, self._due(node, EPOCH))

    # -- the I/O around the policy ----------------------------------------------------

    def _certificate(self, node: Node, not_before: dt.datetime) -> Held:
        node.issued += 1
        serial = f"{node.name}-{node.issued}"
        not_after = not_before + self.cfg.lifetime
        return Held(serial=serial, not_before=not_before, not_after=not_after)

    def _install(self, node: Node, not_before: dt.datetime) -> None:
        node.held = self._certificate(node, not_before)

    def _due(self, node: Node, now: dt.datetime) -> dt.datetime:
        return node.policy.next_attempt(now, node.held)

    def _push(self, i: int, at: dt.datetime) -> None:
        heapq.heappush(self.queue, ((at - EPOCH) / SECOND, i))

    def _attempt(self, i: int, node: Node, t: float, now: dt.datetime) -> None:
        """One enrollment against the CA model; daemon._apply with its result."""
        b = math.floor(t)
        self.log.offered[b] = self.log.offered.get(b, 0) + 1
        up = self.down is None or not (self.down[0] <= t < self.down[1])
        ok = up and self.served.get(b, 0) < self.cfg.capacity
        before = node.policy.failures
        node.policy.begin(now)
        if ok:
            self.served[b] = self.served.get(b, 0) + 1
            if node.held is not None and now > node.held.not_after:
                node.expired_for = max(node.expired_for, (now - node.held.not_after) / SECOND)
            self._install(node, now)
            node.policy.succeeded(now)
            self.log.successes += 1
            self.log.first_success.setdefault(i, t)
            if before:
                self.failing -= 1
        else:
            self.log.rejected[b] = self.log.rejected.get(b, 0) + 1
            node.policy.failed(now, "the CA is down or over capacity", ErrorKind.TRANSPORT)
            if not before:
                self.failing += 1

    def run(self, horizon: float, *, until_joined: bool = False, clear_after: float = -1) -> Run:
        """Process events up to ``horizon`` virtual seconds; stop early once every node has
        joined (``until_joined``) or, after ``clear_after``, once no node is failing."""
        n = len(self.nodes)
        while self.queue:
            t, i = self.queue[0]
            if t > horizon:
                break
            if until_joined and len(self.log.first_success) == n:
                break
            if clear_after >= 0 and t > clear_after and self.failing == 0:
                break
            heapq.heappop(self.queue)
            node = self.nodes[i]
            now = EPOCH + dt.timedelta(seconds=t)
            due = self._due(node, now)
            if due > now:  # a wake-up that is not due yet (the daemon recomputes, sleeps)
                self._push(i, due)
                continue
            self._attempt(i, node, t, now)
            self.log.end = t
            self._push(i, self._due(node, now))
        end = (horizon if not self.queue else min(horizon, self.queue[0][0])) + 0.0
        # Certificates that ran out and were not replaced by the end count as expired too.
        stop = EPOCH + dt.timedelta(seconds=end)
        for node in self.nodes:
            if node.held is not None and node.held.not_after < stop:
                node.expired_for = max(node.expired_for, (stop - node.held.not_after) / SECOND)
        return self.log


# -- scenarios -------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    nodes: int
    done_s: float  # cold boot: until all joined; steady: until all renewed; outage: backlog
    peak: float  # offered / capacity, highest 1 s bin in the judged window
    p99: float  # ... its 99th percentile (nearest rank)
    wasted: int  # rejected requests in the judged window (outage: after the CA is back)
    wasted_down: int  # requests sent while the CA was down
    expired: int  # nodes whose certificate ran out before a renewal
    longest_expired_s: float
    window: tuple[int, int]  # the 1 s bins judged
    extra: dict[str, str] = field(default_factory=dict)


def p99(values: Sequence[int]) -> int:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] if ordered else 0


def judge(
    name: str,
    fleet: Fleet,
    run: Run,
    *,
    window: tuple[int, int],
    done: float,
    wasted_down: int = 0,
) -> Result:
    load = run.load(*window)
    cap = fleet.cfg.capacity
    expired = [n.expired_for for n in fleet.nodes if n.expired_for > 0]
    return Result(
        name=name,
        nodes=len(fleet.nodes),
        done_s=done,
        peak=max(load, default=0) / cap,
        p99=p99(load) / cap,
        wasted=run.wasted(*window),
        wasted_down=wasted_down,
        expired=len(expired),
        longest_expired_s=max(expired, default=0.0),
        window=window,
    )


def cold_boot(cfg: FleetConfig, n: int) -> tuple[Result, Run]:
    fleet = Fleet(cfg, n, cfg.seed)
    fleet.cold_boot()
    run = fleet.run(horizon=cfg.lifetime / SECOND / 2, until_joined=True)
    if len(run.first_success) != n:
        raise RuntimeError(f"cold boot of {n}: only {len(run.first_success)} joined")
    done = max(run.first_success.values())
    window = (0, math.floor(done) + 1)
    result = judge(f"cold boot, {n:,} nodes", fleet, run, window=window, done=done)
    ideal = n / cfg.capacity
    result.extra["ideal_s"] = f"{ideal:g}"
    return result, run


def first_join_after_outage(cfg: FleetConfig, n: int, length: dt.timedelta) -> tuple[Result, Run]:
    """A cold boot while the CA is down: how long after it returns until the last node has
    joined (join_retry_max's case), and what the returning CA is offered."""
    fleet = Fleet(cfg, n, cfg.seed + 3)
    fleet.cold_boot()
    back = length / SECOND
    fleet.down = (0.0, back)
    run = fleet.run(horizon=back + cfg.lifetime / SECOND / 2, until_joined=True)
    if len(run.first_success) != n:
        raise RuntimeError(f"first join after an outage: only {len(run.first_success)} joined")
    last = max(run.first_success.values())
    window = (math.floor(back), math.floor(last) + 1)
    name = f"cold boot during a CA outage ({go_duration(length)}), {n:,} nodes"
    result = judge(
        name, fleet, run, window=window, done=last - back, wasted_down=run.wasted(0, back)
    )
    return result, run


def steady(cfg: FleetConfig, n: int) -> tuple[Result, Run]:
    fleet = Fleet(cfg, n, cfg.seed + 1)
    fleet.steady_state()
    horizon = cfg.lifetime / SECOND
    # Every node renews at least once within a lifetime (its deadline is <= 90 % of it).
    run = fleet.run(horizon=horizon)
    renewed = [t for t in run.first_success.values()]
    if len(renewed) != n:
        raise RuntimeError(f"steady state: only {len(renewed)} of {n} renewed")
    window = (0, math.ceil(horizon))
    result = judge(f"steady state, {n:,} nodes", fleet, run, window=window, done=max(renewed))
    return result, run


def outage(cfg: FleetConfig, n: int, length: dt.timedelta, label: str) -> tuple[Result, Run]:
    fleet = Fleet(cfg, n, cfg.seed + 2)
    fleet.steady_state()
    back = length / SECOND
    fleet.down = (0.0, back)
    # Long enough for any backlog: the outage, then a lifetime.
    run = fleet.run(horizon=back + cfg.lifetime / SECOND, clear_after=back)
    if fleet.failing:
        raise RuntimeError(f"outage {label}: {fleet.failing} nodes still failing at the end")
    done = max(run.end - back, 0.0)
    window = (math.floor(back), max(math.floor(back), math.floor(run.end)) + 1)
    down = run.wasted(0, back)
    result = judge(f"CA outage {label}", fleet, run, window=window, done=done, wasted_down=down)
    result.extra["outage_s"] = f"{back:g}"
    return result, run


# -- output ----------------------------------------------------------------------------


def seconds(value: float) -> str:
    if value < 120:
        return f"{value:.1f} s"
    return f"{value:.0f} s ({format_duration(dt.timedelta(seconds=round(value)))})"


def results_table(results: Sequence[Result]) -> list[str]:
    return table(
        ["scenario", "nodes", "done after", "peak load", "p99 load", "wasted",
         "sent while down", "expired", "longest expired"],
        [
            [r.name, f"{r.nodes:,}", seconds(r.done_s), f"{r.peak:.2f}x", f"{r.p99:.2f}x",
             f"{r.wasted:,}", f"{r.wasted_down:,}", f"{r.expired:,}",
             seconds(r.longest_expired_s) if r.expired else "-"]
            for r in results
        ],
    )  # fmt: skip


def verdicts(cfg: FleetConfig, results: Sequence[Result]) -> list[str]:
    out = []
    for r in results:
        if r.name == f"cold boot, {COLD_TARGET_NODES:,} nodes":
            ideal = COLD_TARGET_NODES / cfg.capacity
            ok = r.done_s <= COLD_TIME_FACTOR * ideal and r.peak <= LOAD_LIMIT
            out.append(
                f"cold boot of {COLD_TARGET_NODES:,}: done in {r.done_s:.1f} s "
                f"(target <= {COLD_TIME_FACTOR * ideal:g} s = {COLD_TIME_FACTOR}x the ideal "
                f"{ideal:g} s), peak {r.peak:.2f}x capacity (target <= {LOAD_LIMIT}x): "
                + ("met" if ok else "NOT met")
            )
    outages = [r for r in results if r.name.startswith("CA outage")]
    worst = max(outages, key=lambda r: r.peak, default=None)
    if worst is not None:
        ok = worst.peak <= LOAD_LIMIT
        out.append(
            f"after every outage: highest 1 s bin {worst.peak:.2f}x capacity ({worst.name}; "
            f"target <= {LOAD_LIMIT}x): " + ("met" if ok else "NOT met")
        )
    return out


def sweep_line(sweep: Sequence[Result]) -> str:
    worst_done = max(r.done_s for r in sweep)
    worst_peak = max(r.peak for r in sweep)
    misses = sum(
        1
        for r in sweep
        if r.done_s > COLD_TIME_FACTOR * float(r.extra["ideal_s"]) or r.peak > LOAD_LIMIT
    )
    return (
        f"cold boot of {sweep[0].nodes:,} with {len(sweep)} seeds: slowest {worst_done:.1f} s, "
        f"highest 1 s bin {worst_peak:.2f}x capacity, "
        f"wasted {sum(r.wasted for r in sweep):,} in all; "
        f"target missed on {misses} of {len(sweep)}"
    )


def report(
    cfg: FleetConfig,
    results: Sequence[Result],
    *,
    sweep: Sequence[Result],
    advice: Result,
    elapsed: float,
    plot: str | None,
) -> Report:
    facts = {"config": "; ".join(cfg.lines()), "simulated in": f"{elapsed:.1f} s"}
    body = [
        *results_table(results),
        "",
        *[f"- {v}" for v in verdicts(cfg, results)],
        f"- {sweep_line(sweep)}",
        "",
        "The same 5,000-node cold boot with only the splay multiplied by five:",
        "",
        *results_table([advice]),
    ]
    if plot is not None:
        body += ["", f"![offered load over time]({plot})"]
    return Report("herd", facts, body)


def plot(cfg: FleetConfig, runs: Sequence[tuple[Result, Run]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 2.6 * len(runs)), squeeze=False)
    for ax, (result, run) in zip(axes[:, 0], runs, strict=True):
        start, stop = result.window
        start, stop = max(0, start - 10), stop + 10
        # Outages: time counted from the CA's return, the moment the table judges from.
        zero = float(result.extra.get("outage_s", 0))
        xs = [b - zero for b in range(start, stop)]
        ys = [v / cfg.capacity for v in run.load(start, stop)]
        ax.step(xs, ys, where="post", linewidth=1, label="offered load")
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=0.8, label="capacity")
        ax.axhline(LOAD_LIMIT, color="red", linestyle=":", linewidth=0.8, label="1.5x capacity")
        if "outage_s" in result.extra:
            ax.axvline(0, color="green", linewidth=0.8, label="the CA is back")
            ax.set_xlabel("seconds since the CA came back (before: every request fails)")
        else:
            ax.set_xlabel("seconds since power-on")
        ax.set_title(result.name, fontsize=10)
        ax.set_ylabel("requests / capacity")
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = parser(__doc__, agents=False)
    p.add_argument("--capacity", type=int, default=100, help="certificates/s (default 100)")
    p.add_argument("--lifetime", default="24h", help="certificate lifetime (default 24h)")
    p.add_argument("--splay", default="13s", help="[renewal] splay (default 13s)")
    p.add_argument("--retry-min", default="10s", help="[renewal] retry_min (default 10s)")
    p.add_argument("--retry-max", default="5m", help="[renewal] retry_max (default 5m)")
    p.add_argument("--join-retry-max", default="1m", help="[renewal] join_retry_max (default 1m)")
    p.add_argument("--outage-nodes", type=int, default=5000, help="fleet for steady/outages")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="fleet sizes and seeds times this (a smoke run: 0.02; the doc needs 1)",
    )
    args = p.parse_args(argv)
    if args.write is not None and args.scale != 1.0:
        p.error("--write needs --scale 1: the doc's figures are for the full fleet")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = FleetConfig(
        capacity=args.capacity,
        lifetime=parse_duration(args.lifetime),
        splay=parse_duration(args.splay),
        retry_min=parse_duration(args.retry_min),
        retry_max=parse_duration(args.retry_max),
        join_retry_max=parse_duration(args.join_retry_max),
        seed=args.seed,
    )
    print("\n".join(cfg.lines()), file=sys.stderr, flush=True)
    started = time.perf_counter()
    small, big = max(1, round(1000 * args.scale)), max(1, round(5000 * args.scale))
    outage_nodes = max(1, round(args.outage_nodes * args.scale))
    runs: list[tuple[Result, Run]] = [cold_boot(cfg, small), cold_boot(cfg, big)]
    runs += [first_join_after_outage(cfg, k, dt.timedelta(minutes=10)) for k in (small, big)]
    runs.append(steady(cfg, outage_nodes))
    lengths = [
        (cfg.lifetime * pct / 100, f"{pct} % of the lifetime") for pct in (5, 10, 15, 20, 25)
    ]
    lengths += [(dt.timedelta(hours=1), "1 hour"), (dt.timedelta(days=1), "1 day")]
    for length, label in lengths:
        t0 = time.perf_counter()
        runs.append(outage(cfg, outage_nodes, length, f"{label} ({go_duration(length)})"))
        print(f"  {label}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    # The cold-boot target on more than one seed: the splay's draws decide the peak bin.
    seeds = max(2, round(20 * args.scale))
    sweep = [cold_boot(dataclasses.replace(cfg, seed=cfg.seed + k), small)[0] for k in range(seeds)]
    # Not the one config: what sizing the splay to the bigger fleet would change.
    sized = dataclasses.replace(cfg, splay=cfg.splay * 5)
    advice, _ = cold_boot(sized, big)
    advice.name += f', splay "{go_duration(sized.splay)}"'
    elapsed = time.perf_counter() - started
    results = [r for r, _ in runs]
    png = None
    if args.write is not None:
        png = args.write.parent / "herd.png"
        picks = [runs[0], runs[1], *[x for x in runs if x[0].name.startswith("CA outage 1 day")]]
        plot(cfg, picks, png)
    kept = report(cfg, results, sweep=sweep, advice=advice, elapsed=elapsed, plot=png and png.name)
    finish(kept, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
