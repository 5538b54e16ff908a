"""The on-device processing worker: images -> optical depth -> SO2 columns -> plume speed -> emission rate."""
