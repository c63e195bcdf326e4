"""Import the weights of a stored mde model (an ONNX file) back into the registry's torch network, so that
training can start from any stored model (``mde train --init MODEL``).

:func:`torch_network_from_model` resolves the model (store name or path), finds the registry entry whose
``ModelSpec.architecture`` is the metadata's ``architecture``, builds that network with the model's sizes
and fills its state dict from the graph's initializers, then checks the torch network against ONNX Runtime
on the model file. Only fp32 models are accepted (an fp16 or int8 graph holds rounded weights).

How the initializers are mapped (by graph structure, never by initializer order or name):

* Scopes. The exporters (:mod:`mde.export.onnx_export`, used for runs, seeds and musicnn imports alike) name
  every node after the torch module that made it: ``/module/layer1/conv/Conv`` is an op of the module
  ``layer1.conv`` (the leading ``module`` is the exporter's output wrapper). torch writes a scope either
  relative to its parent (``conv``), as a full path (``branch3.0``) or relative to the nearest called
  ancestor (``text`` for ``heads.heads.text`` when the ModuleDict between is never called): each part is
  resolved against the network's own module tree, and a node whose scope does not resolve maps nothing.
  Initializer names are not used: torch and ONNX Runtime merge equal initializers, so a fresh BatchNorm's
  running mean may be read from ``module.spec_bn.bias``.
* Each node's constant inputs fill the parameters of the module its scope names, by op and input position:
  Conv (weight, bias), Gemm (weight, transposed unless transB, times alpha; bias times beta), MatMul and
  Add inside an ``nn.Linear`` (weight = the constant transposed; bias), BatchNormalization (weight, bias,
  running mean, running var; a graph epsilon other than the module's is folded into the running var),
  GRU / LSTM / RNN (ONNX W, R, B per direction, the k-th node of a module in graph order being layer k,
  gates reordered from ONNX's z r h / i o f c to torch's r z n / i f g o).
* Fused BatchNorm. In eval mode the exporter folds a BatchNorm that takes a conv's output into that conv:
  the graph holds ``W' = W * g / sqrt(v + eps)`` and ``b' = (b - m) * g / sqrt(v + eps) + beta`` and no
  BatchNormalization node; g, beta, m and v cannot be recovered separately. Which BatchNorm takes which
  conv's output is read off the torch network (forward hooks on one input window, run on the meta device:
  no arithmetic); a pair counts as fused when the graph has a Conv but no BatchNormalization node in the
  BatchNorm's scope. It is imported as conv weight ``W'``, conv bias 0 (when the conv has one), and a
  BatchNorm that is the identity plus ``b'``: weight 1, bias ``b'``, running mean 0, running var
  ``1 - eps`` (so ``sqrt(var + eps) = 1``). In eval mode that is the graph's function exactly; a training
  step (train-mode BatchNorm) normalises by batch statistics from there, as it would from any start.
* Parameters that the graph only holds as a computed constant are solved for, per module class:
  :class:`~mde.trainer.models.sincnet.MusicSinc` (each filter's band edges, fitted to the folded filter
  bank, see :func:`_fit_sinc_edges`) and :class:`~mde.trainer.models.harmonic_cnn.HarmonicSTFT` (the
  bandwidth factor Q, by least squares on the folded triangular filterbank).
* Every state entry of a module that appears in the graph must be filled, every constant at a weight
  position must map, and no entry may be given two different values: otherwise a one-line ModelError
  counts what did not map. Entries of modules the graph never uses (e.g. JETATAG's tag decoder, or its
  projector and tag encoder in a model exported without the joint space) keep the fresh network's
  initialisation and are listed in :attr:`ImportedNetwork.fresh`. A model with a joint tag space also has
  its tag encoder graph (in the metadata) mapped onto the network's ``tag_encoder``.
* Fine-tuned models. A model whose metadata lineage has a 'head' (``mde train --init``) is built as that
  :class:`~mde.trainer.models.heads.HeadedNetwork` (the registry network as ``backbone``, its old classifier
  unused and so listed in ``fresh``, and the new ``head``); the scopes then start ``backbone`` and ``head``.
* Shared architecture names. When several registry entries carry the metadata's architecture (none do at
  present), those whose input (kind, rate, channels, framing, front end, input transform) and objective
  fit the metadata are tried in registry order, and the first whose weights map and whose outputs match
  ONNX Runtime is taken.

Input standardisation: a log-mel model with ``band_norm`` metadata takes its log-mel standardised per band
before the graph; the torch network does not hold that step (training applies it in its input stage,
``mde.trainer.frontend.network_input(spec, band_norm)``). A caller training the imported network must use
``info.band_norm`` there, not fit a new one.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

import numpy as np

from mde.errors import MissingExtraError, ModelError
from mde.runtime import store
from mde.runtime.package import TARGET_PREFIX, ModelInfo, info_from_session, open_session

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mde.trainer.models import ModelSpec

VERIFY_WINDOWS = 3
"""Example windows (:func:`mde.export.examples.example_inputs`) on which torch is checked against ONNX Runtime."""
ATOL = 1e-4
RTOL = 1e-4
"""The check's tolerance per output: max |torch - ONNX Runtime| <= ATOL + RTOL * max |torch output|, in the
output's own units (tag probabilities, embedding values), as the export's own parity check."""
WRAPPER = "module"
"""The first scope of every exported node: the exporter's output wrapper (``_NamedOutputs.module``)."""
EXAMPLES_SHOWN = 4


class ImportedNetwork(NamedTuple):
    """What :func:`torch_network_from_model` returns.

    network: the registry's torch network in eval mode, holding the model's weights.
    info: the model's metadata (``info.band_norm``: the input standardisation to train with, module docstring).
    registry_name: the registry entry built (e.g. 'fcn05').
    spec: that entry (its ``input_length`` the model's window when the model was exported at another one).
    fresh: state-dict keys the model file holds no weights for (modules its graph never uses); they keep
      the fresh network's initialisation.
    deltas: max |torch - ONNX Runtime| per graph output on the check's example windows.
    """

    network: nn.Module
    info: ModelInfo
    registry_name: str
    spec: ModelSpec
    fresh: tuple[str, ...]
    deltas: dict[str, float]


def torch_network_from_model(model: str | os.PathLike[str], *, windows: int = VERIFY_WINDOWS) -> ImportedNetwork:
    """The registry network of the stored model ``model`` (a store name or an ``.onnx`` path) with its weights.

    windows: example windows for the check against ONNX Runtime (fewer is faster on large networks).
    Raises ModelError (one line): unknown model, not fp32, an architecture not in the registry, weights that
    do not map onto the network (counted), or outputs that differ from ONNX Runtime beyond ATOL / RTOL.
    """
    try:
        import onnx
        import torch  # noqa: F401  (the networks are torch's)
    except ImportError as exc:
        raise MissingExtraError(exc.name or "onnx", "export", "Importing a model's weights into torch") from None

    path = store.resolve(model)
    origin = str(path)
    session = open_session(path, ["CPUExecutionProvider"])
    info = info_from_session(session, origin)
    if info.precision != "fp32":
        raise ModelError(f"{origin}: an {info.precision} model; import weights from the fp32 model it was made from")
    specs = registry_candidates(info, origin)
    graph = onnx.load(str(path))
    failures = []
    for spec in specs:
        try:
            return _import(spec, info, graph, session, windows, origin)
        except ModelError as exc:
            if len(specs) == 1:
                raise
            failures.append(f"{spec.name}: {exc}")
    names = ", ".join(spec.name for spec in specs)
    raise ModelError(f"{origin}: architecture {info.architecture!r} fits none of the registry entries {names} "
                     f"({'; '.join(failures)})")


def registry_candidates(info: ModelInfo, origin: str) -> list[ModelSpec]:
    """The registry entries that may hold the model: those named by its architecture, narrowed by its input and
    objective when several share the name; ModelError (one line, naming the known ones) when none does."""
    from mde.trainer.models import get_model_spec, registered_names

    specs = [get_model_spec(name) for name in registered_names()]
    named = [spec for spec in specs if spec.architecture == info.architecture]
    if not named:
        known = ", ".join(sorted({spec.architecture for spec in specs}, key=str.lower))
        raise ModelError(f"{origin}: architecture {info.architecture!r} is not in the model registry "
                         f"(known: {known}); its weights cannot be imported into torch")
    fitting = [spec for spec in named if _fits(spec, info)]
    return fitting or named


def _fits(spec: ModelSpec, info: ModelInfo) -> bool:
    """Whether the metadata's input and outputs are those the registry entry produces."""
    similarity = any(name.startswith(TARGET_PREFIX) for name in info.outputs)
    if (spec.input_kind, spec.channels, spec.sample_rate, spec.framing) != (
            info.input_kind, info.channels, info.sample_rate, info.framing):
        return False
    if spec.frontend is not None and spec.frontend != info.frontend:
        return False
    if spec.frontend is None and spec.input_transform != info.input_transform:
        return False
    return (spec.objective == "similarity") == similarity and spec.embedding_output in info.outputs


def network_args(spec: ModelSpec, info: ModelInfo) -> dict[str, Any]:
    """The factory's arguments for the model: ``n_tags`` from its tag names (the entry's default without any),
    and for a similarity network ``topics`` {kind: size} from its ``target_<kind>`` outputs."""
    args: dict[str, Any] = {"n_tags": len(info.tag_names) if info.tag_names else spec.n_tags}
    if spec.objective == "similarity":
        args["topics"] = {name[len(TARGET_PREFIX):]: size for name, size in info.outputs.items()
                          if name.startswith(TARGET_PREFIX)}
    return args


def _import(spec: ModelSpec, info: ModelInfo, graph: Any, session: Any, windows: int,
            origin: str) -> ImportedNetwork:
    """Build ``spec``'s network, map ``graph`` onto it and check it against ONNX Runtime."""
    from mde.export.examples import example_inputs
    from mde.trainer.models.heads import build_network

    if info.window_samples != spec.input_length and info.framing == "audio_windows":
        spec = dataclasses.replace(spec, input_length=info.window_samples)  # as the export of a distilled student
    try:
        args = network_args(spec, info)
        network = build_network(spec, args.pop("n_tags"), args, info.lineage.get("head")).eval()
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(f"{origin}: cannot build {spec.name} for it: {_one_line(exc)}") from None
    inputs = example_inputs(info, max(1, windows))
    pairs = _conv_bn_pairs(network, inputs[:1], origin)
    mapped = _GraphMapper(network, pairs).map(graph.graph, f"{origin} ({spec.name})")
    fresh = list(mapped.fresh)
    tag_encoder = _tag_encoder_graph(info, network, origin)
    if tag_encoder is not None:
        import onnx

        encoder_map = _GraphMapper(network.get_submodule("tag_encoder"), {}).map(
            onnx.load_from_string(tag_encoder).graph, f"{origin} (tag encoder)")
        fresh = [key for key in fresh if not key.startswith("tag_encoder.")]
        mapped.state.update({f"tag_encoder.{key}": value for key, value in encoder_map.state.items()})
        fresh += [f"tag_encoder.{key}" for key in encoder_map.fresh]
    _load(network, mapped.state, origin)
    deltas = _check(session, network, inputs, f"{origin}: the {spec.name} network with the imported weights")
    if tag_encoder is not None:
        encoder_session = open_session(tag_encoder, ["CPUExecutionProvider"], what=f"{origin}: the tag encoder")
        _check(encoder_session, network.get_submodule("tag_encoder"), _tag_examples(len(info.tag_names)),
               f"{origin}: the imported tag encoder")
    return ImportedNetwork(network.eval(), info, spec.name, spec, tuple(fresh), deltas)


def _tag_encoder_graph(info: ModelInfo, network: nn.Module, origin: str) -> Optional[bytes]:
    """The model's tag encoder graph (None without one); ModelError when the network has no tag encoder."""
    if info.tag_encoder is None:
        return None
    from mde.runtime.tag_space import decode_graph

    try:
        network.get_submodule("tag_encoder")
    except AttributeError:
        raise ModelError(f"{origin}: the model has a tag encoder, the registry network none") from None
    return decode_graph(info.tag_encoder, origin)


def _tag_examples(n_tags: int) -> np.ndarray:
    """Every single tag and 16 random tag sets, as :func:`mde.export.onnx_export.export_tag_encoder` checks."""
    sets = (np.random.default_rng(0).random((16, n_tags)) < 0.1).astype(np.float32)
    return np.concatenate([np.eye(n_tags, dtype=np.float32), sets])


def _check(session: Any, network: nn.Module, inputs: np.ndarray, what: str) -> dict[str, float]:
    """Max |ONNX Runtime - torch| per graph output on ``inputs``; ModelError beyond ATOL + RTOL * max |torch|."""
    import torch

    names = [output.name for output in session.get_outputs()]
    [graph_input] = session.get_inputs()
    got = dict(zip(names, session.run(names, {graph_input.name: np.ascontiguousarray(inputs, np.float32)})))
    try:
        with torch.no_grad():
            result = network.eval()(torch.from_numpy(inputs))
    except (RuntimeError, ValueError) as exc:  # the network does not take the model's input
        raise ModelError(f"{what} cannot run the model's input: {_one_line(exc)}") from None
    if not isinstance(result, dict):
        result = dict(zip(names, result if isinstance(result, (tuple, list)) else (result,)))
    deltas: dict[str, float] = {}
    failures: list[str] = []
    for name in names:
        if name not in result:
            failures.append(f"no output {name!r}")
            continue
        expected = result[name].numpy()
        deltas[name] = float(np.abs(got[name] - expected).max()) if expected.shape == got[name].shape else math.inf
        tolerance = ATOL + RTOL * float(np.abs(expected).max())
        if not deltas[name] <= tolerance:
            failures.append(f"{name} max |delta| {deltas[name]:.3e} (tolerance {tolerance:.3e})")
    if failures:
        raise ModelError(f"{what} differs from the model: {'; '.join(failures)}")
    return deltas


def _load(network: nn.Module, state: dict[str, np.ndarray], origin: str) -> None:
    """Load the mapped entries (float32) over the fresh network's own, strictly."""
    import torch

    current = network.state_dict()
    full = {key: torch.from_numpy(np.array(state[key], dtype=np.float32)).to(value.dtype)
            if key in state else value for key, value in current.items()}
    try:
        network.load_state_dict(full, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{origin}: the mapped weights do not load: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _examples(items: Iterable[str]) -> str:
    items = sorted(items)
    more = f", ... ({len(items) - EXAMPLES_SHOWN} more)" if len(items) > EXAMPLES_SHOWN else ""
    return ", ".join(items[:EXAMPLES_SHOWN]) + more


# ---------------------------------------------------------------------------------------------- the torch side


def _conv_bn_pairs(network: nn.Module, example: np.ndarray, origin: str) -> dict[str, str]:
    """conv module path -> the BatchNorm module path that takes exactly that conv's output, from forward hooks on
    one window (run on the meta device, where the network allows, so that nothing is computed)."""
    import torch
    from torch import nn
    from torch.func import functional_call

    outputs: dict[int, str] = {}
    kept: list[torch.Tensor] = []  # conv outputs stay alive, so that no later tensor reuses their id
    pairs: dict[str, str] = {}

    def conv_hook(path: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            outputs[id(output)] = path
            kept.append(output)
        return hook

    def bn_hook(path: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            conv = outputs.get(id(args[0])) if args else None
            if conv is not None:
                pairs.setdefault(conv, path)
        return hook

    handles = []
    for path, module in network.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            handles.append(module.register_forward_hook(conv_hook(path)))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            handles.append(module.register_forward_pre_hook(bn_hook(path)))
    try:
        with torch.no_grad():
            try:
                tensors = {name: value.to("meta") for name, value in
                           [*network.named_parameters(), *network.named_buffers()]}
                functional_call(network, tensors, (torch.from_numpy(example).to("meta"),))
            except Exception:  # an op without a meta kernel: run it for real
                outputs.clear()
                kept.clear()
                pairs.clear()
                try:
                    network(torch.from_numpy(example))
                except (RuntimeError, ValueError) as exc:
                    raise ModelError(f"{origin}: the registry network cannot take the model's input: "
                                     f"{_one_line(exc)}") from None
    finally:
        for handle in handles:
            handle.remove()
    return pairs


# ---------------------------------------------------------------------------------------------- the graph side


class _Mapped(NamedTuple):
    state: dict[str, np.ndarray]
    """Filled state-dict entries (float32), keys relative to the mapped module."""
    fresh: tuple[str, ...]
    """Entries of modules the graph does not use."""


class _Node(NamedTuple):
    """A graph node with its resolved scope and its constant inputs (position -> (initializer name, value))."""

    proto: Any
    scope: Optional[str]
    constants: dict[int, tuple[str, np.ndarray]]


_GRU_GATES = (1, 0, 2)  # torch's r z n gates from ONNX's z r h
_LSTM_GATES = (0, 2, 3, 1)  # torch's i f g o gates from ONNX's i o f c
_RNN_OPS = {"GRU": _GRU_GATES, "LSTM": _LSTM_GATES, "RNN": (0,)}


class _GraphMapper:
    """Maps one ONNX graph's initializers onto one torch module's state dict (module docstring)."""

    def __init__(self, root: nn.Module, pairs: dict[str, str]) -> None:
        self.root = root
        self.modules = dict(root.named_modules())
        self.expected = {key: tuple(value.shape) for key, value in root.state_dict().items()}
        self.pairs = pairs
        self.state: dict[str, np.ndarray] = {}
        self.unmapped: list[str] = []
        self.problems: list[str] = []
        self.used: set[str] = set()
        self._steps: dict[tuple[str, str], Optional[str]] = {}

    # -- scopes

    def scope(self, name: str) -> Optional[str]:
        """The module path of a node or initializer named '/module/a/b/Op' (None when it does not resolve)."""
        if not name.startswith("/"):
            return None
        parts = name[1:].split("/")[:-1]
        if parts and parts[0] == WRAPPER and WRAPPER not in self.modules:
            parts = parts[1:]
        path = ""
        for part in parts:
            key = (path, part)
            if key not in self._steps:
                self._steps[key] = self._step(path, part)
            step = self._steps[key]
            if step is None:
                return None
            path = step
        return path

    def _step(self, path: str, part: str) -> Optional[str]:
        """The module that scope part ``part`` names below ``path``: a child, a full path, or the nearest
        descendant whose path ends with it."""
        child = f"{path}.{part}" if path else part
        if child in self.modules:
            return child
        if part in self.modules and (not path or part.startswith(path + ".")):
            return part
        prefix = path + "." if path else ""
        found = [name for name in self.modules if name.startswith(prefix) and name.endswith("." + part)]
        if not found:
            return None
        depth = min(name.count(".") for name in found)
        nearest = [name for name in found if name.count(".") == depth]
        return nearest[0] if len(nearest) == 1 else None

    # -- filling entries

    def assign(self, module: str, param: str, value: np.ndarray, source: str) -> None:
        """Fill ``module.param`` with ``value`` (float32; only size-1 axes may differ from the entry's shape)."""
        key = f"{module}.{param}" if module else param
        if key not in self.expected:
            self.unmapped.append(source)
            return
        want = self.expected[key]
        value = np.asarray(value, dtype=np.float32)
        if value.shape != want:
            if [n for n in value.shape if n != 1] != [n for n in want if n != 1]:
                self.problems.append(f"{source} {value.shape} does not fit {key} {want}")
                return
            value = value.reshape(want)
        if key in self.state and not np.array_equal(self.state[key], value):
            self.problems.append(f"{key} is given two different values")
            return
        self.state[key] = value

    # -- the graph

    def map(self, graph: Any, origin: str) -> _Mapped:
        """Fill the state dict from ``graph`` (an onnx.GraphProto); ModelError when something does not map."""
        from onnx import TensorProto, numpy_helper

        values = {init.name: init for init in graph.initializer}
        for proto in graph.node:  # a Constant node's tensor counts as an initializer
            if proto.op_type == "Constant" and proto.output:
                for attribute in proto.attribute:
                    if attribute.name == "value":
                        values[proto.output[0]] = attribute.t
        floats: dict[str, np.ndarray] = {}
        nodes = []
        for proto in graph.node:
            constants = {}
            for index, name in enumerate(proto.input):
                if name in values and values[name].data_type == TensorProto.FLOAT:
                    if name not in floats:
                        floats[name] = numpy_helper.to_array(values[name])
                    constants[index] = (name, floats[name])
            scope = self.scope(proto.name)
            nodes.append(_Node(proto, scope, constants))
            if scope is not None:
                self.used.add(scope)
        self.used.update(scope for scope in map(self.scope, values) if scope is not None)
        norms = {node.scope for node in nodes if node.proto.op_type == "BatchNormalization"}
        layers: dict[tuple[str, str], int] = {}
        scoped: dict[str, list[_Node]] = {}
        for node in nodes:
            if not node.constants:
                continue
            module = self.modules.get(node.scope) if node.scope is not None else None
            if module is None:
                self.unmapped += [f"{name} (input {i} of {node.proto.name or node.proto.op_type})"
                                  for i, (name, _) in node.constants.items() if _is_weight_slot(node, i)]
                continue
            assert node.scope is not None
            if not self._map_node(node, module, norms, layers):
                scoped.setdefault(node.scope, []).append(node)
        self._recover(scoped)
        return self._finish(scoped, origin)

    def _map_node(self, node: _Node, module: nn.Module, norms: set[Optional[str]],
                  layers: dict[tuple[str, str], int]) -> bool:
        """Fill the entries of ``module`` from one node; False when the node is no parameterised op of it."""
        from torch import nn

        op, path, consts = node.proto.op_type, node.scope, node.constants
        assert path is not None
        label = node.proto.name
        if op == "Conv" and isinstance(module, nn.modules.conv._ConvNd):
            self._conv(path, module, consts, norms, label)
        elif op == "BatchNormalization" and isinstance(module, nn.modules.batchnorm._BatchNorm):
            self._batch_norm(path, module, node)
        elif op == "Gemm" and isinstance(module, nn.Linear):
            self._gemm(path, node)
        elif op == "MatMul" and isinstance(module, nn.Linear) and 1 in consts:
            self.assign(path, "weight", consts[1][1].T, f"{consts[1][0]} (transposed)")
        elif op == "Add" and isinstance(module, nn.Linear) and len(consts) == 1:
            [(name, value)] = consts.values()
            self.assign(path, "bias", value, name)
        elif op in _RNN_OPS and isinstance(module, nn.RNNBase):
            layer = layers.get((path, op), 0)
            layers[(path, op)] = layer + 1
            self._rnn(path, module, node, layer)
        else:
            return False
        return True

    def _conv(self, path: str, module: Any, consts: dict[int, tuple[str, np.ndarray]],
              norms: set[Optional[str]], label: str) -> None:
        if 1 not in consts:
            self.problems.append(f"{label}: the weight of {path} is no constant")
            return
        weight_name, weight = consts[1]
        bias_name, bias = consts.get(2, (None, None))
        self.assign(path, "weight", weight, weight_name)
        bn = self.pairs.get(path)
        if bn is not None and bn not in norms:  # the BatchNorm after the conv was folded into it
            self._fused(path, module, bn, weight.shape[0], bias, bias_name, label)
        elif bias is not None:
            if module.bias is not None:
                self.assign(path, "bias", bias, str(bias_name))
            elif np.any(bias):
                self.problems.append(f"{bias_name}: a bias for {path}, which has none")

    def _fused(self, path: str, conv: Any, bn: str, channels: int, bias: Optional[np.ndarray],
               bias_name: Optional[str], label: str) -> None:
        """A conv with the BatchNorm ``bn`` folded into it: conv bias 0, BatchNorm = identity + the folded bias."""
        self.used.add(bn)
        norm: Any = self.modules[bn]
        shift = np.zeros(channels, np.float32) if bias is None else bias
        source = bias_name or f"{label} (fused bias 0)"
        if norm.affine:
            self.assign(bn, "weight", np.ones_like(shift), f"{label} (fused: 1)")
            self.assign(bn, "bias", shift, source)
            if conv.bias is not None:
                self.assign(path, "bias", np.zeros_like(shift), f"{label} (fused: 0)")
        elif conv.bias is not None:
            self.assign(path, "bias", shift, source)
        elif np.any(shift):
            self.problems.append(f"{label}: neither {path} nor {bn} has a bias to hold the fused one")
        if norm.track_running_stats:
            self.assign(bn, "running_mean", np.zeros_like(shift), f"{label} (fused: 0)")
            self.assign(bn, "running_var", np.full_like(shift, 1.0 - float(norm.eps)), f"{label} (fused: 1 - eps)")

    def _batch_norm(self, path: str, module: Any, node: _Node) -> None:
        consts = node.constants
        missing = [i for i in (1, 2, 3, 4) if i not in consts]
        if missing:
            self.problems.append(f"{node.proto.name}: inputs {missing} are no constants")
            return
        eps = next((a.f for a in node.proto.attribute if a.name == "epsilon"), 1e-5)
        names = {i: consts[i][0] for i in consts}
        weight, bias, mean, var = (consts[i][1] for i in (1, 2, 3, 4))
        if getattr(module, "affine", False):
            self.assign(path, "weight", weight, names[1])
            self.assign(path, "bias", bias, names[2])
        elif np.any(weight != 1) or np.any(bias != 0):
            self.problems.append(f"{node.proto.name}: a scale and shift for {path}, which has none")
        if getattr(module, "track_running_stats", False):
            self.assign(path, "running_mean", mean, names[3])
            if not math.isclose(eps, float(module.eps), rel_tol=1e-6):  # the graph's epsilon, in the running var
                var = var.astype(np.float64) + eps - float(module.eps)
            if np.any(var < 0):
                self.problems.append(f"{node.proto.name}: epsilon {eps:g} cannot be expressed with {module.eps:g}")
            self.assign(path, "running_var", var, names[4])

    def _gemm(self, path: str, node: _Node) -> None:
        attrs = {a.name: (a.f if a.type == a.FLOAT else a.i) for a in node.proto.attribute}
        consts = node.constants
        if attrs.get("transA", 0) or 1 not in consts:
            self.problems.append(f"{node.proto.name}: not x W^T + b with a constant W")
            return
        name, weight = consts[1]
        weight = weight if attrs.get("transB", 0) else weight.T
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        self.assign(path, "weight", weight if alpha == 1 else weight * alpha, name)
        if 2 in consts:
            self.assign(path, "bias", consts[2][1] if beta == 1 else consts[2][1] * beta, consts[2][0])

    def _rnn(self, path: str, module: Any, node: _Node, layer: int) -> None:
        gates = _RNN_OPS[node.proto.op_type]
        consts = node.constants
        if 1 not in consts or 2 not in consts:
            self.problems.append(f"{node.proto.name}: W and R are no constants")
            return
        if getattr(module, "proj_size", 0):
            self.problems.append(f"{node.proto.name}: an LSTM with projections")
            return

        def reorder(value: np.ndarray) -> np.ndarray:
            blocks = np.split(value, len(gates))
            return np.concatenate([blocks[gate] for gate in gates])

        weights, recurrent = consts[1][1], consts[2][1]
        biases = consts[3][1] if 3 in consts else None
        for direction in range(weights.shape[0]):
            suffix = f"l{layer}" + ("_reverse" if direction else "")
            self.assign(path, f"weight_ih_{suffix}", reorder(weights[direction]), consts[1][0])
            self.assign(path, f"weight_hh_{suffix}", reorder(recurrent[direction]), consts[2][0])
            if biases is not None:
                input_bias, hidden_bias = np.split(biases[direction], 2)
                self.assign(path, f"bias_ih_{suffix}", reorder(input_bias), consts[3][0])
                self.assign(path, f"bias_hh_{suffix}", reorder(hidden_bias), consts[3][0])

    # -- computed constants

    def _recover(self, scoped: dict[str, list[_Node]]) -> None:
        """Solve for the parameters of modules whose graph holds them only as a computed constant."""
        for path, nodes in scoped.items():
            recover = _recoverer(self.modules[path])
            if recover is None:
                continue
            for param, value in recover(self.modules[path], nodes, self.problems).items():
                self.assign(path, param, value, f"{path} (solved from its constants)")

    # -- the account

    def _finish(self, scoped: dict[str, list[_Node]], origin: str) -> _Mapped:
        missing: list[str] = []
        fresh: list[str] = []
        for key in self.expected:
            module = key.rpartition(".")[0]
            if key in self.state or key.endswith("num_batches_tracked"):
                continue
            (missing if module in self.used else fresh).append(key)
        incomplete = {key.rpartition(".")[0] for key in missing}
        unexplained = {name for path, nodes in scoped.items() if path in incomplete
                       for node in nodes for name, _ in node.constants.values()}
        unmapped = sorted(set(self.unmapped) | unexplained)
        if missing or unmapped or self.problems:
            parts = []
            if missing:
                parts.append(f"{len(missing)} of the network's {len(self.expected)} state entries found no "
                             f"initializer ({_examples(missing)})")
            if unmapped:
                parts.append(f"{len(unmapped)} initializers map onto no parameter ({_examples(unmapped)})")
            if self.problems:
                parts.append(f"{len(self.problems)} that do not fit ({_examples(self.problems)})")
            raise ModelError(f"{origin}: the graph does not map onto the network: {'; '.join(parts)}")
        return _Mapped(self.state, tuple(fresh))


def _is_weight_slot(node: _Node, index: int) -> bool:
    """Whether input ``index`` of the node is where a parameterised op takes a parameter."""
    op = node.proto.op_type
    return ((op in ("Conv", "Gemm") and index in (1, 2)) or (op == "BatchNormalization" and index >= 1)
            or (op in _RNN_OPS and index in (1, 2, 3)))


Recoverer = Callable[[Any, Sequence[_Node], list[str]], dict[str, np.ndarray]]


def _recoverer(module: Any) -> Optional[Recoverer]:
    """The solver of a module class whose parameters an export folds into a constant, if it has one."""
    from mde.trainer.models.harmonic_cnn import HarmonicSTFT
    from mde.trainer.models.sincnet import MusicSinc

    if isinstance(module, MusicSinc):
        return _recover_sinc
    if isinstance(module, HarmonicSTFT):
        return _recover_harmonic_q
    return None


def _constant_of(nodes: Sequence[_Node], op: str, shape: tuple[int, ...]) -> Optional[np.ndarray]:
    """The constant input of shape ``shape`` of the module's ``op`` node (None when there is none)."""
    for node in nodes:
        if node.proto.op_type == op:
            for _, value in node.constants.values():
                if value.shape == shape:
                    return value
    return None


def _recover_harmonic_q(module: Any, nodes: Sequence[_Node], problems: list[str]) -> dict[str, np.ndarray]:
    """HarmonicSTFT's bandwidth factor Q from its folded filterbank (the MatMul's constant, filterbank().T):
    every weight v in (0, 1) is 1 - 2 |bin - f0| Q / (BW_ALPHA f0 + BW_BETA), linear in Q: least squares."""
    from mde.trainer.models.harmonic_cnn import BW_ALPHA, BW_BETA

    bins = module.fft_bins.detach().cpu().numpy().astype(np.float64)
    centers = module.centers.detach().cpu().numpy().astype(np.float64)
    folded = _constant_of(nodes, "MatMul", (len(centers), len(bins)))
    if folded is None:
        problems.append("no folded harmonic filterbank found")
        return {}
    weights = folded.T.astype(np.float64)  # (bins, filters)
    slope = 2 * np.abs(bins[:, None] - centers[None, :]) / (BW_ALPHA * centers[None, :] + BW_BETA)
    inside = (weights > 0) & (weights < 1)
    if not inside.any():
        problems.append("the harmonic filterbank has no weight strictly between 0 and 1")
        return {}
    a, b = slope[inside], 1.0 - weights[inside]
    return {"bw_q": np.array([float(np.dot(a, b) / np.dot(a, a))], np.float32)}


SINC_FIT_TOLERANCE = 1e-4
"""Largest |fitted - folded| tap (filters normalised to a centre tap of 1) accepted for a MusicSinc filter
before further starting points are tried; the fit ends within float32's rounding of the folded bank
(~1e-5) for every filter seen."""


def _recover_sinc(module: Any, nodes: Sequence[_Node], problems: list[str]) -> dict[str, np.ndarray]:
    """MusicSinc's band parameters (low_hz_, band_hz_) from its folded filter bank (the Conv's constant)."""
    from mde.trainer.models.sincnet import MIN_BAND_HZ, MIN_LOW_HZ

    n_filters, length = module.low_hz_.shape[0], module.length
    folded = _constant_of(nodes, "Conv", (n_filters, 1, length))
    if folded is None:
        problems.append("no folded sinc filter bank found")
        return {}
    window = module.window.detach().cpu().numpy()[0].astype(np.float64)
    low, high = (edge.detach().cpu().numpy()[:, 0].astype(np.float64) for edge in module.edges())
    fitted = _fit_sinc_edges(folded[:, 0].astype(np.float64) / window, (low, high))
    if fitted is None:
        problems.append("the sinc filter bank does not fit band-pass filters")
        return {}
    f1, f2 = fitted
    rate = module.sample_rate
    return {"low_hz_": (f1 - MIN_LOW_HZ / rate)[:, None], "band_hz_": (f2 - f1 - MIN_BAND_HZ / rate)[:, None]}


def _fit_sinc_edges(taps: np.ndarray, fresh: tuple[np.ndarray, np.ndarray]) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Band edges (f1 < f2, in units of the sample rate) of normalised band-pass filters ``taps`` (n, length):
    row k is (sin(2 pi f2 t) - sin(2 pi f1 t)) / (pi t) / (2 (f2 - f1)) over t = -half ... half (1 at t = 0).

    Gauss-Newton on both edges of every filter at once, from the two strongest sinusoids of t * taps (for
    t > 0); filters still off by more than SINC_FIT_TOLERANCE are tried again from an aliased start
    (f2 above the Nyquist frequency, where sin(2 pi f2 t) = -sin(2 pi (1 - f2) t)) and from the fresh module's
    edges. None when some filter fits from none of them.
    """
    half = (taps.shape[1] - 1) // 2
    target = taps[:, half + 1:]
    t = np.arange(1, half + 1, dtype=np.float64)[None, :]
    a, b = _two_tones(target * t)
    f1, f2, error = _gauss_newton(target, t, a, b)
    for start in ((b, 1.0 - a), fresh):
        retry = np.nonzero(error > SINC_FIT_TOLERANCE)[0]
        if not len(retry):
            break
        g1, g2, g_error = _gauss_newton(target[retry], t, start[0][retry], start[1][retry])
        better = g_error < error[retry]
        f1[retry] = np.where(better, g1, f1[retry])
        f2[retry] = np.where(better, g2, f2[retry])
        error[retry] = np.where(better, g_error, error[retry])
    if not np.all(error <= SINC_FIT_TOLERANCE):
        return None
    return np.minimum(f1, f2), np.maximum(f1, f2)


def _two_tones(signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two strongest frequencies (units of the rate, ascending) of each row of a sum of two sines: the two
    highest local maxima of the tapered sine transform, on a grid of 1/16384 (~1 Hz at 16 kHz)."""
    n = signal.shape[1]
    taper = 0.5 + 0.5 * np.cos(np.pi * np.arange(1, n + 1) / (n + 1))  # the sines are odd about t = 0
    size = 1 << max(14, math.ceil(math.log2(4 * n)))
    spectrum = np.abs(np.fft.rfft(signal * taper, n=size, axis=1).imag)
    peaks = np.zeros_like(spectrum)
    inner = (spectrum[:, 1:-1] > spectrum[:, :-2]) & (spectrum[:, 1:-1] >= spectrum[:, 2:])
    peaks[:, 1:-1] = np.where(inner, spectrum[:, 1:-1], 0.0)
    top = np.sort(np.argpartition(peaks, -2, axis=1)[:, -2:], axis=1)
    return top[:, 0] / size, top[:, 1] / size


def _gauss_newton(target: np.ndarray, t: np.ndarray, f1: np.ndarray, f2: np.ndarray,
                  iterations: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges fitted to ``target`` (the right halves of the filters) from (f1, f2), with the largest |residual|
    per filter; the best iterate of each filter is kept."""
    f1, f2 = f1.astype(np.float64).copy(), f2.astype(np.float64).copy()
    best1, best2, best = f1.copy(), f2.copy(), np.full(len(f1), np.inf)
    for _ in range(iterations + 1):
        sine1, sine2 = np.sin(2 * np.pi * f1[:, None] * t), np.sin(2 * np.pi * f2[:, None] * t)
        width = 2 * (f2 - f1)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            band = (sine2 - sine1) / (np.pi * t)
            residual = band / width - target
            error = np.nan_to_num(np.abs(residual).max(axis=1), nan=np.inf)
            better = error < best
            best, best1, best2 = np.where(better, error, best), np.where(better, f1, best1), np.where(better, f2, best2)
            d2 = (2 * np.cos(2 * np.pi * f2[:, None] * t) * width - 2 * band) / width**2
            d1 = (2 * band - 2 * np.cos(2 * np.pi * f1[:, None] * t) * width) / width**2
            a11, a12, a22 = (d1 * d1).sum(1), (d1 * d2).sum(1), (d2 * d2).sum(1)
            g1, g2 = (d1 * residual).sum(1), (d2 * residual).sum(1)
            det = a11 * a22 - a12 * a12
            f1 = np.nan_to_num(f1 - (a22 * g1 - a12 * g2) / det)
            f2 = np.nan_to_num(f2 - (a11 * g2 - a12 * g1) / det)
    return best1, best2, best


__all__ = ["ATOL", "RTOL", "VERIFY_WINDOWS", "ImportedNetwork", "network_args", "registry_candidates",
           "torch_network_from_model"]
