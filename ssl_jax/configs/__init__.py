"""Real checkpoint configs of the five encoders (models/*.json), shipped with the package."""
