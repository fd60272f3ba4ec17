"""Clear errors for malformed calls to the app's HTTP API; the server goes on serving.

The browser always sends well-formed values; an API client may send anything. Gradio checks some values
itself (pydantic models for files and chat histories, bounds for sliders) and answers a failure with a
traceback in the server's log and "upstream app has raised an exception" for the client, or coerces
them silently (a list as the question). These wrappers check every value the API exposes first, with the
pure checks of :mod:`.handlers`, and answer a bad one with a ``gr.Error`` that names the field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr
from pydantic import ValidationError

from ..errors import LCIRCError
from . import handlers


def checked(check: Any, *values: Any) -> Any:
    """Run an input check; a malformed API call gets its message as a ``gr.Error`` (the server goes on)."""
    try:
        return check(*values)
    except LCIRCError as err:
        raise invalid_request(str(err)) from None


def invalid_request(message: str) -> gr.Error:
    """The error a malformed API call gets: its message for the client, no traceback in the server's log."""
    return gr.Error(message, title="Invalid request", print_exception=False)


def clear_payload_errors(component: Any, message: str) -> Any:
    """Give a component's API payload check (Gradio's pydantic model) a ``gr.Error`` naming the field.

    Gradio validates files and chat histories before any handler runs; a failure there reaches an API
    client only as "upstream app has raised an exception", with a traceback in the server's log.
    """
    model = component.data_model

    def model_validate(cls: Any, obj: Any, **kwargs: Any) -> Any:
        try:
            return model.model_validate(obj, **kwargs)
        except ValidationError:
            raise invalid_request(message) from None

    component.data_model = type(model.__name__, (model,), {"model_validate": classmethod(model_validate)})
    return component


def checked_payload(component: Any, check: Callable[[Any], Any]) -> Any:
    """Run ``check`` on the raw API value before the component's own preprocessing (which coerces or crashes)."""
    preprocess = component.preprocess
    component.preprocess = lambda payload: preprocess(checked(check, payload))
    return component


def checked_slider(slider: gr.Slider, field: str) -> gr.Slider:
    """A slider whose API value must be a number in its range (Gradio's own check fails on text with a traceback)."""
    return checked_payload(slider, lambda value: handlers.check_number(field, value, slider.minimum, slider.maximum))
