"""The master's outward-facing services, started and stopped together: the status page (controller/web) and the
delivery to the observatory (controller/delivery), each when its config section enables it."""

from __future__ import annotations

from typing import Any


async def start_outward(sup: Any) -> tuple[Any, Any]:
    """(web, delivery) services of the master supervisor `sup`, started (None when disabled or when it could not
    start: the station acquires anyway, the fault is noted and status says so)."""
    services: dict[str, Any] = {"web": None, "delivery": None}
    if sup.cfg.web.enabled:
        from controller.web.service import WebService

        services["web"] = WebService(sup.cfg, sup.collect_status, sup.processing_out_dir(), sup._today)
    if sup.cfg.delivery.enabled:
        from controller.delivery import make_delivery

        services["delivery"] = make_delivery(sup.cfg, sup.processing_out_dir())
    for name, service in services.items():
        if service is None:
            continue
        try:
            await service.start()
        except OSError as e:
            sup.log.error(f"{name}_unavailable", error=str(e))
            sup.note_fault(f"{name}_unavailable", {"error": str(e)})
            services[name] = None
    return services["web"], services["delivery"]


async def stop_outward(*services: Any) -> None:
    for service in services:
        if service is not None:
            await service.stop()
