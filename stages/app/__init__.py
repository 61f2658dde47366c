"""What people run on a trained model (not DVC stages): `python -m stages.app.predict`, and
`python -m stages.app.serve` (the web app, `make serve`)."""
