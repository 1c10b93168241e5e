"""`charrnn export`: a model as an ONNX graph of one recurrent step, checked for parity.

    onnx.py         the export and its parity check against the PyTorch model
"""
