"""The station supervisor: one process per Pi, one asyncio loop driving the station machine from states/."""
