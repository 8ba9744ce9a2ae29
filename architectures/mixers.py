"""MIXERS: the one place pattern letters are bound to mixer classes.

A mixer is an nn.Module that carries its own facts:

- `letter`: its pattern letter (the key it is registered under);
- `check_config(config)`: raises ValueError for a ModelConfig it cannot be built from;
- `width_step(config)`: the head-dim step it accepts (`size_for` searches widths in these steps);
- `__init__(config)`, `forward(x)`: [B, T, D] -> [B, T, D], causal;
- `init_weights(generator)`: its own parameters beyond linear layers;
- `state_size(seq_len)`: elements kept to decode the next token.

A new mixer is one file plus one entry in the tuple below (CONTRIBUTING.md).
"""

from architectures.attention import Attention
from architectures.gated_deltanet import GatedDeltaNet
from architectures.mamba2 import Mamba2

MIXERS = {mixer.letter: mixer for mixer in (Attention, GatedDeltaNet, Mamba2)}
