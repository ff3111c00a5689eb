"""ProbPose Studio: the Gradio app (one module per tab). Imports probpose and analysis; nothing imports it."""
