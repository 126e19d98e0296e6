"""Engine-agnostic pipeline: load a benchmark dataset, build prompts, run an engine, write outputs."""
