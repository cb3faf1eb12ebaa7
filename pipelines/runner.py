"""Beam pipeline options: runner options pass through; the default runs locally without Prism."""

from __future__ import annotations

import logging

from apache_beam.options.pipeline_options import PipelineOptions

# The DirectRunner would first try the Prism runner, which downloads a binary. For bounded
# batch pipelines it then uses the FnApiRunner anyway, so we choose that engine directly.
LOCAL_RUNNER = "FnApiRunner"


def pipeline_options(beam_args: list[str] | None = None) -> PipelineOptions:
    """Pipeline options from ``beam_args``; no runner (or ``DirectRunner``) means local."""
    args = list(beam_args or [])
    runner = None
    for i, arg in enumerate(args):
        if arg.startswith("--runner="):
            runner = arg.split("=", 1)[1]
        elif arg == "--runner" and i + 1 < len(args):
            runner = args[i + 1]
    if runner is None:
        args.append(f"--runner={LOCAL_RUNNER}")
    elif runner in ("DirectRunner", "direct"):
        args = [a for a in args if not a.startswith("--runner")]
        args.append(f"--runner={LOCAL_RUNNER}")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    return PipelineOptions(args)
