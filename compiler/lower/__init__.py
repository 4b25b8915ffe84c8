"""Lowering an IntGraph to a Program for one AccelConfig: row mapping, tiling, instructions.

The whole graph becomes one Program: every node is one or two on-chip passes, each a
convolution walked on chip (a Linear is the convolution whose kernel covers its whole input map).
Pools are per-chunk passes: a max pool walks in ``max`` mode, an average pool sums through
diagonal weights and divides exactly in the requant (``numerics.average_requant``). A residual
add is fused into the requant of the layer that ends the block (``res`` mode, reading the R
buffer); when the shortcut is subsampled, channel-padded or in another slot order, an exact copy
pass (0/1 weights, ``numerics.IDENTITY_REQUANT``) first writes it in the layer's slot order.

Output rows are placed by weight format into the PE row groups of successive row tiles
("slots"); feature maps stay in DDR between passes in ``arch.layout``'s channel-blocked layout
with their channels in slot order, and the next layer's weights are permuted to match, so nothing
is reordered between layers and the host touches only the network input and output.

Per pass the compiler cuts the input map into tiles (bands of output rows, and of columns when
a row does not fit) and the weights into groups of row tiles, keeps resident whatever fits the
buffer and double-buffers whatever streams. Of the candidate tilings (the loop order that moves
fewer DDR bytes and the other one, output bands of three lengths) it keeps the one with the
fewest estimated cycles (``costs``, from the cycle model's per-instruction costs), bytes
breaking ties, and leaves the ordering to dependency tokens (``compiler.tokens``).

A few-channel first convolution may first be folded into more of the array's lanes, the host
rewriting the input to match (``input_fold``), where the cost model finds that faster.

The stages, in order (``pipeline.STAGES``), each in the module named after what it holds:
checks, input_fold, planning (with placement), tiling, costs, packing, scheduling (with records),
ordering, assembly.
"""

from .checks import CompileError
from .pipeline import STAGES, Lowering, compile_graph, lower

__all__ = ["STAGES", "CompileError", "Lowering", "compile_graph", "lower"]
