"""Acquisition: the slot plan and loop (`slots`), one runner per device (`runner`), each device's calls in its own
thread with a time limit (`caller`), the capture journal (`journal`) and the original's auto exposure
(`autoexposure`)."""

from controller.acquisition.caller import CAPTURE_FRAMES, MAX_HUNG_CALLS, OPEN_FACTOR, DeviceCaller
from controller.acquisition.journal import CaptureJournal, CaptureRecord
from controller.acquisition.runner import BACKOFF_MAX_S, BACKOFF_START_S, DARK_STEPS, DeviceRunner, dark_steps
from controller.acquisition.slots import SingleRequest, SlotLoop, SlotPlan, TimelineClock, wait_event_or_sleep

__all__ = [
    "BACKOFF_MAX_S",
    "BACKOFF_START_S",
    "CAPTURE_FRAMES",
    "DARK_STEPS",
    "MAX_HUNG_CALLS",
    "OPEN_FACTOR",
    "CaptureJournal",
    "CaptureRecord",
    "DeviceCaller",
    "DeviceRunner",
    "SingleRequest",
    "SlotLoop",
    "SlotPlan",
    "TimelineClock",
    "dark_steps",
    "wait_event_or_sleep",
]
