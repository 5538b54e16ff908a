"""The master's outward-facing services: the status page (controller/web) and the delivery to the observatory
(controller/delivery), each when its config section enables it. The master supervisor starts them in its service
group (stopped in reverse order with the others)."""

from __future__ import annotations

from typing import Any


def make_outward(sup: Any) -> dict[str, Any]:
    """{"web": ..., "delivery": ...}: the services the config enables (None where disabled), not started."""
    services: dict[str, Any] = {"web": None, "delivery": None}
    if sup.cfg.web.enabled:
        from controller.web.service import WebService

        files = lambda: sup.store.index if sup.store is not None else None  # noqa: E731 - the store opens later
        services["web"] = WebService(sup.cfg, sup.collect_status, sup.processing_out_dir(), sup._today, files)
    if sup.cfg.delivery.enabled:
        from controller.delivery import make_delivery

        services["delivery"] = make_delivery(sup.cfg, sup.processing_out_dir())
    return services
