"""`fleet-runtime`: validate and run Panorama-compatible applications on ONNX Runtime.

    fleet-runtime validate APP [--override FILE] [--json]
    fleet-runtime run APP [--override FILE] [--camera NODE=URI]... [--duration S] [--http PORT]
    fleet-runtime providers [--json]
    fleet-runtime bench MODEL.onnx|APP [--frames N] [--json]
    fleet-runtime models fetch APP [--json]

Exit codes: 0 ok, 1 failed (one line on stderr says what, where, how to fix), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fleet_runtime import sdnotify
from fleet_runtime.durable import file_lock
from fleet_runtime.layout import Layout, StateFileError, atomic_write_json, read_json
from fleet_runtime.panoramasdk import console

log = logging.getLogger("fleet_runtime")


class CliError(Exception):
    """An expected failure: printed as one line, exit 1."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleet-runtime", description="Run Panorama-style vision applications on ONNX Runtime"
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser(
        "validate", help="check an application; every error with its file and JSON path"
    )
    _app_args(validate)
    validate.add_argument("--json", action="store_true")
    validate.set_defaults(handler=cmd_validate)

    run = sub.add_parser("run", help="run an application")
    _app_args(run)
    _source_args(run)
    run.add_argument(
        "--duration",
        type=_number(float, above=0),
        help="stop after S seconds (default: run until the streams end or SIGTERM)",
    )
    run.add_argument(
        "--http",
        type=_number(int, at_least=0, at_most=65535),
        metavar="PORT",
        help="serve MJPEG video, /metrics and /health on PORT (0: any free port)",
    )
    run.add_argument(
        "--http-host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)"
    )
    run.add_argument("--events", type=Path, help="append detections and events to this JSONL file")
    run.add_argument(
        "--record",
        type=Path,
        help="write the output video here ({camera} in the name: one file per camera)",
    )
    run.set_defaults(handler=cmd_run)

    providers = sub.add_parser(
        "providers", help="execution providers: available in this build, and what actually loads"
    )
    providers.add_argument("--json", action="store_true")
    providers.set_defaults(handler=cmd_providers)

    models = sub.add_parser(
        "models", help="model files: `models fetch APP` fetches or builds what APP needs"
    )
    models_sub = models.add_subparsers(dest="models_command", required=True)
    fetch = models_sub.add_parser(
        "fetch", help="put every model file the application needs in place (PyPI, or its"
        " build_model.py)"
    )
    fetch.add_argument("app", type=_existing, help="application directory")
    fetch.add_argument("--json", action="store_true")
    fetch.set_defaults(handler=cmd_models_fetch)

    bench = sub.add_parser(
        "bench", help="frames/s of a model (raw session loop) or of an application (whole pipeline)"
    )
    bench.add_argument(
        "target", type=_existing, help="a .onnx model or an application directory"
    )
    bench.add_argument("--frames", type=_number(int, at_least=1), default=200)
    bench.add_argument("--json", action="store_true")
    bench.add_argument("--override", type=Path)
    _source_args(bench)
    bench.set_defaults(handler=cmd_bench)
    return parser


def _version() -> str:
    """The same line as `fleet-agent --version`: this package ships both."""
    from fleet_runtime import __version__
    from fleet_runtime.agent.protocol import PROTOCOL

    return f"fleet-runtime {__version__} (agent protocol {PROTOCOL})"


def _existing(text: str) -> Path:
    """An argparse type: a path that exists; a typo is a usage error (exit 2), as in `fleet`."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist; check the path")
    return path


def _number(
    kind: Callable[[str], Any],
    *,
    at_least: float | None = None,
    at_most: float | None = None,
    above: float | None = None,
) -> Callable[[str], Any]:
    """An argparse type: ``kind`` within bounds, else a one-line usage error (exit 2)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            what = "whole number" if kind is int else "number"
            raise argparse.ArgumentTypeError(f"{text!r} is not a {what}") from None
        if at_least is not None and value < at_least:
            raise argparse.ArgumentTypeError(f"{text} is below {at_least:g}")
        if at_most is not None and value > at_most:
            raise argparse.ArgumentTypeError(f"{text} is above {at_most:g}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"{text} must be above {above:g}")
        return value

    return parse


def _app_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "app", type=_existing,
        help="application directory (graphs/<name>/graph.json, packages/)",
    )
    parser.add_argument(
        "--override", type=Path, help="override.json: bind cameras, override parameters"
    )
    parser.add_argument(
        "--max-cameras",
        type=_number(int, at_least=1),
        default=8,
        help="camera streams allowed per application (default 8)",
    )


def _source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--camera",
        action="append",
        default=[],
        metavar="NAME=URI",
        help="bind a camera (or camera node): rtsp://..., a video file, an image folder,"
        " synthetic:WxH@FPS",
    )
    parser.add_argument(
        "--cameras",
        type=Path,
        help="camera bindings JSON (default: FLEET_ROOT/etc/fleet/cameras.json)",
    )
    parser.add_argument(
        "--providers",
        help="execution providers in order of preference, e.g. cuda,cpu"
        " (default tensorrt,cuda,cpu)",
    )
    parser.add_argument(
        "--threads", type=_number(int, at_least=1), help="CPU intra-op threads (default: cores available)"
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="files: decode every frame as fast as possible, drop none",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args))
    except CliError as exc:
        print(f"fleet-runtime: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        print(
            f"fleet-runtime: {exc.name or exc} is missing: pip install 'edgefleet-runtime[vision]'",
            file=sys.stderr,
        )
        return 1


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from fleet_runtime.pipeline.fetch import fetch
    from fleet_runtime.pipeline.models import ModelError

    try:
        models = fetch(args.app)
    except ModelError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps({"models": [m.as_dict() for m in models]}, indent=1))
    for model in models if not args.json else []:
        print(f"{model.path}: {model.how}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from fleet_runtime.manifest import ManifestError, Problem, load_application

    warnings: list[Problem] = []
    try:
        app = load_application(args.app, args.override, args.max_cameras)
    except ManifestError as exc:
        problems = list(exc.problems)
    else:
        problems, warnings = _preflight(app)
        warnings = app.warnings + warnings
    if args.json:
        doc = {
            "ok": not problems,
            "problems": [p.__dict__ for p in problems],
            "warnings": [w.__dict__ for w in warnings],
        }
        print(json.dumps(doc, indent=1))
    else:
        for problem in problems:
            print(problem)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(
            f"{args.app}: {'valid' if not problems else f'{len(problems)} problem(s)'}",
            file=sys.stderr,
        )
    return 1 if problems else 0


def _load(args: argparse.Namespace) -> Any:
    from fleet_runtime.manifest import ManifestError, load_application

    try:
        return load_application(args.app, args.override, getattr(args, "max_cameras", 8))
    except ManifestError as exc:
        for problem in exc.problems[1:]:
            print(problem, file=sys.stderr)
        raise CliError(
            f"{exc}: fix it, then check with `fleet-runtime validate {args.app}`"
        ) from None


def _preflight(app: Any) -> tuple[list[Any], list[Any]]:
    """What the app's code needs that this machine lacks: (errors, warnings), one line each."""
    from fleet_runtime.pipeline.preflight import check

    try:
        from fleet_runtime.pipeline.inference import available_providers

        cuda = "CUDAExecutionProvider" in available_providers() and _loads(
            "CUDAExecutionProvider"
        )
    except ImportError:
        cuda = False
    return check(app, cuda)


def _ready(app: Any) -> None:
    """Refuse, before the first frame, an app whose code cannot run here; say why."""
    errors, warnings = _preflight(app)
    for warning in app.warnings + warnings:
        print(f"fleet-runtime: warning: {warning}", file=sys.stderr)
    for error in errors[:-1]:
        print(f"fleet-runtime: {error}", file=sys.stderr)
    if errors:
        raise CliError(str(errors[-1]))


def _cameras(args: argparse.Namespace, app: Any = None) -> dict[str, Any]:
    from fleet_runtime.pipeline.runner import load_cameras_file
    from fleet_runtime.pipeline.sources import SourceError, parse_source

    path = args.cameras or Layout.from_env().etc / "cameras.json"
    try:
        specs = load_cameras_file(path) if (args.cameras or path.is_file()) else {}
    except SourceError as exc:
        raise CliError(str(exc)) from None
    for name, node in (app.camera_nodes if app else {}).items():
        if "url" in node.defaults and name not in specs:  # a camera package's default stream
            try:
                specs[name] = parse_source(name, node.defaults["url"])
            except SourceError as exc:
                raise CliError(f"{exc} (the default streamUrl of camera node {name})") from None
            specs[name].username = node.defaults.get("username")
            specs[name].password = node.defaults.get("password")
    for binding in args.camera:
        name, sep, uri = binding.partition("=")
        if not sep:
            raise CliError(f"--camera {binding}: expected NAME=URI")
        try:
            specs[name] = parse_source(name, uri)
        except SourceError as exc:
            raise CliError(str(exc)) from None
    if args.offline:
        for spec in specs.values():
            spec.realtime, spec.drop, spec.loop = False, False, False
    return specs


def _options(args: argparse.Namespace, app: Any = None, **extra: Any) -> Any:
    from fleet_runtime.pipeline.runner import RunOptions

    providers = args.providers.split(",") if args.providers else None
    return RunOptions(
        cameras=_cameras(args, app), providers=providers, threads=args.threads, **extra
    )


def cmd_run(args: argparse.Namespace) -> int:
    from fleet_runtime.pipeline.models import ModelError
    from fleet_runtime.pipeline.outcome import failure, produced_by
    from fleet_runtime.pipeline.runner import Runner
    from fleet_runtime.pipeline.sources import SourceError

    app = _load(args)
    _ready(app)
    runner = Runner(
        app,
        _options(
            args,
            app,
            http_port=args.http,
            http_host=args.http_host,
            http_token=_http_token() if args.http is not None else None,
            events=args.events,
            record=args.record,
            stop_on_crash_loop=args.offline,
        ),
    )
    signal.signal(signal.SIGTERM, lambda *_: runner.stopping.set())
    out, err = _capture_console(app.name)
    try:
        runner.start()
    except (SourceError, ModelError, ValueError) as exc:
        runner.stop()
        console.release()
        raise CliError(str(exc)) from None
    registered = _register(app.name, runner.http.port if runner.http else None)
    if runner.http is not None:
        print(
            f"fleet-runtime: serving http://{args.http_host}:{runner.http.port}/"
            " (video, /metrics, /health)",
            file=err,
            flush=True,
        )
    dog = sdnotify.Watchdog.from_env()  # under fleet-runtime@.service (WatchdogSec=)
    sdnotify.notify("READY=1")
    try:
        runner.wait(args.duration, tick=None if dog is None else lambda: dog.kick(runner.snapshot))
    except KeyboardInterrupt:
        pass
    finally:
        sdnotify.notify("STOPPING=1")
        snap = runner.snapshot()
        runner.stop()
        if registered:
            _register(app.name, None)
    print(json.dumps(_summary(snap), indent=1), file=out)
    code = 0 if all(n["state"] != "failed" for n in snap["nodes"].values()) else 1
    reason = failure(snap, produced_by(runner))
    if reason:
        print(f"fleet-runtime: {reason}", file=err)
        code = 1
    # Everything is stopped, flushed and reported. A source still blocked inside
    # FFmpeg (a camera timing out) must not meet interpreter finalization, which
    # can crash in native code: leave without it.
    for stream in (sys.stdout, out, err):
        stream.flush()
    os._exit(code)


def _http_token() -> str | None:
    """The device's runtime token (made on first use), or None: POST /signal then refuses.

    Only on a device root, like the port registry: a run on a workstation must
    not write under /var/lib.
    """
    from fleet_runtime.http_token import ensure_token

    layout = Layout.from_env()
    try:
        if not layout.device_json.exists():
            raise FileNotFoundError(f"{layout.device_json} is missing, so this is no device root")
        return ensure_token(layout.runtime_token)
    except (OSError, ValueError) as exc:
        print(f"fleet-runtime: POST /signal is disabled ({exc}); set FLEET_ROOT to the "
              "device root", file=sys.stderr, flush=True)
        return None


def _capture_console(app: str) -> tuple[Any, Any]:
    """The app's print() output to its console log, not into the summary on stdout."""
    from fleet_runtime.panoramasdk.paths import app_dirs

    return console.capture(app_dirs(app)[0])


def _register(app: str, port: int | None) -> bool:
    """Record (or, with None, remove) this app's HTTP port in run/fleet/runtime.json, where
    ``fleet-agent health`` finds it. Only on a device root (etc/fleet/device.json exists)."""
    layout = Layout.from_env()
    if not layout.device_json.exists():
        return False
    layout.run.mkdir(parents=True, exist_ok=True)
    with file_lock(layout.run / "runtime.lock"):  # several apps may start or stop at once
        try:
            doc = read_json(layout.run / "runtime.json", default=None)
        except StateFileError:
            doc = None  # our own registry, damaged: the apps that run now register again
        apps = doc.get("apps") if isinstance(doc, dict) else None
        apps = dict(apps) if isinstance(apps, dict) else {}
        if port is None:
            apps.pop(app, None)
        else:
            apps[app] = {"http_port": port}
        atomic_write_json(layout.run / "runtime.json", {"apps": apps})
    return port is not None


def _summary(snap: dict[str, Any]) -> dict[str, Any]:
    from fleet_runtime.pipeline.metrics import notes as metrics_notes

    return {
        "frames_out": {n: c["frames_out"] for n, c in snap["cameras"].items()},
        "frames_dropped": {n: c["frames_dropped"] for n, c in snap["cameras"].items()},
        "providers": {n: m["providers"]["primary"] for n, m in snap["models"].items()},
        "inference_ms_p50": {n: m["p50"] for n, m in snap["models"].items()},
        "nodes": {n: s["state"] for n, s in snap["nodes"].items()},
        "notes": metrics_notes(snap),
    }


def cmd_providers(args: argparse.Namespace) -> int:
    from fleet_runtime.pipeline.inference import PREFERENCE, available_providers

    available = available_providers()
    loads = {name: _loads(name) if name in available else False for name in PREFERENCE}
    if args.json:
        print(json.dumps({"available": available, "loads": loads}, indent=1))
    else:
        for name in PREFERENCE:
            state = (
                "loads"
                if loads[name]
                else ("available but does not load" if name in available else "not in this build")
            )
            print(f"{name:28} {state}")
    return 0


def _loads(provider: str) -> bool:
    """Whether a session on ``provider`` really runs on it (a one-node model, built in memory)."""
    import onnxruntime as ort  # type: ignore[import-untyped]

    try:
        model = _identity_model()
    except ImportError:
        return provider == "CPUExecutionProvider"
    try:
        session = ort.InferenceSession(model, providers=[provider])
    except Exception:  # noqa: BLE001 - any failure means "does not load"
        return False
    return bool(session.get_providers()[0] == provider)


def _identity_model() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime we support
    return bytes(model.SerializeToString())


def cmd_bench(args: argparse.Namespace) -> int:
    out, err = sys.stdout, sys.stderr  # the app's own prints go to its console log
    result = _bench_model(args) if args.target.suffix == ".onnx" else _bench_app(args)
    reason = result.pop("failure", None)
    if args.json:
        print(json.dumps(result, indent=1), file=out)
    else:
        for key, value in result.items():
            print(f"{key:22} {value}", file=out)
    if reason:
        print(f"fleet-runtime: {reason}", file=err)
        return 1
    return 0


def _bench_model(args: argparse.Namespace) -> dict[str, Any]:
    """A raw ``session.run`` loop on one random tensor at the model's input shape."""
    import numpy as np

    from fleet_runtime.pipeline.inference import ModelSession

    session = ModelSession(
        args.target.stem,
        args.target,
        _probe_descriptor(args.target),
        _providers(args),
        args.threads,
    )
    feed = {session.input_name: np.random.default_rng(0).random(session.shape, np.float32)}
    session.warm_up()
    start = time.perf_counter()
    for _ in range(args.frames):
        session.run(feed)
    elapsed = time.perf_counter() - start
    return {
        "target": str(args.target),
        "provider": session.providers.primary,
        "fallback": session.providers.fallback,
        "frames": args.frames,
        "fps": round(args.frames / elapsed, 2),
        "inference_ms_p50": round(session.timing.quantile(0.5), 2),
        "inference_ms_p95": round(session.timing.quantile(0.95), 2),
    }


def _probe_descriptor(path: Path) -> dict[str, Any]:
    import onnxruntime as ort  # type: ignore[import-untyped]

    try:
        first = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0]
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise CliError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0][:200]}); "
                       "check the file or fetch it again") from None
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in first.shape]
    return {"inputs": [{"name": first.name, "shape": shape}], "onnx": {"asset": path.name}}


def _providers(args: argparse.Namespace) -> list[str] | None:
    return args.providers.split(",") if args.providers else None


def _bench_app(args: argparse.Namespace) -> dict[str, Any]:
    """The whole application on its cameras (synthetic if none bound), offline, N frames each."""
    from fleet_runtime.pipeline.outcome import failure, produced_by
    from fleet_runtime.pipeline.runner import Runner
    from fleet_runtime.pipeline.sources import SourceSpec

    args.offline, args.app = True, args.target
    app = _load(args)
    _ready(app)
    options = _options(args, app, stop_on_crash_loop=True)
    for node in app.camera_nodes.values():
        for camera in node.cameras:
            options.cameras.setdefault(camera, SourceSpec(camera, "synthetic", size=(640, 360)))
    for spec in options.cameras.values():
        spec.max_frames = args.frames
        spec.realtime, spec.drop, spec.loop = False, False, False
    runner = Runner(app, options)
    _capture_console(app.name)
    try:
        snap = runner.run()  # the clock starts once models are loaded and warm
    finally:
        console.release()
    elapsed = snap["seconds"]
    frames = sum(c["frames_out"] for c in snap["cameras"].values())
    return {
        "target": str(args.target),
        "cameras": len(snap["cameras"]),
        "frames": frames,
        "fps": round(frames / elapsed, 2),
        **_summary(snap),
        "failure": failure(snap, produced_by(runner)),
    }


if __name__ == "__main__":
    sys.exit(main())
