"""Command-line parsing: env fallbacks, precedence, usage errors (exit 2), output naming."""

from __future__ import annotations

from pathlib import Path

import pytest

from distgray.cli import master as cli

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "test_images" / "sample_4k.jpg"


def test_master_env_fallbacks_and_flag_precedence() -> None:
    env = {"MASTER_HOST": "127.0.0.1", "MASTER_PORT": "6000", "NUM_WORKERS": "3", "DISTGRAY_TOKEN": "tok"}
    args = cli.build_master_parser(env).parse_args(["--image", "x.jpg"])
    assert (args.host, args.port, args.local_workers, args.token) == ("127.0.0.1", 6000, 3, "tok")
    args = cli.build_master_parser(env).parse_args(["--image", "x.jpg", "--port", "7000", "--local-workers", "0"])
    assert (args.port, args.local_workers) == (7000, 0)


def test_master_defaults() -> None:
    args = cli.build_master_parser({}).parse_args(["--image", "x.jpg"])
    assert (args.host, args.port, args.local_workers, args.min_workers, args.token) == ("0.0.0.0", 5003, 0, 1, None)
    assert (args.dashboard_host, args.dashboard_port, args.no_dashboard) == ("127.0.0.1", 5006, False)


def test_status_page_port_from_flask_port() -> None:
    assert cli.build_master_parser({"FLASK_PORT": "8080"}).parse_args([]).dashboard_port == 8080
    args = cli.build_master_parser({"FLASK_PORT": "8080"}).parse_args(["--dashboard-port", "0"])
    assert args.dashboard_port == 0


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--output", "x.png"], {}),  # serve mode has no single output
        (["--no-dashboard"], {}),  # serve mode is used through the page
        (["--image", "x.jpg"], {"FLASK_PORT": "web"}),
        (["--image", "x.jpg", "--dashboard-port", "65536"], {}),
        (["--image", "x.jpg", "--port", "70000"], {}),
        (["--image", "x.jpg", "--local-workers", "-1"], {}),
        (["--image", "x.jpg", "--quality", "0"], {}),
        (["--image", "x.jpg"], {"MASTER_PORT": "notaport"}),
        (["--image", "x.jpg"], {"NUM_WORKERS": "many"}),
        (["--image", "x.jpg", "--format", "nope"], {}),
        (["--image", "x.unknownext"], {}),
        (["--image", str(PHOTO), "--output", str(PHOTO)], {}),
        (["--image", "x.jpg", "--heartbeat", "5", "--heartbeat-timeout", "1"], {}),
    ],
)
def test_usage_errors_exit_2(argv: list[str], env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.master_main(argv, env)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_output_names(tmp_path: Path) -> None:
    parse = cli.build_master_parser({}).parse_args
    out, fmt = cli._resolve_output(parse(["--image", "in/photo.jpg"]))
    assert (out, fmt) == (Path("results/photo_gray.jpg"), "JPEG")
    out, fmt = cli._resolve_output(parse(["--image", "in/photo.jpg", "--format", "png"]))
    assert (out, fmt) == (Path("results/photo_gray.png"), "PNG")
    out, fmt = cli._resolve_output(parse(["--image", "a.png", "--output", str(tmp_path / "b.tif")]))
    assert (out, fmt) == (tmp_path / "b.tif", "TIFF")


def test_worker_env_fallbacks() -> None:
    env = {"MASTER_HOST": "10.0.0.5", "MASTER_PORT": "5100", "DISTGRAY_TOKEN": "t", "DISTGRAY_WORKER_ID": "w9"}
    args = cli.build_worker_parser(env).parse_args([])
    assert (args.host, args.port, args.token, args.id) == ("10.0.0.5", 5100, "t", "w9")
    args = cli.build_worker_parser({}).parse_args([])
    assert (args.host, args.port, args.token) == ("127.0.0.1", 5003, None)


def test_missing_image_is_a_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = cli.master_main(["--image", str(tmp_path / "missing.jpg"), "--port", "0"], {})
    err = capsys.readouterr().err
    assert code == 1
    assert "no such file" in err and "Traceback" not in err
    assert not list(Path("results").glob("missing_gray*"))
