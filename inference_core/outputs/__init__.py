"""Registered output handlers (answer_block, rating, choice, script_ratio); see registry.py."""
from inference_core.outputs.registry import (HANDLERS, HandledSample, OutputHandler, as_names,
                                             handler_names, make_output_handler, register)

__all__ = ["HANDLERS", "HandledSample", "OutputHandler", "as_names", "handler_names",
           "make_output_handler", "register"]
