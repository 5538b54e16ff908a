"""The master's read-only status and results page (aiohttp on the supervisor's event loop).

Routes (GET only): `/` the page (filled by its script from the API), `/api/status` the status snapshot (the same
dict as status.json), `/api/emissions?day=YYYY-MM-DD` the day's emission and DOAS series and daily summary,
`/img/A.png`, `/img/B.png`, `/img/AA.png` thumbnails of the newest images, `/plot.png?day=` the worker's daily
plot, `/metrics` Prometheus text format.

Access as the control port's: the peer's address must be in `network.allowed_networks` (else 403), and when
`network.auth_token` is set every request carries it (`Authorization: Bearer TOKEN` or `?token=TOKEN`, else 401).

It never blocks acquisition: file reads, CSV parsing and thumbnailing run in the service's own single thread (so a
burst of page loads queues there instead of taking the default executor's threads the data store writes with); the
loop only takes the status snapshot and writes responses.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from controller.logging import get_logger
from controller.netaccess import AddressFilter
from controller.storage.index import StoreIndex
from controller.web import metrics, results


def _static(name: str) -> bytes:
    return resources.files("controller.web").joinpath("static", name).read_bytes()


def _page() -> bytes:
    """index.html with app.js inlined: one request, so a page opened with `?token=` needs nothing without it."""
    script = b"<script>\n" + _static("app.js") + b"</script>"
    return _static("index.html").replace(b'<script src="app.js"></script>', script)


class WebService:
    """A supervisor service: `async start()`, `async stop()`, `status()`."""

    def __init__(
        self, cfg: Any, status_source: Callable[[], dict], processed_dir: Path, today: Callable[[], str],
        files: Callable[[], StoreIndex | None] = lambda: None,
    ):  # fmt: skip
        """`files`: the data store's index (the page's newest images), None until the store is open."""
        self.web_cfg = cfg.web
        self._token = cfg.network.auth_token
        self._allowed = AddressFilter(cfg.network.allowed_networks)
        self._status_source = status_source
        self.processed_dir = Path(processed_dir)
        self._today = today
        self._ppmm = cfg.processing.ppmm_to_molecules_cm2
        self._thumbs = results.Thumbnails(files, cfg.web.thumbnail_px)
        self._executor: ThreadPoolExecutor | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.requests: Counter = Counter()
        self._log = get_logger("web")

    # ------------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="web")
        app = web.Application(middlewares=[self._access])
        app.add_routes(
            [
                web.get("/", self._page),
                web.get("/api/status", self._api_status),
                web.get("/api/emissions", self._api_emissions),
                web.get("/img/{which}.png", self._image),
                web.get("/plot.png", self._plot),
                web.get("/metrics", self._metrics),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.web_cfg.bind, self.web_cfg.port, reuse_address=True)
        await site.start()
        addresses = self._runner.addresses  # the port actually bound (port 0: any free one)
        self.port = addresses[0][1] if addresses else self.web_cfg.port
        self._log.info("web_started", url=self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._log.info("web_stopped", requests=sum(self.requests.values()))

    @property
    def url(self) -> str:
        return f"http://{self.web_cfg.bind}:{self.port}/"

    def status(self) -> dict:
        return {"url": self.url if self.port else None, "running": self._runner is not None,
                "requests": dict(self.requests)}  # fmt: skip

    # ---------------------------------------------------------------------------------------------- access

    @web.middleware
    async def _access(self, request: web.Request, handler):
        if not self._allowed.allows(request.remote or ""):
            self.requests["refused"] += 1
            self._log.warning("web_refused", peer=request.remote, why="address not in network.allowed_networks")
            raise web.HTTPForbidden(text="address not in the station's network.allowed_networks\n")
        if self._token and not self._token_ok(request):
            self.requests["unauthorised"] += 1
            raise web.HTTPUnauthorized(text="the station's token is required (Authorization: Bearer TOKEN)\n")
        return await handler(request)

    def _token_ok(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        given = auth[7:] if auth.startswith("Bearer ") else request.query.get("token", "")
        return hmac.compare_digest(given.encode(), self._token.encode())

    async def _off_loop(self, fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _day(self, request: web.Request) -> str:
        day = request.query.get("day") or self._today()
        if not results.DAY_NAME.match(day):
            raise web.HTTPBadRequest(text=f"day={day!r}: expected YYYY-MM-DD\n")
        return day

    # ---------------------------------------------------------------------------------------------- routes

    async def _page(self, request: web.Request) -> web.Response:
        self.requests["page"] += 1
        return web.Response(body=await self._off_loop(_page), content_type="text/html")

    def snapshot(self) -> dict:
        data = self._status_source()
        data["today"] = self._today()
        return data

    async def _api_status(self, request: web.Request) -> web.Response:
        self.requests["api_status"] += 1
        data = self.snapshot()
        plot = await self._off_loop(results.daily_plot, self.processed_dir, data["today"])
        data["daily_plot"] = plot.name if plot else None
        data["images"] = await self._off_loop(self._thumbs.available)
        return web.Response(text=json.dumps(data, default=str), content_type="application/json")

    async def _api_emissions(self, request: web.Request) -> web.Response:
        self.requests["api_emissions"] += 1
        data = await self._off_loop(results.results, self.processed_dir, self._day(request))
        data["doas_unit"] = "molecules/cm²"  # the DOAS CSV's unit (its header states it and the ppm·m factor)
        data["ppmm_to_molecules_cm2"] = self._ppmm
        return web.Response(text=json.dumps(data, default=str), content_type="application/json")

    async def _image(self, request: web.Request) -> web.Response:
        which = request.match_info["which"]
        if which not in ("A", "B", "AA"):
            raise web.HTTPNotFound(text="images: A, B or AA\n")
        self.requests["image"] += 1
        try:
            got = await self._off_loop(self._thumbs.get, which)
        except OSError as e:  # the newest file vanished (disk policy) or is unreadable: say so, next load retries
            raise web.HTTPServiceUnavailable(text=f"{e}\n") from e
        if got is None:
            raise web.HTTPNotFound(text=f"no {which} image yet\n")
        png, source = got
        return web.Response(body=png, content_type="image/png", headers={"X-Source-File": source})

    async def _plot(self, request: web.Request) -> web.Response:
        day = self._day(request)
        self.requests["plot"] += 1
        path = await self._off_loop(results.daily_plot, self.processed_dir, day)
        if path is None:
            raise web.HTTPNotFound(text=f"no emission-rate plot for {day} yet\n")
        return web.Response(body=await self._off_loop(path.read_bytes), content_type="image/png")

    async def _metrics(self, request: web.Request) -> web.Response:
        self.requests["metrics"] += 1
        data = self.snapshot()
        latest = await self._off_loop(results.latest_emissions, self.processed_dir, data["today"])
        body = await self._off_loop(metrics.render, data, latest)
        return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})
