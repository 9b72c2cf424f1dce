"""Export: a trained model as one ONNX file that samples without PyTorch.

    from charrnn.export import export_onnx
    exported = export_onnx(model, vocab, options, "model.onnx", state=checkpoint_state)

exporter.py builds and writes the file, verify.py checks it against PyTorch in
onnxruntime, metadata.py says what the file carries about itself. web.py writes the file
into a static web page (the page itself in site/), runtime.py pins the onnxruntime-web it
runs in, quantize.py makes its int8 form. onnx and onnxruntime
(the `charrnn[export]` extra) are imported only when an export runs.
"""

from .exporter import INSTALL, Exported, ExportError, check_output, export_onnx, require_extra

__all__ = ["INSTALL", "Exported", "ExportError", "check_output", "export_onnx",
           "require_extra"]
