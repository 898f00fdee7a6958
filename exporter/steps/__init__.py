"""The export driver's steps that are more than a call into one stage: each module one concern.

exporter.pipeline sequences them; analysis (what a converted model is on a target), guarding (the
accuracy guard's fallbacks), onnx, bench (host and device timings) and outputs (atomic writes).
"""
