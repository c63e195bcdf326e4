"""The model files shipped with mde: ``<name>.onnx`` files in this folder, data rather than code.

They are installed with the package (pyproject.toml's package data: ``mde/models/*.onnx``) and found by
name through the model store (:mod:`mde.runtime.store`), after the user's own store ($MDE_HOME/models),
so a user model of the same name wins. ``mde models`` lists them as 'bundled'; they load by name with no
import step and no torch. The environment variable ``MDE_BUNDLED_MODELS`` names another folder to use in
place of this one (the tests point it at tiny models). Nothing here is imported to find them.
"""
