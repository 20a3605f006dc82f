"""The whole bot in one busy channel, against Discord's rate limits.

The real bot (its cogs, engine and web server, assembled as `python -m bot` does) runs in a
child process against the Discord stand-in, with Discord's rate limits on, and the BFL
stand-in; this process hosts both stand-ins and plays the members.

- imagine: N `/imagine` from M members in one channel, dispatched over about 10 s (BFL cap
  24, 1 s per image). Prints the makespan (first submit → last result visible) against the
  ideal ceil(N/cap) × latency, ready → visible p50/p95 (ready: the provider finished the
  task), the slowest first acknowledgement, Discord 429s, and Discord requests per job by
  route. Once with polling, once with BFL webhooks.
  Also the bot process's CPU per delivered job (utime + stime from /proc, the harness's own
  CPU is counted apart) and its peak RSS.
- replies: R reply-to-edit messages in one channel: makespan (first reply → last result
  visible) against the channel's post limit (R posts at 1 per second).
- burst: N `/imagine` from M members dispatched evenly over S seconds (defaults 3,000 from
  200 in 18 s, BFL cap 4 so the queue is deep). Prints how long the bot took to send each
  interaction's first answer (p50, p99, max), how many came after Discord's 3 s (the member
  sees "The application did not respond"), the ephemeral followups it sent, its CPU and
  peak RSS. It does not wait for the images.
- --shared-limit edits: the stand-in's hidden shared limit (30 webhook messages per 60 s per
  channel) counts edits of interaction messages too; imagine then also prints that limit's
  arithmetic (N results at 30 a minute), the followups sent (stand-in and bot's metric) and
  the shared 429s. (`followups`, the default, is the stand-in's default; `off` turns it off.)

    python -m bench.discord_load                       # imagine and replies, default sizes
    python -m bench.discord_load --scenario imagine --jobs 96 --mode polling
    python -m bench.discord_load --scenario burst      # --jobs 1000 --spread 6 for the small one
    python -m bench.discord_load --scenario imagine --jobs 60 --mode polling --shared-limit edits

BENCH_BOT_LOG_LEVEL=DEBUG shows the bot's own log (WARNING by default).
BENCH_PROFILE=/tmp/bot.prof profiles the bot process with cProfile (read it with pstats).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import math
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from PIL import Image

from bench.common import cpu_seconds, free_port, peak_rss_mb, percentile
from tests.fakes.bfl_server import FakeBFL
from tests.fakes.discord.models import Channel, InteractionHandle, Message, Upload, User
from tests.fakes.discord_server import FakeDiscord

API_KEY = "bench-bfl-key-0123456789"
ACK_DEADLINE = 3.0
_SNOWFLAKE = re.compile(r"/\d{15,}")
_TOKEN = re.compile(r"/(webhooks/\{id\}|interactions/\{id\})/[^/]+")


def route_of(method: str, path: str) -> str:
    path = _SNOWFLAKE.sub("/{id}", path)
    path = _TOKEN.sub(r"/\1/{token}", path)
    return f"{method} {path}"


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class Watch:
    """When each thing became visible in the stand-in, in wall-clock time. `scan` is called
    on every change of the stand-in's state (by `watch`, and by whoever waits on it)."""

    fake: FakeDiscord
    channel_id: int
    handles: list[InteractionHandle] = field(default_factory=list)
    acked: dict[int, float] = field(default_factory=dict)  # interaction id → first callback
    visible: dict[int, float] = field(default_factory=dict)  # message id → image shown
    _unanswered: dict[int, InteractionHandle] = field(default_factory=dict)
    _seen_handles: int = 0

    def scan(self) -> None:
        now = time.time()
        for it in self.handles[self._seen_handles :]:
            self._unanswered[it.id] = it
        self._seen_handles = len(self.handles)
        for it in list(self._unanswered.values()):
            if it.callbacks:
                self.acked[it.id] = now
                del self._unanswered[it.id]
        for message in self.fake.messages(self.channel_id, include_ephemeral=False):
            if message.id not in self.visible and is_result(self.fake, message):
                self.visible[message.id] = now

    async def until_shown(self, count: int, within: float) -> None:
        def done() -> bool:
            self.scan()
            return len(self.visible) >= count

        with contextlib.suppress(TimeoutError):  # report what was shown by then
            await self.fake.wait_for(done, timeout=within)


async def watch(state: Watch) -> None:
    """Keep scanning until cancelled (the stand-in wakes it on every change)."""

    def scan() -> bool:
        state.scan()
        return False

    with contextlib.suppress(TimeoutError):
        await state.fake.wait_for(scan, timeout=3600)


def is_result(fake: FakeDiscord, message: Message) -> bool:
    return message.author_id == fake.application_id and bool(message.attachments)


async def start_bot(
    fake: FakeDiscord, bfl: FakeBFL, folder: Path, guild_id: int, *, webhooks: bool
) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    env = {
        **os.environ,
        "FAKE_DISCORD_URL": fake.base_url,
        "DISCORD_TOKEN": fake.token,
        "BFL_API_KEY": API_KEY,
        "BFL_API_BASE": bfl.base_url,
        "ALLOW_LOOPBACK_PROVIDER_URLS": "true",  # test-only: the stand-ins are on 127.0.0.1
        "DATABASE_PATH": str(folder / "bench.sqlite3"),
        "DEV_GUILD_ID": str(guild_id),
        "WEB_PORT": str(port),
        "LOG_LEVEL": os.environ.get("BENCH_BOT_LOG_LEVEL", "WARNING"),
        "DEFAULT_USER_DAILY_IMAGES": "100000",
        "DEFAULT_USER_DAILY_CREDITS": "1000000",
        "DEFAULT_USER_MONTHLY_CREDITS": "1000000",
        "DEFAULT_GUILD_MONTHLY_CREDITS": "100000000",
        # Each member sends 12 at once here: the load, not the per-member cap, is measured.
        "MAX_JOBS_IN_FLIGHT_PER_MEMBER": "100",
        "BUTTON_COOLDOWN_SECONDS": "0",  # nor the pause between one member's requests
    }
    if webhooks:
        env["WEBHOOK_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
        env["WEBHOOK_GRACE_SECONDS"] = "5"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.discord_load", "--child", env=env
    )
    await fake.wait_until_connected(timeout=30)
    await fake.wait_for(lambda: fake.commands(guild_id) or None, timeout=30)
    return process, port


async def stop_bot(process: asyncio.subprocess.Process) -> None:
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 15)
    except TimeoutError:
        process.kill()


@dataclass
class Bench:
    """The stand-ins, one channel with its members, and the bot process playing against them."""

    fake: FakeDiscord
    bfl: FakeBFL
    channel: Channel
    members: list[User]
    process: asyncio.subprocess.Process
    port: int


@contextlib.asynccontextmanager
async def running_bot(
    users: int,
    latency: float,
    *,
    cap: int | None = None,
    webhooks: bool = False,
    configure: Callable[[FakeDiscord], None] = lambda fake: None,
) -> AsyncIterator[Bench]:
    with tempfile.TemporaryDirectory() as folder:
        caps = {} if cap is None else {"max_active": cap}
        async with FakeBFL(api_key=API_KEY, latency=latency, **caps) as bfl, FakeDiscord() as fake:
            configure(fake)
            guild = fake.add_guild("Bench")
            channel = fake.add_text_channel(guild.id, "flux")
            members = [fake.add_member(guild.id, f"member{n}") for n in range(users)]
            process, port = await start_bot(fake, bfl, Path(folder), guild.id, webhooks=webhooks)
            try:
                yield Bench(fake, bfl, channel, members, process, port)
            finally:
                await stop_bot(process)


def requests_per_job(fake: FakeDiscord, jobs: int, since: int) -> list[tuple[str, float]]:
    counts = Counter(route_of(r.method, r.path) for r in fake.requests[since:])
    return [(route, count / jobs) for route, count in counts.most_common()]


async def bot_metric(port: int, name: str) -> float | None:
    """One counter of the bot's `/metrics` (None if it cannot be read)."""
    with contextlib.suppress(Exception):
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            for line in (await response.text()).splitlines():
                if line.startswith(f"{name} "):
                    return float(line.split()[1])
    return None


async def imagine(
    jobs: int,
    users: int,
    cap: int,
    latency: float,
    spread: float,
    webhooks: bool,
    within: float,
    shared_limit: str = "followups",
    images: int = 1,
) -> dict[str, object]:
    """`images` > 1: each /imagine asks for a grid of that many (one BFL task each)."""

    def configure(fake: FakeDiscord) -> None:
        if shared_limit == "off":
            fake.shared_webhook_limit = None
        fake.shared_webhook_limit_counts_edits = shared_limit == "edits"

    async with running_bot(users, latency, cap=cap, webhooks=webhooks, configure=configure) as b:
        fake, bfl, channel, members, process = b.fake, b.bfl, b.channel, b.members, b.process
        since = len(fake.requests)
        bot_cpu = cpu_seconds(process.pid)
        harness_cpu = time.process_time()
        state = Watch(fake, channel.id)
        handles = state.handles
        watcher = asyncio.create_task(watch(state))
        dispatched: dict[int, float] = {}
        for n in range(jobs):
            options: dict[str, object] = {"prompt": f"bench image {n}"}
            if images > 1:
                options["images"] = images
            it = await fake.invoke_slash(members[n % users], channel, "imagine", options)
            handles.append(it)
            dispatched[it.id] = time.time()
            await asyncio.sleep(spread / jobs)
        await state.until_shown(jobs, within=within)
        watcher.cancel()
        bot_cpu = cpu_seconds(process.pid) - bot_cpu
        harness_cpu = time.process_time() - harness_cpu
        by_bytes = {bfl.image_bytes(task.id): task for task in bfl.tasks.values()}
        ready_to_visible = []
        for message_id, shown_at in state.visible.items():
            # A grid's first file is its contact sheet, then every image's own file: it is
            # shown once its last image is ready, so that is when its delivery starts.
            ready = [
                task.created_wall + task.latency
                for attachment in fake.message(message_id).attachments
                if (task := by_bytes.get(attachment.data)) is not None
            ]
            if ready:
                ready_to_visible.append(shown_at - max(ready))
        first_submit = min(task.created_wall for task in bfl.tasks.values())
        makespan = max(state.visible.values()) - first_submit
        acks = [state.acked[i] - dispatched[i] for i in dispatched if i in state.acked]
        ideal = math.ceil(jobs * images / cap) * latency
        shared: dict[str, object] = {}
        if shared_limit != "off":
            limit, window = fake.shared_webhook_limit or 0, fake.shared_webhook_window
            # With edits counted, each result is one webhook message at least: the
            # last one can go out no sooner than the window it falls in opens.
            shared_ideal = (jobs - 1) // max(1, limit) * window + latency
            counted = shared_limit == "edits"
            shared = {
                "shared_ideal": shared_ideal if counted else 0.0,
                "shared_ratio": makespan / shared_ideal if counted else 0.0,
                "shared_429": sum(1 for h in fake.rate_limited if h.scope == "shared"),
                "followups": sum(
                    1
                    for r in fake.requests[since:]
                    if r.method == "POST" and r.path.startswith("/webhooks/")
                ),
                "bot_followups": await bot_metric(b.port, "fluxcord_refusal_followups_total"),
                "gave_way": await bot_metric(b.port, "fluxcord_progress_updates_given_way_total"),
            }
        return {
            "makespan": makespan,
            "ideal": ideal,
            "ratio": makespan / ideal,
            **shared,
            "p50_ms": statistics.median(ready_to_visible) * 1000,
            "p95_ms": percentile(ready_to_visible, 0.95) * 1000,
            "delivered": len(state.visible),
            "acked": len(acks),
            "late_acks": sum(1 for a in acks if a > ACK_DEADLINE),
            "max_ack_ms": max(acks, default=0.0) * 1000,
            "unanswered": jobs - len(acks),
            "discord_429": len(fake.rate_limited),
            "bot_cpu_ms_per_job": bot_cpu * 1000 / max(1, len(state.visible)),
            "bot_cpu_ms_per_image": bot_cpu * 1000 / max(1, len(state.visible) * images),
            "harness_cpu_s": harness_cpu,
            "bot_peak_rss_mb": peak_rss_mb(process.pid),
            "routes": requests_per_job(fake, jobs, since),
        }


async def burst(
    jobs: int, users: int, cap: int, latency: float, spread: float
) -> dict[str, object]:
    """Interactions arrive faster than the queue drains: does every one get its answer in
    time? Dispatch keeps to an absolute schedule, so a slow harness step is caught up."""
    async with running_bot(users, latency, cap=cap) as b:
        fake, channel, members, process = b.fake, b.channel, b.members, b.process
        since = len(fake.requests)
        bot_cpu = cpu_seconds(process.pid)
        harness_cpu = time.process_time()
        handles: list[InteractionHandle] = []
        loop = asyncio.get_running_loop()
        start = loop.time()
        for n in range(jobs):
            delay = start + n * spread / jobs - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            handles.append(
                await fake.invoke_slash(
                    members[n % users], channel, "imagine", {"prompt": f"burst {n}"}
                )
            )
        dispatch_seconds = loop.time() - start
        with contextlib.suppress(TimeoutError):  # the unanswered are reported
            await fake.wait_for(
                lambda: all(it.first_answer_monotonic is not None for it in handles),
                timeout=ACK_DEADLINE * 4,
            )
        bot_cpu = cpu_seconds(process.pid) - bot_cpu
        harness_cpu = time.process_time() - harness_cpu
        acks = [
            it.first_answer_monotonic - it.created_monotonic
            for it in handles
            if it.first_answer_monotonic is not None
        ]
        followups = sum(
            1
            for r in fake.requests[since:]
            if route_of(r.method, r.path) == "POST /webhooks/{id}/{token}"
        )
        return {
            "dispatched": jobs,
            "dispatch_s": dispatch_seconds,
            "ack_p50_ms": statistics.median(acks) * 1000 if acks else 0.0,
            "ack_p99_ms": percentile(acks, 0.99) * 1000 if acks else 0.0,
            "ack_max_ms": max(acks, default=0.0) * 1000,
            "late_acks": sum(1 for a in acks if a > ACK_DEADLINE),
            "unanswered": jobs - len(acks),
            "followups": followups,
            "discord_429": len(fake.rate_limited),
            "bot_cpu_s": bot_cpu,
            "bot_cpu_ms_per_command": bot_cpu * 1000 / jobs,
            "harness_cpu_s": harness_cpu,
            "bot_peak_rss_mb": peak_rss_mb(process.pid),
            "routes": requests_per_job(fake, jobs, since),
        }


async def replies(count: int, latency: float) -> dict[str, object]:
    async with running_bot(count, latency) as b:
        fake, channel, members = b.fake, b.channel, b.members
        source = await fake.post_user_message(
            members[0],
            channel,
            "a photo",
            attachments=[Upload("cat.png", png((200, 10, 10)))],
        )
        since = len(fake.requests)
        state = Watch(fake, channel.id)
        watcher = asyncio.create_task(watch(state))
        started = time.time()
        for n in range(count):
            await fake.post_user_message(
                members[n], channel, f"make it blue {n}", reply_to=source, mention_bot=True
            )
        await state.until_shown(count, within=count * 3 + 60)
        watcher.cancel()
        makespan = max(state.visible.values()) - started
        ideal = count * 1.0
        return {
            "makespan": makespan,
            "ideal": ideal,
            "ratio": makespan / ideal,
            "delivered": len(state.visible),
            "discord_429": len(fake.rate_limited),
            "routes": requests_per_job(fake, count, since),
        }


def child() -> None:
    """The bot, as `python -m bot` runs it, pointed at the Discord stand-in."""
    import yarl
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    from bot.cli import main as bot_main

    base = os.environ["FAKE_DISCORD_URL"]
    Route.BASE = f"{base}/api/v10"
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"{base.replace('http', 'ws', 1)}/gateway/")
    profile_path = os.environ.get("BENCH_PROFILE")
    if not profile_path:
        sys.exit(bot_main(["run"]))
    import cProfile

    profiler = cProfile.Profile(time.thread_time)  # the event loop thread's CPU, not waits
    profiler.enable()
    try:
        code = bot_main(["run"])
    finally:
        profiler.disable()
        profiler.dump_stats(profile_path)
    sys.exit(code)


def report(title: str, figures: dict[str, object], target: str) -> None:
    print(f"--- {title}")
    for key, value in figures.items():
        if key == "routes":
            continue
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        suffix = f"  (target {target})" if key == "ratio" and target else ""
        print(f"{key:<14}{text}{suffix}")
    print("Discord requests per job:")
    for route, per_job in figures["routes"]:  # type: ignore[attr-defined]
        print(f"  {per_job:6.2f}  {route}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scenario", choices=["imagine", "replies", "burst", "all"], default="all")
    parser.add_argument("--jobs", type=int, help="default 480 (burst: 3000)")
    parser.add_argument("--users", type=int, help="default 40 (burst: 200)")
    parser.add_argument("--cap", type=int, help="default 24 (burst: 4)")
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument(
        "--spread", type=float, help="seconds to dispatch over: default 10 (burst: 18)"
    )
    parser.add_argument("--replies", type=int, default=60)
    parser.add_argument(
        "--images", type=int, default=1, help="imagine: images per request (a grid above 1)"
    )
    parser.add_argument("--mode", choices=["polling", "webhook", "both"], default="both")
    parser.add_argument(
        "--shared-limit",
        choices=["off", "followups", "edits"],
        default="followups",
        help="Discord's hidden per-channel webhook limit: what it counts",
    )
    parser.add_argument(
        "--within", type=float, default=600.0, help="stop waiting after this many seconds"
    )
    args = parser.parse_args()
    if args.child:
        child()
        return
    if args.scenario == "burst":
        jobs, users = args.jobs or 3000, args.users or 200
        cap, spread = args.cap or 4, args.spread or 18.0
        figures = asyncio.run(burst(jobs, users, cap, args.latency, spread))
        report(
            f"burst: {jobs} /imagine from {users} members over {spread:g} s, cap {cap}",
            figures,
            "",
        )
        return
    args.jobs, args.users = args.jobs or 480, args.users or 40
    args.cap, args.spread = args.cap or 24, args.spread or 10.0
    if args.scenario in ("imagine", "all"):
        modes = ["polling", "webhook"] if args.mode == "both" else [args.mode]
        for mode in modes:
            figures = asyncio.run(
                imagine(
                    args.jobs,
                    args.users,
                    args.cap,
                    args.latency,
                    args.spread,
                    mode == "webhook",
                    args.within,
                    args.shared_limit,
                    args.images,
                )
            )
            grids = f" × {args.images} images" if args.images > 1 else ""
            report(
                f"imagine ({mode}): {args.jobs}{grids} from {args.users} members in one channel, "
                f"cap {args.cap}, {args.latency}s per image",
                figures,
                "≤ 1.10",
            )
    if args.scenario in ("replies", "all"):
        figures = asyncio.run(replies(args.replies, args.latency))
        report(f"replies: {args.replies} reply-to-edit in one channel", figures, "≤ 1.15")


if __name__ == "__main__":
    main()
