"""rmsmp.boards: the platform around the accelerator (boards as data, the Vivado project, the
Vivado-facing top level and the overlay package a user copies to the board).

It imports ``arch`` (and ``hw`` to generate Verilog); ``arch`` never imports it.
"""

from .devices import BOARDS, PS7, TARGETS, Board, BoardError, board, target_config

__all__ = ["BOARDS", "PS7", "TARGETS", "Board", "BoardError", "board", "target_config"]
