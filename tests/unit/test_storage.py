"""Places behind fsspec URLs, on fsspec's in-process memory filesystem (no server)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from distgray.storage import places
from distgray.storage.remote import Remote, is_url, locate, options_of


def test_urls_and_paths_are_told_apart_and_file_urls_stay_local() -> None:
    assert is_url("s3://bucket/a.jpg") and is_url("memory://x") and is_url("gs://b/p/")
    assert not is_url("photos/a.jpg") and not is_url("file:///tmp/a.jpg") and not is_url("C:\\x.jpg")
    assert locate("file:///tmp/a.jpg") == Path("/tmp/a.jpg")
    assert locate("photos") == Path("photos")
    with pytest.raises(ValueError, match="not a URL fsspec knows"):
        locate("nosuchproto://x/y")


def test_storage_options_nest_by_dotted_keys_and_parse_as_json() -> None:
    got = options_of(["endpoint_url=http://127.0.0.1:8333", "anon=true", "config_kwargs.retries.max_attempts=2"])
    assert got == {
        "endpoint_url": "http://127.0.0.1:8333",
        "anon": True,
        "config_kwargs": {"retries": {"max_attempts": 2}},
    }
    with pytest.raises(ValueError, match="key=value"):
        options_of(["novalue"])


def test_a_remote_names_like_a_path_and_prints_as_its_url_only() -> None:
    root = locate("memory://distgray-test-names/in", {})
    assert isinstance(root, Remote)
    photo = root / "sub" / PurePosixPath("a.photo.jpg")
    assert str(photo) == "memory:///distgray-test-names/in/sub/a.photo.jpg"  # fsspec spells memory URLs so
    assert (photo.name, photo.stem, photo.suffix) == ("a.photo.jpg", "a.photo", ".jpg")
    assert photo.parent == root / "sub" and photo.relative_to(root) == PurePosixPath("sub/a.photo.jpg")
    assert photo.protocol == "memory"


def test_writes_are_whole_listings_see_new_objects_and_stamps_change_with_content() -> None:
    root = locate("memory://distgray-test-io", {})
    assert isinstance(root, Remote)
    a = root / "a.png"
    a.write_atomic(b"one")
    assert a.read_bytes() == b"one" and a.is_file() and places.size_of(a) == 3
    first = places.stamp(a)
    assert [e.name for e, _ in root.files(recursive=False)] == ["a.png"]
    (root / "b.png").write_atomic(memoryview(b"two!"))
    assert [e.name for e, _ in root.files(recursive=False)] == ["a.png", "b.png"]  # not a cached listing
    a.write_atomic(b"ONE, again")
    assert places.stamp(a) != first
    (root / "log.jsonl").append_lines(["x\n"])
    (root / "log.jsonl").append_lines(["y\n"])
    assert (root / "log.jsonl").read_bytes() == b"x\ny\n"
    with pytest.raises(FileNotFoundError):
        (root / "missing.png").read_bytes()
