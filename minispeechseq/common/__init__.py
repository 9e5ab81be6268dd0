"""What the package's programs share, beneath both tools/ and training/ (whose `train`, `data` and `evaluate`
programs parse their own options): `arguments.py`, the one-line error policy and argument types that refuse bad
values. Nothing here imports a project module."""
