"""Models, looked up by name from config (`model.name`)."""
