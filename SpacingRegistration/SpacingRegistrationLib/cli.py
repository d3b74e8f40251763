"""Command line: ``spacingreg register | grid | study | report | demo | accuracy``. User mistakes give one line and exit status 2."""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import os
import signal
import sys
import threading
from pathlib import Path

import SimpleITK as sitk

from . import result_page, sample_data
from .describe import describe_grid, describe_result
from .grid import grid_geometry, initial_bspline
from .images import InputImageError, check_image, read_image
from .registration import RegistrationFailedError, RegistrationResult, run
from .report import write_report
from .resources import ResourceError
from .safe_writes import write_transform
from .settings import GRID_FIELDS, RegistrationSettings, SettingsError, field_info, from_dict, to_dict
from .study_runner import EXECUTORS, run_study
from .study_spec import StudySpec, spec_from_dict
from .study_store import StudyFolderError, open_study
from .transform_files import read_bspline
from .variability import analyse


class OutputFolderError(ValueError):
    """Results cannot be written to the output folder; the message names it and the reason."""


#: Errors a user fixes: one line and exit status 2. OSError covers a folder or disk that fails while writing.
USER_ERRORS = (SettingsError, InputImageError, StudyFolderError, ResourceError, OutputFolderError, OSError,
               RegistrationFailedError)
_NESTED = ("lbfgs2", "lbfgsb", "gradient_descent")
TRUTH_HELP = ("known deformation (fixed to moving points, the error is measured against it): a transform file or "
              "a displacement image in LPS mm")


def _parse_optional(kind):
    def parse(text: str):
        return None if text.lower() == "none" else kind(text)
    parse.__name__ = kind.__name__
    return parse


def _help(dest: str, default) -> str:
    """An option's help from the settings field's metadata (settings.setting): label, unit, choices, default."""
    info = field_info(dest)
    unit = f" ({info['unit']})" if info["unit"] else ""
    choices = f": {', '.join(info['choices'])}" if "choices" in info else ""
    return f"{info['label']}{unit}{choices} (default {default})".replace("%", "%%")  # argparse formats help with %


def _add_field(group, flag: str, dest: str, annotation: str, default):
    """One option per settings field; its type comes from the dataclass annotation, its help from the metadata."""
    if annotation == "bool":
        group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None,
                           help=_help(dest, default))
    elif annotation.startswith("tuple") and "..." in annotation:  # one value per pyramid level
        kind = float if "float" in annotation else int
        group.add_argument(flag, dest=dest, type=kind, nargs="+", metavar="LEVEL", help=_help(dest, list(default)))
    elif annotation.startswith("tuple"):
        group.add_argument(flag, dest=dest, type=int, nargs=3, metavar=("X", "Y", "Z"),
                           help=_help(dest, list(default)))
    else:
        kind = {"int": int, "float": float, "str": str}[annotation.split(" |")[0]]
        parse = _parse_optional(kind) if "None" in annotation else kind
        group.add_argument(flag, dest=dest, type=parse, help=_help(dest, default))


def add_settings_arguments(parser: argparse.ArgumentParser):
    """Every registration setting as an option, plus ``--settings FILE.json`` for a whole set."""
    group = parser.add_argument_group("registration settings (defaults reproduce the reported set-up)")
    group.add_argument("--settings", type=Path, help="JSON file of settings; options below override it")
    defaults = RegistrationSettings()
    for f in dataclasses.fields(RegistrationSettings):
        if f.name in _NESTED:
            nested = getattr(defaults, f.name)
            for g in dataclasses.fields(nested):
                _add_field(group, f"--{f.name}-{g.name}".replace("_", "-"), f"{f.name}.{g.name}", g.type,
                           getattr(nested, g.name))
        else:
            _add_field(group, f"--{f.name}".replace("_", "-"), f.name, f.type, getattr(defaults, f.name))


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SettingsError(f"{what} file {path} is not valid JSON ({error})") from None
    if not isinstance(values, dict):
        raise SettingsError(f"{what} file {path} must hold a JSON object of name: value pairs, got a "
                            f"{type(values).__name__}")
    return values


def _apply_setting_options(arguments: argparse.Namespace, values: dict) -> dict:
    """``values`` (a settings dictionary) with the setting options given on the command line applied."""
    values = {key: dict(value) if isinstance(value, dict) else value for key, value in values.items()}
    for dest, value in vars(arguments).items():
        if value is None or dest.split(".")[0] not in _known_fields():
            continue
        if "." in dest:
            outer, inner = dest.split(".")
            values.setdefault(outer, {})[inner] = value
        else:
            values[dest] = list(value) if isinstance(value, list) else value
    return values


def settings_from_arguments(arguments: argparse.Namespace) -> RegistrationSettings:
    """Settings file (if any) overridden by the options given."""
    values = _read_json(arguments.settings, "settings") if arguments.settings is not None else {}
    return from_dict(_apply_setting_options(arguments, values))


def _known_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(RegistrationSettings)}


def write_result(result: RegistrationResult, folder: Path, fixed: sitk.Image | None = None,
                 mask=None) -> dict[str, Path]:
    """transform.tfm, result.json (every number of the summary), trace.csv (one row per iteration) and, given the
    ``fixed`` image (and the ``mask`` the run used, if any), result.html (result_page.py: the summary, the
    displacement and Jacobian maps over the fixed image, the metric trace). With an initial transform,
    transform.tfm is the whole mapping (a CompositeTransform [initial, bspline]) and bspline.tfm the optimised
    BSpline alone.

    The page is made first; then all files are written under temporary names, checked, and renamed only when all
    are whole: a full disk or a folder that refuses writes raises :class:`OutputFolderError` and leaves the
    folder's earlier files as they were.
    """
    paths = {"transform": folder / "transform.tfm", "summary": folder / "result.json", "trace": folder / "trace.csv"}
    if result.initial_transform is not None:
        paths["bspline"] = folder / "bspline.tfm"
    page = None if fixed is None else result_page.page_html(result, fixed, mask)
    if page is not None:
        paths["page"] = folder / result_page.PAGE_NAME
    temporary = {key: path.with_name(f".{path.stem}.part{path.suffix}") for key, path in paths.items()}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_transform(result.mapping, temporary["transform"])
        if "bspline" in paths:
            write_transform(result.transform, temporary["bspline"])
        _write_whole(temporary["summary"], json.dumps(result.summary(), indent=2, default=float))
        if page is not None:
            _write_whole(temporary["page"], page)
        with temporary["trace"].open("w", newline="") as stream:
            names = [f.name for f in dataclasses.fields(result.trace[0])] if result.trace else ["event_index"]
            writer = csv.DictWriter(stream, fieldnames=names)
            writer.writeheader()
            writer.writerows(dataclasses.asdict(record) for record in result.trace)
            stream.flush()
            os.fsync(stream.fileno())
        for key, path in paths.items():
            os.replace(temporary[key], path)
    except OSError as error:
        for path in temporary.values():
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        reason = error.strerror or str(error)
        raise OutputFolderError(f"cannot write the results to {folder}: {reason}; files already there are unchanged") from None
    return paths


def _write_whole(path: Path, text: str):
    """``text`` into ``path``, on the disk before the rename that makes it visible."""
    with path.open("w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())


def _print_progress(record):
    print(f"\r  iteration {record.event_index + 1} (run {record.lbfgs_run + 1}, metric {record.metric:.6g})",
          end="", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _cancel_on_interrupt():
    """Ctrl-C cancels the running registration (which then returns a partial, marked result)."""
    event = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: event.set())
    try:
        yield event
    finally:
        signal.signal(signal.SIGINT, previous)


def _register_and_report(fixed, moving, settings, output: Path | None, quiet: bool = False, truth=None,
                         mask=None, initial_transform=None) -> int:
    with _cancel_on_interrupt() as cancel:
        result = run(fixed, moving, settings, progress=None if quiet else _print_progress, cancel=cancel,
                     truth=truth, mask=mask, initial_transform=initial_transform)
    if not quiet:
        print(file=sys.stderr)
    print(describe_result(result))
    if output is not None:
        paths = write_result(result, output, fixed, mask)
        print(f"Wrote {', '.join(str(p) for p in paths.values())}")
    return 130 if result.cancelled else 0


def check_output_folder(folder: Path | None):
    """Refuse, before any work, an output folder that cannot be created or written to."""
    if folder is None:
        return
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"output folder {folder} cannot be created: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder {folder} is not writable: no write permission on {existing}")


def command_register(arguments) -> int:
    check_output_folder(arguments.output)
    settings = settings_from_arguments(arguments)
    fixed = read_image(arguments.fixed, "fixed image")
    moving = read_image(arguments.moving, "moving image")
    return _register_and_report(fixed, moving, settings, arguments.output, arguments.quiet, arguments.truth,
                                arguments.mask, arguments.initial_transform)


def command_grid(arguments) -> int:
    image = check_image(read_image(arguments.image, "image"))
    if arguments.transform is not None:
        transform = read_bspline(arguments.transform)
    else:
        settings = from_dict({name: value for name in GRID_FIELDS if (value := getattr(arguments, name)) is not None})
        transform = initial_bspline(image, settings)
    geometry = grid_geometry(transform, image)
    print(describe_grid(geometry))
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(geometry.summary(), indent=2))
    return 0


def _print_study_progress(done: int, total: int, row: dict):
    filled = int(30 * done / total)
    print(f"\r  [{'#' * filled}{'.' * (30 - filled)}] {done}/{total} runs ({row['run_id']})",
          end="", file=sys.stderr, flush=True)


def study_spec_from_arguments(arguments) -> StudySpec:
    """Study file (if any), then a settings file, then the options given, each overriding the one before."""
    values = _read_json(arguments.spec, "study") if arguments.spec is not None else {}
    for name in ("spacings", "repeats", "seeds", "seed_policy", "modes", "reference_spacing"):
        value = getattr(arguments, name)
        if value is not None:
            values[name] = value
    settings = values.get("settings", {})
    if arguments.settings is not None:
        settings = {**settings, **_read_json(arguments.settings, "settings")}
    values["settings"] = to_dict(from_dict(_apply_setting_options(arguments, settings)))
    return spec_from_dict(values)


def _run_and_report(spec: StudySpec, fixed, moving, output: Path, executor: str, workers, scheduler,
                    truth=None, mask=None, initial_transform=None) -> int:
    with _cancel_on_interrupt() as cancel:
        outcome = run_study(spec, fixed, moving, output, executor=executor, workers=workers, scheduler=scheduler,
                            progress=_print_study_progress, cancel=cancel, truth=truth, mask=mask,
                            initial_transform=initial_transform)
    print(file=sys.stderr)
    store = outcome.store
    print(f"{len(outcome.completed)} run(s) done now, {len(outcome.skipped)} already finished, "
          f"{len(store.pending())} pending" + (f", {store.dropped_lines} damaged row(s) dropped and redone"
                                               if store.dropped_lines else ""))
    for run_id, reason in outcome.failed.items():
        print(f"  FAILED {run_id}: {reason}")
    if store.rows:
        _write_study_report(store, output / "report")
    if outcome.cancelled:
        print("Cancelled: every finished run is kept; run the same command again to resume.")
        return 130
    return 0 if not outcome.failed else 1


def _write_study_report(store, folder: Path, truth=None):
    analysis = analyse(store, output=folder / "maps", mask=store.mask_array(), truth=truth)
    paths = write_report(store, analysis, folder)
    print("Diagnosis:")
    for statement in analysis.statements:
        print(f"  - {statement['text']}")
    if not analysis.statements:
        print("  - No finding: no spacing, thread or never-moved effect to report; see the report's tables.")
    if analysis.truth:
        from .advice import from_study

        for recommendation in from_study(analysis):
            print(f"  - advice ({recommendation.kind}): {recommendation.text}")
    print(f"Report: {paths['html']} (numbers in {paths['json'].name}, {paths['runs_csv'].name}, "
          f"{paths['groups_csv'].name})")


def command_study(arguments) -> int:
    spec = study_spec_from_arguments(arguments)
    return _run_and_report(spec, arguments.fixed, arguments.moving, arguments.output, arguments.executor,
                           arguments.workers, arguments.scheduler, arguments.truth, arguments.mask,
                           arguments.initial_transform)


def command_report(arguments) -> int:
    store = open_study(arguments.study)
    if not store.rows:
        raise StudyFolderError(f"{arguments.study} has no finished run yet")
    _write_study_report(store, arguments.output or arguments.study / "report", arguments.truth)
    return 0


def command_demo(arguments) -> int:
    paths = sample_data.fetch_mni152()
    pair = sample_data.make_pet_like_pair(paths["gm"], paths["wm"], voxel_size_mm=arguments.voxel_size)
    data = sample_data.write_pair(pair, arguments.output / "data")
    print(f"{pair.description}\nWrote the pair to {data['fixed'].parent}")
    if arguments.scales_estimator is None:  # the study runs the fast equivalent unless told otherwise
        arguments.scales_estimator = "physical_shift_fast"
    spec = study_spec_from_arguments(arguments)
    print(f"Study: spacings {list(spec.spacings)} x {spec.repeats} repeats x modes {list(spec.modes)} "
          f"= {len(spec.runs())} registrations with the reported set-up"
          + (" (its fast equivalent, scales_estimator='physical_shift_fast')"
             if spec.settings.scales_estimator == "physical_shift_fast" else ""))
    beside = _ReportedBesideFast(data, spec) if spec.settings.scales_estimator == "physical_shift_fast" else None
    try:
        status = _run_and_report(spec, data["fixed"], data["moving"], arguments.output / "study", arguments.executor,
                                 arguments.workers, arguments.scheduler, truth=data["displacement"])
        if status == 0 and beside is not None:
            beside.report(arguments.output / "fast_equivalent.json")
    finally:
        if beside is not None:
            beside.close()
    return status


def _register_summary(fixed_path: str, moving_path: str, truth_path: str, values: dict) -> dict:
    """One registration in a worker process: its summary and its transform's parameters."""
    result = run(read_image(fixed_path), read_image(moving_path), from_dict(values), truth=truth_path)
    return {"summary": result.summary(), "parameters": list(result.transform.GetParameters()),
            "fixed_parameters": list(result.transform.GetFixedParameters())}


class _ReportedBesideFast:
    """The reported set-up (physical_shift) and its fast equivalent side by side, in reproducible mode at the
    study's reference spacing: started in a background process before the study (the reported set-up is the
    longest run of the demo), reported after it with the error against the known deformation, the times and
    how far apart the two transforms are."""

    CONFIGURATIONS = {"reported set-up": "physical_shift", "fast equivalent": "physical_shift_fast"}

    def __init__(self, data: dict, spec: StudySpec):
        import multiprocessing

        self.data, self.spec = data, spec
        self.settings = {name: spec.settings.replace(scales_estimator=estimator, spacing_override=spec.reference,
                                                     normalised_units=False, reproducible=True,
                                                     number_of_work_units=None)
                         for name, estimator in self.CONFIGURATIONS.items()}
        self.pool = multiprocessing.get_context("spawn").Pool(1)
        self.pending = {name: self.pool.apply_async(_register_summary, (str(data["fixed"]), str(data["moving"]),
                                                                         str(data["displacement"]), to_dict(values)))
                        for name, values in self.settings.items()}

    def report(self, output: Path):
        import numpy as np

        from .displacement import displacement_array, to_voxel_units
        from .images import with_spacing

        print(f"Reported set-up beside its fast equivalent (reproducible, spacing {self.spec.reference:g} mm):",
              flush=True)
        outcomes = {name: pending.get() for name, pending in self.pending.items()}
        fixed = with_spacing(read_image(str(self.data["fixed"])), self.spec.reference)
        fields = {}
        for name, outcome in outcomes.items():
            transform = sitk.BSplineTransform(fixed.GetDimension())
            transform.SetFixedParameters(outcome["fixed_parameters"])
            transform.SetParameters(outcome["parameters"])
            fields[name] = to_voxel_units(displacement_array(transform, fixed), fixed)
            summary = outcome["summary"]
            error = (summary.get("error") or {}).get("recovered") or {}
            print(f"  {name:<16} Execute {summary['timing']['total_s']:7.2f} s, moved {summary['moved']}, "
                  f"iterations {summary['iterations_per_run']}, mean error against the known deformation "
                  + (f"{error['mean_voxels']:.4f} voxels" if "mean_voxels" in error else "n/a"))
        parameters = [np.asarray(outcome["parameters"]) for outcome in outcomes.values()]
        identical = bool(np.array_equal(*parameters))
        difference = float(np.linalg.norm(fields["reported set-up"] - fields["fast equivalent"], axis=-1).max())
        if identical:
            verdict = "bit-identical transforms"
        elif difference < 1e-6:
            verdict = f"the same registration up to rounding (largest field difference {difference:.3g} voxels)"
        else:
            verdict = (f"different registrations (largest field difference {difference:.3g} voxels): ITK's path is as "
                       "sensitive to the reported estimator's rounding-level scale and to dividing by it as to "
                       "thread order, so compare the two over sampling seeds "
                       "(Testing/benchmarks/bench_fast_equivalent.py), not by one run")
        print(f"  {verdict}")
        output.write_text(json.dumps({"settings": {name: to_dict(values) for name, values in self.settings.items()},
                                      "results": {name: outcome["summary"] for name, outcome in outcomes.items()},
                                      "bit_identical": identical, "largest_field_difference_voxels": difference,
                                      "verdict": verdict}, indent=2, default=float))
        print(f"Wrote {output}")

    def close(self):
        """Stop the background process (at once if the study was cancelled or failed)."""
        self.pool.terminate()
        self.pool.join()


def command_accuracy(arguments) -> int:
    from . import accuracy

    check_output_folder(arguments.output)
    settings = settings_from_arguments(arguments)
    options = accuracy.CheckOptions(amplitude_voxels=arguments.amplitude_voxels, deformation_seed=arguments.deformation_seed,
                                    seeds=arguments.seeds, noise_percent=arguments.noise_percent,
                                    intensity_gamma=arguments.intensity_gamma)
    fixed = read_image(arguments.fixed, "fixed image")

    def progress(candidate: str, done: int, total: int, row: dict):
        print(f"\r  {candidate}: {done}/{total} seeds", end="", file=sys.stderr, flush=True)

    with _cancel_on_interrupt() as cancel:
        outcome = accuracy.check_accuracy(fixed, arguments.output, settings, candidates=arguments.candidates,
                                          options=options, mask=arguments.mask, executor=arguments.executor,
                                          workers=arguments.workers, scheduler=arguments.scheduler,
                                          progress=progress, cancel=cancel)
    print(file=sys.stderr)
    for note in outcome.notes:
        print(f"Note: {note}")
    print(f"{len(outcome.completed)} run(s) done now, {len(outcome.skipped)} already finished")
    for row in outcome.ranking:
        print(f"  {row['rank']:>2}. {row['candidate']:<28} mean error {row['error_mean_voxels']:.4g} voxels "
              f"(worst seed {row['error_worst_voxels']:.4g}, identity {row['identity_error_mean_voxels']:.4g}), "
              f"{row['time_mean_s']:.3g} s ({row['cpu_mean_s']:.3g} s CPU) per run" + (" [tied with the best]" if row["tied_with_best"] and row["rank"] > 1
                                                        else ""))
    print("Advice:")
    for recommendation in outcome.recommendations:
        print(f"  - {recommendation.kind}: {recommendation.text}")
    print(f"Ranking: {outcome.paths['html']} (numbers in {outcome.paths['json'].name}, {outcome.paths['csv'].name})")
    if outcome.cancelled:
        print("Cancelled: every finished run is kept; run the same command again to resume.")
        return 130
    return 0


def command_job(arguments) -> int:
    from .job_runner import run_job

    return run_job(arguments.folder)


def add_study_arguments(parser: argparse.ArgumentParser, spacings=None, repeats=None, modes=None):
    group = parser.add_argument_group("study")
    group.add_argument("--spec", type=Path, help="JSON study file (StudySpec.to_dict form); options override it")
    group.add_argument("--spacings", type=float, nargs="+", default=spacings, help="spacings to register at (mm)")
    group.add_argument("--repeats", type=int, default=repeats, help="runs per spacing and mode")
    group.add_argument("--seeds", type=int, nargs="+", help="one sampling seed per repeat")
    group.add_argument("--seed-policy", choices=("fixed", "per_repeat"),
                       help="without --seeds: the same seed for every repeat, or seed + repeat")
    group.add_argument("--modes", nargs="+", default=modes,
                       help="units-threads pairs: native|normalised - default|reproducible")
    group.add_argument("--reference-spacing", type=float, help="spacing the others are compared with")
    group.add_argument("--executor", choices=EXECUTORS, default="pool")
    group.add_argument("--workers", type=int, help="pool processes (default: one per core)")
    group.add_argument("--scheduler", help="Dask distributed scheduler address (with --executor dask)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spacingreg", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    register = commands.add_parser("register", help="one BSpline registration with its diagnosis")
    register.add_argument("--fixed", type=Path, required=True, help="fixed image file")
    register.add_argument("--moving", type=Path, required=True, help="moving image file")
    register.add_argument("--output", type=Path, help="folder for transform.tfm, result.json, trace.csv and "
                          "result.html (the result page: summary, displacement and Jacobian maps over the fixed "
                          "image, metric trace)")
    register.add_argument("--quiet", action="store_true", help="no progress line")
    register.add_argument("--truth", type=Path, help=TRUTH_HELP)
    register.add_argument("--mask", type=Path, help="fixed-image mask (non-zero = inside): the metric samples and the "
                          "statistics use its voxels only; another grid is resampled onto the fixed one (nearest)")
    register.add_argument("--initial-transform", type=Path, help="transform file (fixed to moving, e.g. a rigid or "
                          "affine General Registration result) composed before the BSpline; transform.tfm is then "
                          "the whole mapping and bspline.tfm the BSpline alone")
    add_settings_arguments(register)
    register.set_defaults(handler=command_register)

    grid = commands.add_parser("grid", help="control grid against an image: positions, counts, coverage")
    grid.add_argument("--image", type=Path, required=True, help="image file")
    given_by = grid.add_mutually_exclusive_group()
    given_by.add_argument("--mesh-size", type=int, nargs=3, metavar=("X", "Y", "Z"),
                          help="mesh size (intervals) (default [2, 2, 2])")
    given_by.add_argument("--grid-spacing-mm", type=float, help="control-point spacing in mm")
    given_by.add_argument("--grid-spacing-voxels", type=float, help="control-point spacing in voxels")
    given_by.add_argument("--transform", type=Path, help="existing BSpline transform file (instead of a grid)")
    grid.add_argument("--json", type=Path, help="write the numbers to this JSON file")
    grid.set_defaults(handler=command_grid)

    study = commands.add_parser("study", help="the registration at several spacings, repeated, in several modes")
    study.add_argument("--fixed", type=Path, required=True, help="fixed image file")
    study.add_argument("--moving", type=Path, required=True, help="moving image file")
    study.add_argument("--output", type=Path, required=True, help="study folder (resumed if it holds this study)")
    study.add_argument("--truth", type=Path, help=TRUTH_HELP + ", stored with the study")
    study.add_argument("--mask", type=Path, help="fixed-image mask for every run's metric and statistics, stored "
                       "with the study (a resume need not name it again)")
    study.add_argument("--initial-transform", type=Path, help="transform file (fixed to moving, e.g. a rigid or "
                       "affine result) composed before every run's BSpline, stored with the study (a resume need not "
                       "name it again); the error and displacement describe the whole mapping")
    add_study_arguments(study)
    add_settings_arguments(study)
    study.set_defaults(handler=command_study)

    report = commands.add_parser("report", help="analyse a study folder again and write its report")
    report.add_argument("--study", type=Path, required=True, help="study folder")
    report.add_argument("--output", type=Path, help="report folder (default: <study>/report)")
    report.add_argument("--truth", type=Path, help=TRUTH_HELP + " (default: the study's own, if any)")
    report.set_defaults(handler=command_report)

    demo = commands.add_parser("demo", help="a study on a PET-like pair made from the MNI152 template")
    demo.add_argument("--output", type=Path, default=Path("output/demo"))
    demo.add_argument("--voxel-size", type=float, default=4.0, help="voxel size of the generated pair in mm")
    add_study_arguments(demo, spacings=[1.0, 4.0, 10.0], repeats=2,
                        modes=["native-default", "normalised-reproducible"])
    add_settings_arguments(demo)
    demo.set_defaults(handler=command_demo)

    check = commands.add_parser("accuracy", help="how right is the registration on your image: candidates ranked "
                                "by their error against a known synthetic deformation of it")
    check.add_argument("--fixed", type=Path, required=True, help="your fixed image file")
    check.add_argument("--mask", type=Path, help="mask on the fixed grid: error figures inside it only")
    check.add_argument("--output", type=Path, required=True, help="check folder (resumed if it holds this check)")
    check.add_argument("--candidates", nargs="+", help="candidate names (default: all; 'yours' is always included): "
                       "yours normalised reproducible sampling-2.5 sampling-10 sampling-25 mesh-AxBxC "
                       "scales-physical_shift scales-physical_shift_fast scales-none, or sampling-<percent>, mesh-<x>x<y>x<z>, "
                       "iterations-<n>, scales-<estimator>")
    check.add_argument("--seeds", type=int, default=4, help="sampling seeds per candidate (default 4)")
    check.add_argument("--amplitude-voxels", type=float, default=3.0, help="largest synthetic displacement (voxels)")
    check.add_argument("--deformation-seed", type=int, default=0, help="seed of the synthetic deformation")
    check.add_argument("--noise-percent", type=float, default=0.0, help="Gaussian noise, %% of the intensity range")
    check.add_argument("--intensity-gamma", type=float, default=1.0, help="intensity change of the moving image")
    check.add_argument("--executor", choices=EXECUTORS, default="pool")
    check.add_argument("--workers", type=int, help="pool processes (default: one per core)")
    check.add_argument("--scheduler", help="Dask distributed scheduler address (with --executor dask)")
    add_settings_arguments(check)
    check.set_defaults(handler=command_accuracy)

    job = commands.add_parser("job", help="run a job folder written by the job controller (JSON-lines progress)")
    job.add_argument("folder", type=Path, help="job folder (job.json and the input images)")
    job.set_defaults(handler=command_job)
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    try:
        return arguments.handler(arguments)
    except USER_ERRORS as error:
        print(f"spacingreg {arguments.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spacingreg {arguments.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
