"""scMM Explorer: the Dash app (create_app in app.main)."""
