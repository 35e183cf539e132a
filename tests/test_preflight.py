"""Startup refusals (preflight.py, through cli.py): the real `blocks-rt` in a subprocess stops with one line that
names the variable or flag and the fix, no traceback, and prints nothing else first (no banner, no token)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cli_kit import CLI, environment, run

from blocks_rt.testing.lab import LAB_SECRET
from blocks_rt.testing.nodes import free_port

REFUSALS = [  # (arguments, variables, what the one line says)
    (["--port", "99999"], {}, "blocks-rt serve: --port 99999: Input should be less than or equal to 65535"),
    (["--port", "http"], {}, "blocks-rt serve: --port http: Input should be a valid integer"),
    (["--host", "no-such-host.invalid"], {}, "blocks-rt serve: BLOCKS_RT_HOST / --host 'no-such-host.invalid': not an address"),
    ([], {"PORT": "99999"}, "blocks-rt serve: BLOCKS_RT_PORT='99999': Input should be less than or equal to 65535"),
    ([], {"FANOUT": "cluster"}, "blocks-rt serve: BLOCKS_RT_FANOUT='cluster': Input should be 'rooms' or 'broadcast'"),
    ([], {"LOG_FORMAT": "xml"}, "blocks-rt serve: BLOCKS_RT_LOG_FORMAT='xml': Input should be 'text' or 'json'"),
    ([], {"JWT_SECRET": "short"}, "blocks-rt serve: BLOCKS_RT_JWT_SECRET must be at least 32 bytes"),
    ([], {"JWT_SECRET": LAB_SECRET, "JWT_ALGORITHMS": "RS256"},
     "blocks-rt serve: no key for ['RS256']: set BLOCKS_RT_JWT_PUBLIC_KEY_FILE or BLOCKS_RT_JWT_JWKS_FILE"),
    ([], {"USERS_FILE": "/nonexistent/users.json"},
     "blocks-rt serve: BLOCKS_RT_USERS_FILE=/nonexistent/users.json: no such file"),
    ([], {"ADMIN": "true"}, "blocks-rt serve: BLOCKS_RT_ADMIN=true needs BLOCKS_RT_ADMIN_PASSWORD"),
    ([], {"JWT_ALGORITHMS": "RS256", "JWT_PUBLIC_KEY_FILE": "/nonexistent/key.pem"},
     "blocks-rt serve: BLOCKS_RT_JWT_PUBLIC_KEY_FILE=/nonexistent/key.pem: No such file or directory"),
    ([], {"JWT_ALGORITHMS": "RS256", "JWT_JWKS_FILE": "/nonexistent/jwks.json"},
     "blocks-rt serve: BLOCKS_RT_JWT_JWKS_FILE=/nonexistent/jwks.json: No such file or directory"),
    ([], {"USERS_FILE": str(Path(__file__).resolve().parent / "samples.py")},
     "blocks-rt serve: BLOCKS_RT_USERS_FILE="),
    ([], {"USERS_FILE": str(Path(__file__).resolve().parent.parent / "blocks_rt" / "reference" / "data" / "wallets.json")},
     "blocks-rt serve: BLOCKS_RT_USERS_FILE="),
]


def one_line_refusal(done: subprocess.CompletedProcess[str], expected: str) -> None:
    assert done.returncode == 2, done
    assert done.stdout == "" and "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(expected), line


@pytest.mark.parametrize(("args", "variables", "expected"), REFUSALS)
def test_a_refused_start_is_one_line_naming_what_to_fix(tmp_path: Path, args: list[str], variables: dict[str, str],
                                                        expected: str) -> None:
    one_line_refusal(run("serve", *args, cwd=tmp_path, **variables), expected)


def test_unreachable_redis_and_postgresql_are_refused_after_a_few_attempts_without_their_password(
        tmp_path: Path) -> None:
    redis = f"redis://:hunter2-redis@127.0.0.1:{free_port()}/0"
    done = run("serve", cwd=tmp_path, REDIS_URL=redis)
    one_line_refusal(done, f"blocks-rt serve: BLOCKS_RT_REDIS_URL=redis://:***@127.0.0.1:{redis.rsplit(':', 1)[1]}"
                           ": Redis does not answer (")
    assert done.stderr.rstrip().endswith("start it, or fix the variable (3 attempts)")
    dsn = f"postgresql://blocks:hunter2-pg@127.0.0.1:{free_port()}/blocks"
    done = run("serve", cwd=tmp_path, OUTBOX_DSN=dsn)
    one_line_refusal(done, "blocks-rt serve: BLOCKS_RT_OUTBOX_DSN=postgresql://blocks:***@127.0.0.1:")
    assert "hunter2" not in done.stderr
    done = run("outbox", "init", "--dsn", dsn, cwd=tmp_path)
    one_line_refusal(done, "blocks-rt outbox: BLOCKS_RT_OUTBOX_DSN=postgresql://blocks:***@127.0.0.1:")


def test_a_port_in_use_is_refused_before_anything_is_printed_or_made(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run("serve", "--port", str(port), cwd=tmp_path)
    one_line_refusal(done, f"blocks-rt serve: port {port} on 127.0.0.1 is in use: stop what listens there, or "
                           "choose another port with BLOCKS_RT_PORT / --port")
    assert not (tmp_path / ".blocks-rt-dev.env").exists()


def test_a_missing_package_is_named_with_how_to_get_it(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import importlib.abc, sys

        class NoRedis(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "redis":
                    raise ModuleNotFoundError("No module named 'redis'", name="redis")

        sys.meta_path.insert(0, NoRedis())
        from blocks_rt.cli import main
        main(["serve"])
    """)
    env = environment(REDIS_URL="redis://127.0.0.1:6379")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env,
                          cwd=tmp_path, check=False)
    one_line_refusal(done, "blocks-rt serve: BLOCKS_RT_REDIS_URL is set but redis is missing: pip install blocks-rt")


def test_an_unknown_variable_is_warned_about_with_the_closest_name(tmp_path: Path) -> None:
    done = run("token", "usr_ben", cwd=tmp_path, JWT_SECRET=LAB_SECRET, PROT="3001", NOTHING_LIKE_IT="1")
    assert done.returncode == 0
    assert done.stderr.splitlines() == [
        "WARNING: BLOCKS_RT_NOTHING_LIKE_IT is not a blocks-rt setting and is ignored: see the configuration "
        "table in the README",
        "WARNING: BLOCKS_RT_PROT is not a blocks-rt setting and is ignored: did you mean BLOCKS_RT_PORT?"]


def test_no_arguments_prints_the_help_and_every_help_describes_its_command_and_environment(tmp_path: Path) -> None:
    bare = subprocess.run([CLI], capture_output=True, text=True, timeout=30, check=False, cwd=tmp_path,
                          env=environment())
    assert bare.returncode == 0 and bare.stdout.startswith("usage: blocks-rt")
    for command in ("serve", "token", "demo", "outbox"):
        assert f"    {command} " in bare.stdout
        helped = run(command, "--help", cwd=tmp_path)
        assert helped.returncode == 0
        description = helped.stdout.split("\n\n")[1]
        assert len(description) > 60, helped.stdout  # a sentence about the command, not its usage again
        assert "environment:\n  Every setting is a BLOCKS_RT_* variable" in helped.stdout
    assert "BLOCKS_RT_LOG_FORMAT (text|json)" in run("serve", "--help", cwd=tmp_path).stdout
    assert "BLOCKS_RT_USERS_FILE" in run("token", "--help", cwd=tmp_path).stdout
