"""A run function for tests of failure handling: seed 1 raises, seed 2 kills its worker process,
seed 3 trains with an absurd learning rate (a real divergence), seed 4 returns a result the store
cannot take; other seeds run normally."""

import os
import signal

from sweeps.train import run as train_run


def run(config: dict, device: str | None = None, threads: int = 1) -> dict:
    if config["seed"] == 1:
        raise RuntimeError("injected failure")
    if config["seed"] == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    if config["seed"] == 4:
        return {"status": "done", "evals": [{"knob": "length"}]}
    if config["seed"] == 3:
        config = {**config, "lr": 1e30}
    return train_run(config, device=device, threads=threads)
