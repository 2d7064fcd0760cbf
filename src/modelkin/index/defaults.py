"""Search and graph defaults, in a module light enough for the CLI to import at start."""

DEFAULT_CANDIDATES = 32  # at most this many candidates per sketch and component, confirmed by compare
SPECTRAL_BATCH = 4  # spectral candidates confirmed at a time (a further batch while the last found a relative)
DEFAULT_WORKERS = 2  # candidates confirmed at once (threads: the compare's array work releases the GIL)
