"""`charrnn export`: a model as an ONNX graph of one recurrent step, checked for parity.

    onnx.py         the export and its parity check against the PyTorch model
    web.py          one HTML page that generates in the browser (web_page.html), weights inlined
"""
