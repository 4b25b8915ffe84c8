"""The torch side: quantization (row-wise PTQ and QAT), models, data, capture and export of a
torch model to the integer graph that ``rmsmp.compiler`` lowers without PyTorch."""
