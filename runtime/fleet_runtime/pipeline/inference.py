"""ONNX Runtime sessions: provider choice, what actually loaded, I/O binding, batching, warm-up.

onnxruntime-gpu quietly runs on the CPU when the CUDA libraries are missing;
so after creating a session we read ``session.get_providers()`` and report
what loaded, warn when it is not what was asked for, and never claim CUDA
that did not load (``ProviderReport.fallback``, shown in /health and /metrics).

>>> normalize_providers(["cuda", "cpu"])
['CUDAExecutionProvider', 'CPUExecutionProvider']
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fleet_runtime.pipeline.decoders import decoder_for
from fleet_runtime.pipeline.models import ModelError, prepare_model
from fleet_runtime.pipeline.preprocess import Geometry, Preprocess

log = logging.getLogger("fleet_runtime.inference")

TENSORRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
PREFERENCE = (TENSORRT, CUDA, CPU)
ALIASES = {"tensorrt": TENSORRT, "trt": TENSORRT, "cuda": CUDA, "gpu": CUDA, "cpu": CPU}
# ONNX Runtime's input type -> the numpy dtype call() converts raw inputs to
NUMPY_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(int32)": np.int32,
    "tensor(int64)": np.int64, "tensor(bool)": np.bool_,
}


def normalize_providers(names: Sequence[str] | None) -> list[str]:
    """Provider names from config (aliases allowed), in order; CPU is always last resort."""
    chosen = [ALIASES.get(n.lower(), n) for n in (names or PREFERENCE)]
    unknown = [n for n in chosen if n not in PREFERENCE]
    if unknown:
        raise ValueError(f"unknown execution provider {unknown[0]}: use tensorrt, cuda or cpu")
    return list(dict.fromkeys([*chosen, CPU]))


def available_providers() -> list[str]:
    import onnxruntime as ort  # type: ignore[import-untyped]

    return list(ort.get_available_providers())


# Device nodes of an NVIDIA GPU: a discrete card, or a Jetson's integrated one.
GPU_DEVICE_NODES = ("/dev/nvidia0", "/dev/nvhost-ctrl-gpu")


def gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU at all (not whether onnxruntime can use it)."""
    return any(os.path.exists(node) for node in GPU_DEVICE_NODES)


@dataclass
class ProviderReport:
    """What was asked for, what this onnxruntime build offers, and what the session loaded."""

    requested: list[str]
    available: list[str]
    active: list[str]
    gpu_present: bool = field(default_factory=gpu_present)

    @property
    def primary(self) -> str:
        return self.active[0] if self.active else "none"

    @property
    def fallback(self) -> bool:
        """True when the first provider asked for did not load."""
        return bool(self.requested) and self.primary != self.requested[0]

    @property
    def cpu_by_design(self) -> bool:
        """A GPU provider was asked for on a machine without a GPU: the CPU is the plan,
        not a fault (the same application config runs on GPU boxes and CPU boxes)."""
        return self.fallback and self.primary == CPU and not self.gpu_present

    @property
    def note(self) -> str | None:
        if not self.cpu_by_design:
            return None
        return f"running on CPU: this machine has no GPU ({self.requested[0]} is used where one is)"

    @property
    def warning(self) -> str | None:
        if not self.fallback or self.cpu_by_design:
            return None
        why = (
            "not in this onnxruntime build"
            if self.requested[0] not in self.available
            else "failed to load (missing CUDA/cuDNN/TensorRT libraries?)"
        )
        return f"{self.requested[0]} requested but {why}; running on {self.primary}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "available": self.available,
            "active": self.active,
            "primary": self.primary,
            "fallback": self.fallback,
            "warning": self.warning,
            "note": self.note,
        }


def cpu_threads() -> int:
    """Intra-op threads for the CPU provider: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _provider_options(name: str, descriptor: dict[str, Any]) -> dict[str, Any]:
    if name == CUDA:
        return {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC"}
    if name == TENSORRT:
        from fleet_runtime.pipeline.models import cache_dir

        return {
            "device_id": 0,
            "trt_fp16_enable": descriptor.get("precisionMode") == "FP16",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache_dir() / "trt"),
        }
    return {}


@dataclass
class Timing:
    """Recent inference latencies (ms) of one model, for p50/p95."""

    samples: list[float] = field(default_factory=list)
    count: int = 0
    total_ms: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ms: float) -> None:
        with self.lock:
            self.samples.append(ms)
            del self.samples[:-1024]
            self.count += 1
            self.total_ms += ms

    def quantile(self, q: float) -> float:
        with self.lock:
            return float(np.percentile(self.samples, q * 100)) if self.samples else 0.0


class ModelSession:
    """One ONNX Runtime session for one model node, described by its mlModelDescriptor."""

    def __init__(
        self,
        name: str,
        model_path: Path,
        descriptor: dict[str, Any],
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped]

        self.name = name
        self.threads = threads  # CPU threads for this model (None: the cores available)
        onnx_spec = descriptor.get("onnx", {})
        first = descriptor["inputs"][0]
        self.input_name: str = first["name"]
        self.shape: list[int] = list(first["shape"])
        self.batch = int(onnx_spec.get("batch", self.shape[0]))
        self.layout = onnx_spec.get("layout", "NCHW")
        self.preprocess = (
            Preprocess.from_descriptor(onnx_spec["preprocess"], self.layout)
            if "preprocess" in onnx_spec
            else None
        )
        self.decoder_config: dict[str, Any] = onnx_spec.get("decoder", {"type": "raw"})
        self.decode = decoder_for(self.decoder_config)
        requested = normalize_providers(providers or onnx_spec.get("providers"))
        available = available_providers()
        self._path = str(prepare_model(model_path, self.input_name, self.shape, self.batch))
        self.session = ort.InferenceSession(
            self._path,
            sess_options=self._options(ort, threads),
            providers=[(p, _provider_options(p, descriptor)) for p in requested if p in available],
        )
        self._stream: Any = None  # CPU: the inference stage's session, one thread per run
        self._stream_lock = threading.Lock()
        self._check_shape(model_path)
        self.providers = ProviderReport(requested, available, list(self.session.get_providers()))
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_types = {i.name: NUMPY_TYPES.get(i.type) for i in self.session.get_inputs()}
        self.on_gpu = self.providers.primary in (CUDA, TENSORRT)
        self.timing = Timing()
        self._report()

    def _check_shape(self, model_path: Path) -> None:
        """Refuse a model whose input cannot take the descriptor's shape (no onnx to adapt it)."""
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        if self.input_name not in inputs:
            raise ModelError(
                f"{model_path.name} has no input {self.input_name!r}"
                f" (inputs: {', '.join(inputs)}): fix mlModelDescriptor.inputs[0].name"
            )
        fixed = inputs[self.input_name]
        clash = [
            i
            for i, (m, d) in enumerate(zip(fixed, self.shape, strict=False))
            if isinstance(m, int) and m != d and not (i == 0 and self.batch > 1)
        ]
        if clash or len(fixed) != len(self.shape):
            raise ModelError(
                f"{model_path.name}: input {self.input_name} is {list(fixed)}, the descriptor"
                f" says {self.shape}: pip install onnx so the runtime can adapt it"
            )

    @staticmethod
    def _options(ort: Any, threads: int | None, spin: bool = True) -> Any:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: old exporters log pages of harmless warnings
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads or cpu_threads()
        options.inter_op_num_threads = 1
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return options

    def streaming(self, workers: int) -> Any:
        """The session the inference stage's ``workers`` share. On the CPU a second session
        whose runs use ``threads // workers`` threads (``threads``: the model's, else the
        cores): frames in flight side by side beat one frame split across cores (no intra-op synchronisation, no spinning against the
        decoders); on a GPU the main session."""
        if self.on_gpu:
            return self.session
        with self._stream_lock:
            if self._stream is None:
                import onnxruntime as ort  # type: ignore[import-untyped]

                threads = max(1, (self.threads or cpu_threads()) // max(1, workers))
                options = self._options(ort, threads, spin=threads > 1)
                stream = ort.InferenceSession(self._path, options, providers=[CPU])
                shape = [1, *self.shape[1:]]
                dtype = np.float32 if self.preprocess or self._input_is_float() else np.uint8
                stream.run(self.output_names, {self.input_name: np.zeros(shape, dtype)})
                self._stream = stream
            return self._stream

    def _report(self) -> None:
        if self.providers.warning:
            log.warning("model %s: %s", self.name, self.providers.warning)
        elif self.providers.note:
            log.info("model %s: %s", self.name, self.providers.note)
        else:
            log.info("model %s: running on %s", self.name, self.providers.primary)

    def warm_up(self, runs: int = 2) -> float:
        """Run zeros through the model (full batch) so the first frame is not slow; ms taken."""
        start = time.perf_counter()
        shape = [self.batch, *self.shape[1:]]
        dtype = np.float32 if self.preprocess or self._input_is_float() else np.uint8
        for _ in range(runs):
            self.run({self.input_name: np.zeros(shape, dtype)}, record=False)
        return (time.perf_counter() - start) * 1000

    def _input_is_float(self) -> bool:
        return "float" in self.session.get_inputs()[0].type

    def run(self, feeds: dict[str, Any], record: bool = True, session: Any = None) -> list[Any]:
        """Raw outputs for raw inputs (what ``panoramasdk.node.call`` returns)."""
        feeds = self._typed(feeds)
        start = time.perf_counter()
        if self.on_gpu:
            outputs = self._run_bound(feeds)
        else:
            outputs = (session or self.session).run(self.output_names, feeds)
        if record:
            self.timing.add((time.perf_counter() - start) * 1000)
        return list(outputs)

    def _typed(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """Inputs as contiguous arrays of the model's types (no copy when they already are).

        AWS's SDK simulator (DLR) converted whatever it was given, so Panorama
        code often passes float64 (``image / 255.0``), views or nested lists.
        """
        typed = {}
        for name, value in feeds.items():
            dtype = self.input_types.get(name)
            typed[name] = value if dtype is None else np.ascontiguousarray(value, dtype=dtype)
        return typed

    def _run_bound(self, feeds: dict[str, Any]) -> list[Any]:
        """CUDA/TensorRT: bind host inputs once (one copy to the device), outputs back to host."""
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in self.output_names:
            binding.bind_output(name)
        self.session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())

    def prepare(self, image: Any) -> tuple[Any, Geometry]:
        """Preprocess one BGR frame for this model (tensor without the batch axis)."""
        if self.preprocess is None:
            raise ValueError(f"model {self.name} has no onnx.preprocess section in its descriptor")
        return self.preprocess.apply(image)

    def infer(self, prepared: Sequence[tuple[Any, Geometry]], session: Any = None) -> list[Any]:
        """Decoded results for preprocessed frames, batched up to the model's batch size."""
        results: list[Any] = []
        step = max(1, self.batch)
        for start in range(0, len(prepared), step):
            chunk = prepared[start : start + step]
            batch = (
                np.stack([tensor for tensor, _ in chunk]) if len(chunk) > 1 else chunk[0][0][None]
            )
            outputs = self.run({self.input_name: batch}, session=session)
            results.extend(
                self.decode(outputs, i, geometry, self.decoder_config)
                for i, (_, geometry) in enumerate(chunk)
            )
        return results


SessionFactory = Callable[[str, Path, dict[str, Any]], ModelSession]
