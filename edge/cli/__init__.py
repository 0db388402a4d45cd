"""Thin argparse front-ends: one module per verb, each exposing ``add_arguments(parser)`` and ``run(args)``.

A verb module parses and calls into the library; it holds no pipeline logic.
"""
