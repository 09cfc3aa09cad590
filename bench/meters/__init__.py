"""What a run measures, one concern a module: memory and time windows, FLOPs and the device's peak, energy,
numeric precision, and the environment a run saw."""
