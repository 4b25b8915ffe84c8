"""The numpy compiler: the integer graph, its file form and its lowering to a Program. It never
imports PyTorch (``tests/test_layering.py``); the torch side is ``rmsmp.quant``."""
