"""ProbPose Studio: the Gradio app, one module per tab (explore, compare, cropcoco, calibration, sweep) over shared
modules (settings, models, inputs, state, figures, precomputed, examples). Imports probpose and analysis; nothing
in the library imports it."""

try:  # ZeroGPU: `spaces` must be imported before torch initialises CUDA
    import spaces  # type: ignore[import-not-found]
except ImportError:
    spaces = None
