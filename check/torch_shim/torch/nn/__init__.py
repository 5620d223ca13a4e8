"""The numpy stand-in's torch.nn: only functional (see torch/__init__.py)."""
