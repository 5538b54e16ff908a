"""Open the backend the config selects. Vendor libraries and the simulator are imported only inside the chosen
backend: nothing under controller/sim/ is loaded unless a backend is "sim"."""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller.config import Config
from controller.hardware.interfaces import Camera, PowerLines, Spectrometer
from controller.timekeeping.clock import Clock

if TYPE_CHECKING:
    from controller.sim.scene import SimScene


def make_scene(cfg: Config) -> SimScene:
    """The sim scene for this config. Master and slave build identical scenes from the same [sim] section."""
    from controller.sim.scene import SimScene

    return SimScene(cfg.sim, cfg.camera, cfg.spectrometer)


def open_camera(cfg: Config, band: str, clock: Clock, scene: SimScene | None = None) -> Camera:
    """Camera `band` ("A" on the master, "B" on the slave) from cfg.camera.backend."""
    if cfg.camera.backend == "sim":
        from controller.sim.devices import SimCamera

        return SimCamera(scene or make_scene(cfg), band, clock, cfg.camera)
    from controller.hardware.picamera2_backend import Picamera2Camera

    return Picamera2Camera(cfg.camera, band, clock)


def open_spectrometer(cfg: Config, clock: Clock, scene: SimScene | None = None) -> Spectrometer | None:
    """The spectrometer from cfg.spectrometer.backend, or None for "none"."""
    backend = cfg.spectrometer.backend
    if backend == "none":
        return None
    if backend == "sim":
        from controller.sim.devices import SimSpectrometer

        return SimSpectrometer(scene or make_scene(cfg), clock, cfg.spectrometer)
    from controller.hardware.seabreeze_backend import SeabreezeSpectrometer

    return SeabreezeSpectrometer(cfg.spectrometer, clock)


def open_power_lines(cfg: Config, factory=None) -> PowerLines:
    """The master's GPIO power lines (gpiozero; MockFactory for backend "mock" unless `factory` is given)."""
    from controller.hardware.gpio import GpioPowerLines

    return GpioPowerLines(cfg.gpio, factory=factory)
