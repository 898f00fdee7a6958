"""Target profiles shipped with edgeport (installed as ``exporter.profiles_data``); data, not code."""
