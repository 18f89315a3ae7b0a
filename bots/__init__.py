"""What runs: configuration, presets, the ``heedful`` command and the runner."""
