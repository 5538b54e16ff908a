"""The station simulator: one deterministic, seeded plume scene shared by the sim cameras and spectrometer."""
