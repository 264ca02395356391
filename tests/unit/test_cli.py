"""Command-line parsing: env fallbacks, precedence, usage errors (exit 2), output naming."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from distgray.cli import master as cli
from distgray.cli.common import read_token

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "test_images" / "sample_4k.jpg"


def test_master_env_fallbacks_and_flag_precedence() -> None:
    env = {"MASTER_HOST": "127.0.0.1", "MASTER_PORT": "6000", "NUM_WORKERS": "3", "DISTGRAY_TOKEN": "tok"}
    args = cli.build_master_parser(env).parse_args(["--image", "x.jpg"])
    assert (args.host, args.port, args.local_workers) == ("127.0.0.1", 6000, 3)
    assert read_token(args.token, args.token_file, env) == "tok"
    assert read_token("flag", None, env) == "flag"
    args = cli.build_master_parser(env).parse_args(["--image", "x.jpg", "--port", "7000", "--local-workers", "0"])
    assert (args.port, args.local_workers) == (7000, 0)


def test_master_defaults() -> None:
    args = cli.build_master_parser({}).parse_args(["--image", "x.jpg"])
    assert (args.host, args.port, args.local_workers, args.min_workers, args.token) == (None, 5003, 0, 1, None)
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
        (["--image", "x.jpg", "--token", "a"], {}),  # a weak token is refused unless asked for
        (["--image", "x.jpg"], {"DISTGRAY_TOKEN": "short"}),
        (["--image", "x.jpg", "--token-file", "/nonexistent/token"], {}),
        (["--image", "x.jpg", "--tls-key", "k.pem"], {}),
        (["--image", "x.jpg", "--no-tls", "--tls-cert", "c.pem"], {}),
        (["--image", "x.jpg", "--handshake-timeout", "0"], {}),
        (["--input-dir", ".", "--task-index", "1"], {}),  # an index without a count
        (["--input-dir", ".", "--task-count", "2"], {}),  # a count without an index
        (["--input-dir", ".", "--task-index", "2", "--task-count", "2"], {}),  # 0-based: 0 or 1
        (["--input-dir", "."], {"CLOUD_RUN_TASK_INDEX": "3", "CLOUD_RUN_TASK_COUNT": "3"}),
        (["--input-dir", "."], {"JOB_COMPLETION_INDEX": "0"}),  # Kubernetes: --task-count is needed
        (["--image", "x.jpg", "--task-index", "0", "--task-count", "2"], {}),  # one image is not split
    ],
)
def test_usage_errors_exit_2(argv: list[str], env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.master_main(argv, env)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_output_names(tmp_path: Path) -> None:
    def parse(argv: list[str]) -> argparse.Namespace:  # as master_main does: parsed, then located
        args = cli.build_master_parser({}).parse_args(argv)
        cli._locate(args)
        return args

    out, fmt = cli._resolve_output(parse(["--image", "in/photo.jpg"]))
    assert (out, fmt) == (Path("results/photo_gray.jpg"), "JPEG")
    out, fmt = cli._resolve_output(parse(["--image", "in/photo.jpg", "--format", "png"]))
    assert (out, fmt) == (Path("results/photo_gray.png"), "PNG")
    out, fmt = cli._resolve_output(parse(["--image", "a.png", "--output", str(tmp_path / "b.tif")]))
    assert (out, fmt) == (tmp_path / "b.tif", "TIFF")


def test_worker_env_fallbacks() -> None:
    env = {"MASTER_HOST": "10.0.0.5", "MASTER_PORT": "5100", "DISTGRAY_TOKEN": "t", "DISTGRAY_WORKER_ID": "w9"}
    args = cli.build_worker_parser(env).parse_args([])
    assert (args.host, args.port, args.id) == ("10.0.0.5", 5100, "w9")
    assert read_token(args.token, args.token_file, env) == "t"
    args = cli.build_worker_parser({}).parse_args([])
    assert (args.host, args.port, args.token) == ("127.0.0.1", 5003, None)


def test_missing_image_is_a_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = cli.master_main(["--image", str(tmp_path / "missing.jpg"), "--port", "0"], {})
    err = capsys.readouterr().err
    assert code == 1
    assert "no such file" in err and "Traceback" not in err
    assert not list(Path("results").glob("missing_gray*"))


def test_token_from_a_file_and_its_precedence(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-the-file-0123456789\n")
    assert read_token(None, str(secret), {}) == "from-the-file-0123456789"
    assert read_token(None, None, {"DISTGRAY_TOKEN_FILE": str(secret)}) == "from-the-file-0123456789"
    assert read_token(None, None, {"DISTGRAY_TOKEN_FILE": str(secret), "DISTGRAY_TOKEN": "env"}) == "env"
    secret.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_token(None, str(secret), {})


def test_a_token_that_starts_with_a_dash_parses_as_the_printed_command_writes_it() -> None:
    token = "-NqQ3vV0aWx1eXpBQkNERUZH"
    args = cli.build_worker_parser({}).parse_args(["--token=" + token])
    assert args.token == token
    args = cli.build_master_parser({}).parse_args(["--image", "x.jpg", "--token=" + token])
    assert args.token == token


def test_generated_tokens_are_long_and_never_start_with_a_dash() -> None:
    from distgray.config import MIN_TOKEN_CHARS, new_token

    tokens = [new_token() for _ in range(2000)]
    assert all(len(t) >= MIN_TOKEN_CHARS and not t.startswith("-") for t in tokens)


def test_a_weak_token_is_accepted_when_asked_for(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = cli.master_main(
        ["--image", str(tmp_path / "missing.jpg"), "--port", "0", "--token", "a", "--allow-weak-token"], {}
    )
    assert code == 1  # past the token check: the missing image is what fails
    assert "missing.jpg" in capsys.readouterr().err


def test_worker_needs_a_pin_or_ca_for_a_master_on_another_machine(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.worker_main(["--host", "192.0.2.10", "--token=0123456789abcdef"], {})
    assert info.value.code == 2
    assert "--tls-fingerprint" in capsys.readouterr().err
